"""`config.model` -> a pose network: the checks that name the bad key, and the one factory.

`build_model(config.model, num_joints, config.data.input_size)` checks the config and returns a
Linen module with `__call__(images, *, train) -> PoseOutputs`.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from okdhp_jax.models.fau import FAU_KINDS
from okdhp_jax.models.mobilepose import BACKBONES, ENCODER_STRIDE, MobilePose
from okdhp_jax.models.multi_branch import MultiBranchHourglass

MODEL_NAMES = ('hourglass', 'mobilepose')
# float64 is for numerical checks on the CPU (it needs jax_enable_x64), not for training.
DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16, 'float16': jnp.float16,
          'float64': jnp.float64}
HOURGLASS_STEM_STRIDE = 4


# 'auto' compute dtype: bfloat16 where the chip has bfloat16 matrix units, float32 elsewhere
# (a CPU computes bfloat16 convolutions slower than float32 ones).
AUTO = 'auto'
BFLOAT16_BACKENDS = ('gpu', 'cuda', 'rocm', 'tpu')


def resolve_compute_dtype(name: str, backend: str | None = None) -> str:
  """config.model.dtype as a dtype name: 'auto' -> 'bfloat16' on GPU/TPU, 'float32' on CPU."""
  if name != AUTO:
    return name
  backend = backend or jax.default_backend()
  return 'bfloat16' if backend in BFLOAT16_BACKENDS else 'float32'


def _dtype(model_config: Any, key: str):
  value = model_config[key]
  if isinstance(value, str):
    if key == 'dtype':
      value = resolve_compute_dtype(value)
    if value not in DTYPES:
      choices = tuple(DTYPES) + ((AUTO,) if key == 'dtype' else ())
      raise ValueError(f'config.model.{key} must be one of {choices}, got {value!r}')
    if value == 'float64' and not jax.config.jax_enable_x64:
      raise ValueError(f'config.model.{key}=float64 needs 64-bit JAX: set JAX_ENABLE_X64=1 '
                       '(without it jax silently computes in float32)')
    return DTYPES[value]
  return jnp.dtype(value).type


def input_divisor(model_config: Any) -> int:
  """What input height and width must be divisible by (64 for a depth-4 hourglass)."""
  if model_config['name'] == 'mobilepose':
    return ENCODER_STRIDE
  return HOURGLASS_STEM_STRIDE * 2 ** int(model_config['depth'])


def validate_model_config(model_config: Any, num_joints: int,
                          input_size: tuple[int, int] | None = None) -> None:
  """Raises ValueError naming the config key of the first invalid field."""
  name = model_config['name']
  if name not in MODEL_NAMES:
    raise ValueError(f'config.model.name must be one of {MODEL_NAMES}, got {name!r}')
  if int(num_joints) < 1:
    raise ValueError(f'num_joints must be >= 1 (from config.data.dataset), got {num_joints}')
  branch_stacks = tuple(model_config['branch_stacks'])
  if not branch_stacks:
    raise ValueError('config.model.branch_stacks must be non-empty: one entry (private stack '
                     'count) per branch, e.g. (2, 2, 2), or (N,) for a plain network')
  fau = model_config['fau']
  if fau not in FAU_KINDS:
    raise ValueError(f'config.model.fau must be one of {FAU_KINDS}, got {fau!r}')
  if fau != 'none' and int(model_config['fau_hidden']) < 1:
    raise ValueError(f'config.model.fau_hidden must be >= 1, got {model_config["fau_hidden"]}')
  _dtype(model_config, 'dtype')
  _dtype(model_config, 'param_dtype')
  if name == 'hourglass':
    num_shared = int(model_config['num_shared_stacks'])
    if num_shared < 0:
      raise ValueError(f'config.model.num_shared_stacks must be >= 0, got {num_shared}')
    if any(int(n) < 1 for n in branch_stacks):
      raise ValueError(
          f'config.model.branch_stacks entries must be >= 1 (every branch needs a private '
          f'stack; share stacks with config.model.num_shared_stacks), got {branch_stacks}')
    features = int(model_config['features'])
    if features < 4 or features % 4:
      raise ValueError(f'config.model.features must be a positive multiple of 4, got {features}')
    if int(model_config['depth']) < 1:
      raise ValueError(f'config.model.depth must be >= 1, got {model_config["depth"]}')
  else:
    num_shared = int(model_config['num_shared_stacks'])
    if num_shared:
      raise ValueError(f'config.model.num_shared_stacks={num_shared}, but MobilePose has no '
                       'stacks to share (its whole encoder is shared); set it to 0')
    if model_config['backbone'] not in BACKBONES:
      raise ValueError(f'config.model.backbone must be one of {BACKBONES}, '
                       f'got {model_config["backbone"]!r}')
  if input_size is not None:
    divisor = input_divisor(model_config)
    size = tuple(int(s) for s in input_size)
    if len(size) != 2 or any(s < divisor or s % divisor for s in size):
      reason = (f'the stem (stride {HOURGLASS_STEM_STRIDE}) and {model_config["depth"]} '
                'hourglass halvings' if name == 'hourglass' else 'the encoder stride')
      raise ValueError(f'config.data.input_size {size} must be divisible by {divisor} in both '
                       f'height and width ({reason}), e.g. (256, 256)')


def build_model(model_config: ml_collections.ConfigDict, num_joints: int,
                input_size: tuple[int, int] | None = None) -> nn.Module:
  """The network described by `config.model` (see configs/default.py).

  Hourglass: `MultiBranchHourglass` (one branch and no shared stacks = plain baseline).
  MobilePose: one decoder per entry of `config.model.branch_stacks` (their values are unused),
  sharing the encoder. Both return `PoseOutputs` from `__call__(images, *, train)`.
  """
  validate_model_config(model_config, num_joints, input_size)
  dtypes = dict(dtype=_dtype(model_config, 'dtype'),
                param_dtype=_dtype(model_config, 'param_dtype'))
  branch_stacks = tuple(int(n) for n in model_config['branch_stacks'])
  if model_config['name'] == 'mobilepose':
    return MobilePose(num_joints=int(num_joints), backbone=model_config['backbone'],
                      num_branches=len(branch_stacks), fau=model_config['fau'],
                      fau_hidden=int(model_config['fau_hidden']), **dtypes)
  return MultiBranchHourglass(
      num_joints=int(num_joints), num_shared_stacks=int(model_config['num_shared_stacks']),
      branch_stacks=branch_stacks, features=int(model_config['features']),
      depth=int(model_config['depth']), fau=model_config['fau'],
      fau_hidden=int(model_config['fau_hidden']), **dtypes)
