"""Feature Aggregation Unit (FAU): per-branch, per-joint weights that build the teacher.

Both variants read a shared feature map [batch, h, w, c] (the hourglass stem output, or the
MobilePose encoder output), summarise it into one vector, and give logits
[batch, branches, joints]; a softmax over branches turns them into ensemble weights.

- `released`: the released code. One conv kxk + BN + ReLU path per branch (k = 3, 5, 7, ...),
  summed; global average pool; Linear F -> hidden (no activation); one Linear hidden -> J per
  branch. 5.46M parameters and 22.3 GMACs at F = 256 on a 64x64 map with 3 branches.
- `paper`: the paper's figure (SKNet-like). Fixed 3x3, 5x5 and 7x7 paths (conv + BN + ReLU,
  then a 1x1 conv) plus a 3x3 average-pool path (then a 1x1 conv), summed; global average pool;
  FC F -> hidden + ReLU (the SKNet squeeze; the paper does not name the activation); one FC
  hidden -> J per branch. Its number of paths does not depend on the number of branches.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from okdhp_jax.models.hourglass import batch_norm, conv
from okdhp_jax.precision import at_least_float32

FAU_KINDS = ('released', 'paper', 'none')
PAPER_KERNELS = (3, 5, 7)


class _BranchLogits(nn.Module):
  """Pooled vector [batch, F] -> softmax weights [batch, branches, joints] (float32)."""

  num_branches: int
  num_joints: int
  hidden: int
  hidden_relu: bool
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, pooled: jax.Array) -> jax.Array:
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    z = nn.Dense(self.hidden, name='fc', **kw)(pooled)
    if self.hidden_relu:
      z = nn.relu(z)
    logits = jnp.stack([nn.Dense(self.num_joints, name=f'branch_fc_{b}', **kw)(z)
                        for b in range(self.num_branches)], axis=1)
    return jax.nn.softmax(at_least_float32(logits), axis=1)


class _FAUFields(nn.Module):
  """What both FAU variants are configured with (`make_fau` fills it from config.model)."""

  num_branches: int
  num_joints: int
  features: int = 256
  hidden: int = 64
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32


class ReleasedFAU(_FAUFields):
  """The released code's FAU. [b, h, w, c] -> weights [b, branches, joints]."""

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    fused = 0.
    for b in range(self.num_branches):
      kernel = 3 + 2 * b
      y = conv(self.features, kernel, into_batch_norm=train, name=f'conv_{b}', **kw)(x)
      fused = fused + nn.relu(batch_norm(train, name=f'bn_{b}', **kw)(y))
    pooled = jnp.mean(fused, axis=(1, 2))
    return _BranchLogits(self.num_branches, self.num_joints, self.hidden, hidden_relu=False,
                         name='head', **kw)(pooled)


class PaperFAU(_FAUFields):
  """The paper's FAU. [b, h, w, c] -> weights [b, branches, joints]."""

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    fused = 0.
    for kernel in PAPER_KERNELS:
      y = conv(self.features, kernel, into_batch_norm=train, name=f'conv{kernel}', **kw)(x)
      y = nn.relu(batch_norm(train, name=f'bn{kernel}', **kw)(y))
      fused = fused + conv(self.features, 1, name=f'proj{kernel}', **kw)(y)
    pooled_path = nn.avg_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)))
    fused = fused + conv(self.features, 1, name='proj_pool', **kw)(pooled_path)
    pooled = jnp.mean(fused, axis=(1, 2))
    return _BranchLogits(self.num_branches, self.num_joints, self.hidden, hidden_relu=True,
                         name='head', **kw)(pooled)


def make_fau(kind: str, *, num_branches: int, num_joints: int, features: int, hidden: int,
             dtype: Any, param_dtype: Any, name: str = 'fau') -> nn.Module | None:
  """The FAU named by `config.model.fau`, or None for 'none'."""
  kw = dict(num_branches=num_branches, num_joints=num_joints, features=features,
            hidden=hidden, dtype=dtype, param_dtype=param_dtype, name=name)
  if kind == 'released':
    return ReleasedFAU(**kw)
  if kind == 'paper':
    return PaperFAU(**kw)
  if kind == 'none':
    return None
  raise ValueError(f'config.model.fau must be one of {FAU_KINDS}, got {kind!r}')


def ensemble_heatmaps(branch_heatmaps: tuple[jax.Array, ...],
                      weights: jax.Array | None) -> jax.Array:
  """Teacher heatmaps: sum_b weights[:, b, j] * branch_heatmaps[b][..., j].

  Args:
    branch_heatmaps: per branch, its LAST stack's heatmaps [batch, h, w, joints].
    weights: [batch, branches, joints] summing to 1 over branches, or None for a uniform mean
      (a single branch then passes through unchanged).

  Returns:
    [batch, h, w, joints], float32 (float64 for a float64 network).
  """
  stacked = jnp.stack([at_least_float32(h) for h in branch_heatmaps], axis=1)
  if weights is None:
    return jnp.mean(stacked, axis=1)
  return jnp.einsum('bnhwj,bnj->bhwj', stacked, at_least_float32(weights))
