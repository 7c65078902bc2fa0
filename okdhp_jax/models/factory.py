"""`config.model` -> a pose network, through the spec `config.model.name` registers.

`build_model(config.model, num_joints, config.data.input_size)` checks the config and returns a
Linen module with `__call__(images, *, train) -> PoseOutputs`. The functions here check what
every network shares (fau, dtypes, the network's section, the input size) and hand the rest to
the spec (okdhp_jax/models/registry.py); none of them knows a network by name.
"""

from __future__ import annotations

from typing import Any, Mapping

import flax.linen as nn

from okdhp_jax.models.fau import FAU_KINDS
from okdhp_jax.models.registry import dtype_of, get_spec, resolve_compute_dtype

__all__ = ['build_model', 'deployed_model_config', 'export_student', 'input_divisor',
           'num_branches', 'resolve_compute_dtype', 'validate_model_config']


def input_divisor(model_config: Mapping[str, Any]) -> int:
  """What input height and width must be divisible by (64 for a depth-4 hourglass)."""
  return int(get_spec(model_config['name']).input_divisor(model_config))


def num_branches(model_config: Mapping[str, Any]) -> int:
  """How many student branches `config.model` describes (1 for a plain network)."""
  return int(get_spec(model_config['name']).num_branches(model_config))


def _check_shared_fields(model_config: Mapping[str, Any], num_joints: int) -> None:
  name = model_config['name']
  if int(num_joints) < 1:
    raise ValueError(f'num_joints must be >= 1 (from config.data.dataset), got {num_joints}')
  if name not in model_config:
    raise ValueError(f'config.model has no {name!r} section: config.model.name={name!r} reads '
                     f"its fields from config.model.{name}; add it with configs/default.py's "
                     f'set_network(config, {name!r})')
  fau = model_config['fau']
  if fau not in FAU_KINDS:
    raise ValueError(f'config.model.fau must be one of {FAU_KINDS}, got {fau!r}')
  if fau != 'none' and int(model_config['fau_hidden']) < 1:
    raise ValueError(f'config.model.fau_hidden must be >= 1, got {model_config["fau_hidden"]}')
  dtype_of(model_config, 'dtype')
  dtype_of(model_config, 'param_dtype')


def _check_input_size(model_config: Mapping[str, Any], input_size: tuple[int, int]) -> None:
  divisor = input_divisor(model_config)
  size = tuple(int(s) for s in input_size)
  if len(size) != 2 or any(s < divisor or s % divisor for s in size):
    reason = get_spec(model_config['name']).divisor_reason(model_config)
    raise ValueError(f'config.data.input_size {size} must be divisible by {divisor} in both '
                     f'height and width ({reason}), e.g. (256, 256)')


def validate_model_config(model_config: Mapping[str, Any], num_joints: int,
                          input_size: tuple[int, int] | None = None) -> None:
  """Raises ValueError naming the config key of the first invalid field."""
  spec = get_spec(model_config['name'])
  _check_shared_fields(model_config, num_joints)
  spec.check(model_config, int(num_joints), input_size)
  if input_size is not None:
    _check_input_size(model_config, input_size)


def build_model(model_config: Mapping[str, Any], num_joints: int,
                input_size: tuple[int, int] | None = None) -> nn.Module:
  """The network described by `config.model` (see configs/default.py), checked first.

  `model_config` is a ConfigDict or a plain dict (an export's model.json 'model').
  """
  validate_model_config(model_config, num_joints, input_size)
  return get_spec(model_config['name']).build(model_config, int(num_joints))


def _branch_index(model_config: Mapping[str, Any], branch: int) -> int:
  """`branch` in [0, branches); negative counts from the end."""
  count = num_branches(model_config)
  if not -count <= int(branch) < count:
    raise ValueError(f'branch {branch} is out of range: config.model.{model_config["name"]} '
                     f'has {count} branches')
  return int(branch) % count


def export_student(variables: Mapping[str, Any], branch: int,
                   model_config: Mapping[str, Any]) -> dict[str, Any]:
  """{'params', 'batch_stats'} of `deployed_model_config(model_config, branch)`'s network.

  A re-keying of `variables` (the training network's): the arrays are the input's, so the
  deployed network's outputs equal that branch's exactly. Negative `branch` counts from the end.
  """
  spec = get_spec(model_config['name'])
  return spec.export_branch(variables, _branch_index(model_config, branch), model_config)


def deployed_model_config(model_config: Mapping[str, Any], branch: int = 0) -> dict[str, Any]:
  """`config.model` (a dict) of what deploys from the training network: one branch, no FAU."""
  spec = get_spec(model_config['name'])
  return spec.deployed_config(model_config, _branch_index(model_config, branch))
