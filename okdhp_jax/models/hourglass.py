"""Stacked hourglass network with the released OKDHP code's layer layout (pytorch-pose lineage).

The layers of a stack; the network that stacks them is `MultiBranchHourglass`
(models/multi_branch.py, a plain N-stack hourglass with one branch). Submodule names mirror the
PyTorch state_dict keys (`conv1`, `bn1`, `layer1`, `hg_{level}_{j}`, `res`, `fc`, `score`,
`fc_`, `score_`) so that importing PyTorch weights and exporting one branch of a multi-branch
network are both pure re-keyings of the variable tree.

Channel plan for `features = F` (F = 256 in the paper): stem conv F/4, Bottleneck F/4 -> F/2,
maxpool, Bottleneck F/2 -> F, Bottleneck F -> F; every hourglass Bottleneck is F -> F with a
bottleneck width of F/2. A 256x256 input gives 64x64 heatmaps.
"""

from __future__ import annotations

import functools
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.ad_checkpoint import checkpoint_name

from okdhp_jax.models.batch_norm import STATISTICS_NAME, BatchNorm
from okdhp_jax.models.pooling import max_pool2


# PyTorch's default conv/linear init (kaiming_uniform, a = sqrt(5)): U(-1/sqrt(fan_in), ..).
# The released code keeps it; a uniform draw is also much cheaper to compile than the
# truncated normal of Flax's default.
torch_default_init = nn.initializers.variance_scaling(1 / 3, 'fan_in', 'uniform')


def conv(features: int, kernel: int, *, stride: int = 1, use_bias: bool = True,
         groups: int = 1, into_batch_norm: bool = False, matmul: bool = False, dtype: Any,
         param_dtype: Any, name: str | None = None) -> nn.Module:
  """A PyTorch-style conv: symmetric padding (kernel - 1) / 2, so odd kernels keep the size.

  `into_batch_norm`: the output goes straight into a training-mode BatchNorm, which subtracts
  the batch mean and so any per-channel constant: the bias's gradient is exactly zero, and is
  not computed (see `_BiasUntrainedConv`). `matmul`: a 1x1, stride-1, ungrouped conv is
  computed as a matrix product over channels (`_PointwiseMatmul`). Same variables either way.
  """
  pad = (kernel - 1) // 2
  module = _BiasUntrainedConv if into_batch_norm and use_bias else nn.Conv
  pointwise = kernel == 1 and stride == 1 and groups == 1
  extra = {'conv_general_dilated_cls': _PointwiseMatmul} if matmul and pointwise else {}
  return module(features, (kernel, kernel), strides=(stride, stride),
                padding=((pad, pad), (pad, pad)), use_bias=use_bias,
                feature_group_count=groups, kernel_init=torch_default_init, dtype=dtype,
                param_dtype=param_dtype, promote_dtype=_promote_naming_weights, name=name,
                **extra)


# The name a conv's weights carry once cast to the compute dtype, so that `REMAT_POLICY` keeps
# them for the backward pass: recomputed there, every conv's cast (and, with a flat train state,
# the slice that cuts the weight out of its vector) became a kernel of its own, about 500 of
# OKDHP-HG4's. Kept, they cost the weights' size in bfloat16 (62 MB for OKDHP-HG4).
WEIGHTS_NAME = 'conv_weights_in_compute_dtype'


def _promote_naming_weights(inputs, kernel, bias=None, *, dtype=None):
  """Flax's dtype promotion of a conv's operands, naming the cast kernel and bias."""
  inputs, kernel, bias = nn.dtypes.promote_dtype(inputs, kernel, bias, dtype=dtype)
  if bias is not None:
    bias = checkpoint_name(bias, WEIGHTS_NAME)
  return inputs, checkpoint_name(kernel, WEIGHTS_NAME), bias


class _PointwiseMatmul:
  """`lax.conv_general_dilated` of a 1x1, stride-1 kernel as `dot_general` over channels.

  Why: on a GPU, XLA hands every convolution to cuDNN, one host launch each, which no CUDA
  graph holds; a matrix product becomes a GEMM kernel inside the command buffers around it.
  Two thirds of an hourglass's convolutions are 1x1: OKDHP-HG4's step on the H100 description
  (`python -m okdhp_jax.tools.gpu_program`) goes from 590 cuDNN calls and 1,542 host launches
  to 188 and 335. Same sums, in another order. Flax's `nn.Conv` instantiates this class and
  calls it as it would `lax.conv_general_dilated` (NHWC inputs, HWIO kernel).
  """

  def __call__(self, inputs: jax.Array, kernel: jax.Array, window_strides, padding, *,
               dimension_numbers, feature_group_count: int = 1, precision=None,
               **dilations) -> jax.Array:
    del padding, dilations  # (0, 0) and 1 for a 1x1 kernel, which `conv` guarantees
    if (kernel.shape[:2] != (1, 1) or tuple(window_strides) != (1, 1)
        or feature_group_count != 1 or dimension_numbers.lhs_spec != (0, 3, 1, 2)):
      raise ValueError(f'a matrix-product conv takes 1x1, stride-1, ungrouped NHWC kernels; got '
                       f'kernel {kernel.shape}, strides {window_strides}, groups '
                       f'{feature_group_count}')
    # [n, h, w, c_in] . [c_in, c_out] -> [n, h, w, c_out]
    return jax.lax.dot_general(inputs, kernel[0, 0], (((3,), (0,)), ((), ())),
                               precision=precision)


def _without_bias_gradient(variables):
  variables = flax.core.unfreeze(variables)
  params = variables.get('params', {})
  if 'bias' in params:
    params['bias'] = jax.lax.stop_gradient(params['bias'])
  return variables


# A conv whose bias gets no gradient. Autodiff would reduce the cotangent over every row and
# pixel to get the exact zero (rounding noise in float): one reduction per conv, a fifth of a
# multi-branch hourglass's reductions on a GPU (`python -m okdhp_jax.tools.gpu_program`).
# The released code keeps these biases and Adam moves them on that noise; a constant per
# channel before a batch-statistics BatchNorm changes no output in training, and evaluation
# subtracts a running mean that holds it, so the trained network computes the same.
# (mutable=True: Flax's map_variables hands a view it cannot write to the wrapped module, which
# then cannot create its parameters at init.)
_BiasUntrainedConv = nn.map_variables(nn.Conv, 'params', trans_in_fn=_without_bias_gradient,
                                      mutable=True)


def batch_norm(train: bool, *, dtype: Any, param_dtype: Any, name: str | None = None):
  """PyTorch's BatchNorm2d defaults (momentum 0.1, eps 1e-5, unbiased running variance)."""
  return BatchNorm(use_running_average=not train, dtype=dtype, param_dtype=param_dtype,
                   name=name)


def upsample_nearest2(x: jax.Array) -> jax.Array:
  """[b, h, w, c] -> [b, 2h, 2w, c], nearest neighbour (F.interpolate(scale_factor=2))."""
  return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)


class Bottleneck(nn.Module):
  """Pre-activation bottleneck: BN-ReLU-1x1(c/2), BN-ReLU-3x3(c/2), BN-ReLU-1x1(c), + identity.

  The identity becomes a 1x1 conv (`downsample`) when the input has other than `features`
  channels. [b, h, w, c_in] -> [b, h, w, features].
  """

  features: int
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  matmul_1x1: bool = False  # 1x1 convs as matrix products (`conv`'s `matmul`)

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:  # positional: `RematBottleneck`
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    ckw = dict(kw, matmul=self.matmul_1x1)
    width = self.features // 2
    # conv1 and conv2 feed BatchNorms: in training their biases get no gradient (`conv`).
    y = conv(width, 1, into_batch_norm=train, name='conv1', **ckw)(
        nn.relu(batch_norm(train, name='bn1', **kw)(x)))
    y = conv(width, 3, into_batch_norm=train, name='conv2', **kw)(
        nn.relu(batch_norm(train, name='bn2', **kw)(y)))
    y = conv(self.features, 1, name='conv3', **ckw)(
        nn.relu(batch_norm(train, name='bn3', **kw)(y)))
    residual = x
    if x.shape[-1] != self.features:
      residual = conv(self.features, 1, name='downsample', **ckw)(x)
    return y + residual


# What a bottleneck keeps for its backward pass under `remat`: its convolutions' outputs, its
# BatchNorms' statistics and its weights in the compute dtype. Its convolutions' inputs
# (normalised, rectified: as many values as the outputs) are recomputed from them, one
# elementwise pass each, rather than kept from the forward pass: OKDHP-HG4's step at batch 64
# on the H100 description needs 11.0 GiB of temporaries instead of 18.5, and runs 254 more
# kernels (`gpu_program`).
REMAT_POLICY = jax.checkpoint_policies.save_from_both_policies(
    jax.checkpoint_policies.dots_saveable,
    jax.checkpoint_policies.save_only_these_names(STATISTICS_NAME, WEIGHTS_NAME))
# Same variables as `Bottleneck`. `train` (argument 2, after the module and the input) is static.
RematBottleneck = nn.remat(Bottleneck, policy=REMAT_POLICY, static_argnums=(2,))


def bottleneck(remat: bool) -> type[nn.Module]:
  """The bottleneck class: `RematBottleneck` when `remat`, else `Bottleneck`."""
  return RematBottleneck if remat else Bottleneck


class Stem(nn.Module):
  """conv7x7/2 + BN + ReLU, Bottleneck, maxpool 2, Bottleneck, Bottleneck: stride 4 overall."""

  features: int = 256
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  matmul_1x1: bool = False
  remat: bool = False  # bottlenecks as `RematBottleneck`

  @nn.compact
  def __call__(self, images: jax.Array, *, train: bool) -> jax.Array:
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    block = functools.partial(bottleneck(self.remat), matmul_1x1=self.matmul_1x1, **kw)
    x = conv(self.features // 4, 7, stride=2, into_batch_norm=train, name='conv1', **kw)(
        images.astype(self.dtype))
    x = nn.relu(batch_norm(train, name='bn1', **kw)(x))
    x = block(self.features // 2, name='layer1')(x, train)
    x = max_pool2(x)
    x = block(self.features, name='layer2')(x, train)
    return block(self.features, name='layer3')(x, train)


class Hourglass(nn.Module):
  """Recursive hourglass, one Bottleneck per position (13 for depth 4).

  `hg_{level}_{j}`: level 0 is the innermost; j = 0 up1, 1 low1, 2 low3, 3 innermost extra
  residual (level 0 only), as in the PyTorch `hg.{level}.{j}` keys.
  """

  features: int = 256
  depth: int = 4
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  matmul_1x1: bool = False
  remat: bool = False

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    def res(level: int, j: int, y: jax.Array) -> jax.Array:
      return bottleneck(self.remat)(self.features, dtype=self.dtype,
                                    param_dtype=self.param_dtype, matmul_1x1=self.matmul_1x1,
                                    name=f'hg_{level}_{j}')(y, train)

    def forward(level: int, y: jax.Array) -> jax.Array:
      up1 = res(level, 0, y)
      low1 = res(level, 1, max_pool2(y))
      low2 = forward(level - 1, low1) if level > 0 else res(level, 3, low1)
      low3 = res(level, 2, low2)
      return up1 + upsample_nearest2(low3)

    return forward(self.depth - 1, x)


class HourglassStack(nn.Module):
  """One stack: hourglass, residual, 1x1 conv + BN + ReLU, 1x1 score conv.

  Returns (next stack's input or None when `has_next` is False, heatmaps [b, h, w, joints]).
  """

  num_joints: int
  has_next: bool
  features: int = 256
  depth: int = 4
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  matmul_1x1: bool = False
  remat: bool = False

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> tuple[jax.Array | None, jax.Array]:
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    bkw = dict(kw, matmul_1x1=self.matmul_1x1)
    ckw = dict(kw, matmul=self.matmul_1x1)
    y = Hourglass(self.features, self.depth, remat=self.remat, name='hg', **bkw)(x, train=train)
    y = bottleneck(self.remat)(self.features, name='res', **bkw)(y, train)
    y = conv(self.features, 1, into_batch_norm=train, name='fc', **ckw)(y)
    y = nn.relu(batch_norm(train, name='fc_bn', **kw)(y))
    score = conv(self.num_joints, 1, name='score', **ckw)(y)
    if not self.has_next:
      return None, score
    x = x + conv(self.features, 1, name='fc_', **ckw)(y) + conv(
        self.features, 1, name='score_', **ckw)(score)
    return x, score
