"""MobilePose: a light encoder (stride 32) and a DUC decoder (output stride 4).

Encoders follow torchvision's ResNet18, MobileNetV2 (width 1.0) and ShuffleNetV2 (x1.0) up to
their last feature map (512, 1280 and 1024 channels). Decoder (MobilePose DUC): 1x1 conv to 256
without bias, three DUC blocks (3x3 conv without bias, BN, ReLU, pixel shuffle x2) 256 -> 512
-> 128, 128 -> 256 -> 64, 64 -> 128 -> 32, then a 1x1 conv to J joints.

The OKDHP version shares the encoder, gives every branch its own decoder and weights the
branches with the FAU, which reads the encoder output. `MobilePoseSpec` registers it as
`config.model.name='mobilepose'`, with its fields in `config.model.mobilepose`: backbone (a key
of `ENCODERS`) and num_branches.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from okdhp_jax.models.fau import ensemble_heatmaps, make_fau
from okdhp_jax.models.hourglass import batch_norm, conv
from okdhp_jax.models.outputs import PoseOutputs
from okdhp_jax.models.registry import (NetworkSpec, compute_dtypes, register, rename_variables,
                                       shared_fields)
from okdhp_jax.precision import at_least_float32

ENCODER_STRIDE = 32


def max_pool3s2(x: jax.Array) -> jax.Array:
  return nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))


def pixel_shuffle(x: jax.Array, factor: int = 2) -> jax.Array:
  """PyTorch PixelShuffle in NHWC: channel c*r*r + i*r + j -> pixel (h*r + i, w*r + j), c."""
  b, h, w, c = x.shape
  out = c // (factor * factor)
  x = x.reshape(b, h, w, out, factor, factor)
  x = x.transpose(0, 1, 4, 2, 5, 3)
  return x.reshape(b, h * factor, w * factor, out)


def channel_shuffle(x: jax.Array, groups: int = 2) -> jax.Array:
  """ShuffleNet channel shuffle, in PyTorch's channel order."""
  b, h, w, c = x.shape
  x = x.reshape(b, h, w, groups, c // groups).swapaxes(-1, -2)
  return x.reshape(b, h, w, c)


class _Module(nn.Module):
  """Base with the dtype switches shared by every encoder block."""

  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  def conv(self, features, kernel, stride=1, groups=1, use_bias=False, name=None):
    return conv(features, kernel, stride=stride, groups=groups, use_bias=use_bias,
                dtype=self.dtype, param_dtype=self.param_dtype, name=name)

  def bn(self, train, name=None):
    return batch_norm(train, dtype=self.dtype, param_dtype=self.param_dtype, name=name)


class BasicBlock(_Module):
  features: int = 64
  stride: int = 1

  @nn.compact
  def __call__(self, x, *, train):
    y = nn.relu(self.bn(train)(self.conv(self.features, 3, self.stride)(x)))
    y = self.bn(train)(self.conv(self.features, 3)(y))
    if self.stride != 1 or x.shape[-1] != self.features:
      x = self.bn(train)(self.conv(self.features, 1, self.stride)(x))
    return nn.relu(x + y)


class ResNet18(_Module):
  @nn.compact
  def __call__(self, x, *, train):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    x = max_pool3s2(nn.relu(self.bn(train)(self.conv(64, 7, 2)(x))))
    for stage, features in enumerate((64, 128, 256, 512)):
      for block in range(2):
        stride = 2 if stage > 0 and block == 0 else 1
        x = BasicBlock(features=features, stride=stride, **kw)(x, train=train)
    return x


class InvertedResidual(_Module):
  """MobileNetV2 block: expand 1x1, depthwise 3x3, linear project 1x1."""

  features: int = 16
  stride: int = 1
  expansion: int = 1

  @nn.compact
  def __call__(self, x, *, train):
    cin = x.shape[-1]
    hidden = cin * self.expansion
    y = x
    if self.expansion != 1:
      y = nn.relu6(self.bn(train)(self.conv(hidden, 1)(y)))
    y = nn.relu6(self.bn(train)(self.conv(hidden, 3, self.stride, groups=hidden)(y)))
    y = self.bn(train)(self.conv(self.features, 1)(y))
    if self.stride == 1 and cin == self.features:
      y = x + y
    return y


class MobileNetV2(_Module):
  # (expansion, channels, repeats, stride), torchvision's width 1.0.
  SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
              (6, 160, 3, 2), (6, 320, 1, 1))

  @nn.compact
  def __call__(self, x, *, train):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    x = nn.relu6(self.bn(train)(self.conv(32, 3, 2)(x)))
    for expansion, features, repeats, stride in self.SETTINGS:
      for i in range(repeats):
        block = InvertedResidual(
            features=features, stride=stride if i == 0 else 1, expansion=expansion, **kw)
        x = block(x, train=train)
    return nn.relu6(self.bn(train)(self.conv(1280, 1)(x)))


class ShuffleUnit(_Module):
  """ShuffleNetV2 unit; stride 2 doubles channels through two branches."""

  features: int = 116
  stride: int = 1

  @nn.compact
  def __call__(self, x, *, train):
    half = self.features // 2
    if self.stride == 1:
      keep, x2 = jnp.split(x, 2, axis=-1)
    else:
      keep = self.bn(train)(self.conv(x.shape[-1], 3, 2, groups=x.shape[-1])(x))
      keep = nn.relu(self.bn(train)(self.conv(half, 1)(keep)))
      x2 = x
    y = nn.relu(self.bn(train)(self.conv(half, 1)(x2)))
    y = self.bn(train)(self.conv(half, 3, self.stride, groups=half)(y))
    y = nn.relu(self.bn(train)(self.conv(half, 1)(y)))
    return channel_shuffle(jnp.concatenate([keep, y], axis=-1))


class ShuffleNetV2(_Module):
  STAGES = ((116, 4), (232, 8), (464, 4))  # x1.0

  @nn.compact
  def __call__(self, x, *, train):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    x = max_pool3s2(nn.relu(self.bn(train)(self.conv(24, 3, 2)(x))))
    for features, repeats in self.STAGES:
      for i in range(repeats):
        x = ShuffleUnit(features=features, stride=2 if i == 0 else 1, **kw)(x, train=train)
    return nn.relu(self.bn(train)(self.conv(1024, 1)(x)))


# config.model.mobilepose.backbone -> encoder; the one list of the backbones there are.
ENCODERS = {'resnet18': ResNet18, 'mobilenetv2': MobileNetV2, 'shufflenetv2': ShuffleNetV2}


class DUCDecoder(_Module):
  """[b, H/32, W/32, c] -> heatmaps [b, H/4, W/4, joints]."""

  num_joints: int = 16
  features: int = 256

  @nn.compact
  def __call__(self, x, *, train):
    f = self.features
    x = self.conv(f, 1, name='compress')(x)
    for i, width in enumerate((2 * f, f, f // 2)):  # 256->512->128, 128->256->64, 64->128->32
      x = self.conv(width, 3, name=f'duc{i}_conv')(x)
      x = pixel_shuffle(nn.relu(self.bn(train, name=f'duc{i}_bn')(x)))
    return self.conv(self.num_joints, 1, use_bias=True, name='score')(x)


class MobilePose(nn.Module):
  """`images [b, H, W, 3] -> PoseOutputs` with `shared=()` and one decoder per branch."""

  num_joints: int
  backbone: str = 'resnet18'
  num_branches: int = 1
  fau: str = 'none'
  fau_hidden: int = 64
  decoder_features: int = 256
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, images: jax.Array, *, train: bool) -> PoseOutputs:
    if self.backbone not in ENCODERS:
      raise ValueError(f'config.model.mobilepose.backbone must be one of {tuple(ENCODERS)}, '
                       f'got {self.backbone!r}')
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    features = ENCODERS[self.backbone](name='encoder', **kw)(images.astype(self.dtype),
                                                           train=train)
    branches = tuple(
        (at_least_float32(DUCDecoder(num_joints=self.num_joints,
                                     features=self.decoder_features, name=f'decoder_{b}',
                                     **kw)(features, train=train)),)
        for b in range(self.num_branches))
    fau = make_fau(self.fau, num_branches=self.num_branches, num_joints=self.num_joints,
                   features=self.decoder_features, hidden=self.fau_hidden, **kw)
    weights = None if fau is None else fau(features, train=train)
    return PoseOutputs(shared=(), branches=branches, fau_weights=weights,
                       ensemble=ensemble_heatmaps(tuple(h[-1] for h in branches), weights))


@register('mobilepose')
class MobilePoseSpec(NetworkSpec):
  """`MobilePose` from `config.model.mobilepose`; deploys as the encoder and one decoder."""

  def default_config(self) -> dict[str, Any]:
    return {'backbone': 'resnet18', 'num_branches': 3}

  def check(self, model_config, num_joints, input_size) -> None:
    del num_joints, input_size
    fields = self.fields(model_config)
    if fields['backbone'] not in ENCODERS:
      raise ValueError(f'config.model.mobilepose.backbone must be one of {tuple(ENCODERS)}, '
                       f'got {fields["backbone"]!r}')
    if int(fields['num_branches']) < 1:
      raise ValueError(f'config.model.mobilepose.num_branches must be >= 1, got '
                       f'{fields["num_branches"]}')

  def input_divisor(self, model_config) -> int:
    del model_config
    return ENCODER_STRIDE

  def divisor_reason(self, model_config) -> str:
    del model_config
    return f'the encoder stride, {ENCODER_STRIDE}'

  def num_branches(self, model_config) -> int:
    return int(self.fields(model_config)['num_branches'])

  def build(self, model_config, num_joints: int) -> MobilePose:
    fields = self.fields(model_config)
    return MobilePose(num_joints=num_joints, backbone=fields['backbone'],
                      num_branches=int(fields['num_branches']), fau=model_config['fau'],
                      fau_hidden=int(model_config['fau_hidden']), **compute_dtypes(model_config))

  def export_branch(self, variables, branch: int, model_config) -> dict[str, Any]:
    """'encoder' and 'decoder_0' (decoder `branch`); the FAU is dropped."""
    renames = {'encoder': 'encoder', 'decoder_0': f'decoder_{branch}'}
    hint = (f'does config.model.mobilepose ({dict(self.fields(model_config))}) describe the '
            'network these variables came from')
    return rename_variables(variables, renames, hint)

  def deployed_config(self, model_config, branch: int) -> dict[str, Any]:
    del branch  # every decoder has the same shape.
    fields = dict(self.fields(model_config), num_branches=1)
    return dict(shared_fields(model_config, fau='none'), mobilepose=fields)

  def describe(self, model_config) -> str:
    count = self.num_branches(model_config)
    name = f'MobilePose-{self.fields(model_config)["backbone"]}'
    return name if count == 1 else f'{name} x{count}'
