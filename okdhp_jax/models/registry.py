"""The network registry: `config.model.name` -> the `NetworkSpec` that builds and deploys it.

`config.model` holds what every network reads (`name`, `fau`, `fau_hidden`, `dtype`,
`param_dtype`) and one section per network with its own fields (`config.model.hourglass`,
`config.model.mobilepose`). A network is one spec, registered under its name, which is also
the name of its section:

  @register('my_net')
  class MyNet(NetworkSpec):
    def default_config(self):             # config.model.my_net at its defaults
      return {'width': 32, 'num_branches': 3}
    def check(self, model_config, num_joints, input_size): ...  # ValueError naming the key
    def num_branches(self, model_config): return self.fields(model_config)['num_branches']
    def build(self, model_config, num_joints): ...      # a Linen module returning PoseOutputs
    def export_branch(self, variables, branch, model_config): ...  # re-keyed variables
    def deployed_config(self, model_config, branch): ...  # config.model of the one branch

The module that defines it must be imported before `build_model` sees the name (the built-in
networks are imported by okdhp_jax/models/__init__.py; a test or script may register its own).
`configs/default.py:set_network(config, name)` selects a network and gives config.model its
section at `default_config()`.
"""

from __future__ import annotations

from typing import Any, ClassVar, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp

from okdhp_jax.registry import Registry

# The fields of config.model every network reads; the rest are per-network sections.
SHARED_FIELDS = ('name', 'fau', 'fau_hidden', 'dtype', 'param_dtype')
COLLECTIONS = ('params', 'batch_stats')
# float64 is for numerical checks on the CPU (it needs jax_enable_x64), not for training.
DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16, 'float16': jnp.float16,
          'float64': jnp.float64}
# 'auto' compute dtype: bfloat16 where the chip has bfloat16 matrix units, float32 elsewhere
# (a CPU computes bfloat16 convolutions slower than float32 ones).
AUTO = 'auto'
BFLOAT16_BACKENDS = ('gpu', 'cuda', 'rocm', 'tpu')


class NetworkSpec:
  """What `build_model` and export need to know of one network; subclasses override.

  Every method takes the whole `config.model` (a ConfigDict or the dict an export's model.json
  holds); `fields(model_config)` is the network's own section. `branch` arguments are 0-based
  and in range (the module-level functions in factory.py check and normalise them).
  """

  name: ClassVar[str] = ''

  def default_config(self) -> dict[str, Any]:
    """`config.model.<name>` at its defaults, as a dict."""
    return {}

  def fields(self, model_config: Mapping[str, Any]) -> Mapping[str, Any]:
    """`config.model.<name>`: this network's own section."""
    return model_config[self.name]

  def check(self, model_config: Mapping[str, Any], num_joints: int,
            input_size: tuple[int, int] | None) -> None:
    """Raises ValueError naming the `config.model.<name>.<key>` of the first invalid field.

    The shared fields and the input size's divisibility are checked before and after it.
    """

  def input_divisor(self, model_config: Mapping[str, Any]) -> int:
    """What input height and width must be divisible by."""
    del model_config
    return 1

  def divisor_reason(self, model_config: Mapping[str, Any]) -> str:
    """Why the input must be divisible by `input_divisor`, for the error message."""
    del model_config
    return f'the downsampling of config.model.{self.name}'

  def num_branches(self, model_config: Mapping[str, Any]) -> int:
    """How many student branches the network has (1 for a plain network)."""
    raise NotImplementedError(f'{type(self).__name__} must define num_branches()')

  def build(self, model_config: Mapping[str, Any], num_joints: int) -> nn.Module:
    """A Linen module, `__call__(images [b, H, W, 3], *, train) -> PoseOutputs`."""
    raise NotImplementedError(f'{type(self).__name__} must define build()')

  def export_branch(self, variables: Mapping[str, Any], branch: int,
                    model_config: Mapping[str, Any]) -> dict[str, Any]:
    """{'params', 'batch_stats'} of `deployed_config(model_config, branch)`'s network: the
    input's arrays under new keys (see `rename_variables`), so outputs match exactly."""
    raise NotImplementedError(f'{type(self).__name__} must define export_branch()')

  def deployed_config(self, model_config: Mapping[str, Any], branch: int) -> dict[str, Any]:
    """`config.model` (a dict) of the one-branch network that deploys `branch`: `build_model`
    of it gives a network whose variable tree is exactly `export_branch`'s."""
    raise NotImplementedError(f'{type(self).__name__} must define deployed_config()')

  def describe(self, model_config: Mapping[str, Any]) -> str:
    """A short human name of the network, for tables."""
    del model_config
    return self.name


_NETWORKS = Registry('network', NetworkSpec)
# Class decorator: makes a NetworkSpec subclass the network `config.model.name=name`.
register = _NETWORKS.register
network_names = _NETWORKS.names


def get_spec(name: str) -> NetworkSpec:
  """The spec registered as `name`; ValueError naming config.model.name and the choices."""
  spec = _NETWORKS.get(name)
  if spec is None:
    raise ValueError(f'config.model.name must be one of {network_names()}, got {name!r}')
  return spec()  # specs hold no state: an instance is only a way to call their methods.


def network_config(name: str, *, fau: str = 'none', fau_hidden: int = 64, dtype: str = 'float32',
                   param_dtype: str = 'float32', **fields: Any) -> dict[str, Any]:
  """`config.model` (a dict) of network `name`: its section at the spec's defaults, updated by
  `fields` (ValueError naming an unknown one), and the shared fields as given."""
  section = get_spec(name).default_config()
  unknown = sorted(set(fields) - set(section))
  if unknown:
    raise ValueError(f'config.model.{name} has no fields {unknown}; it has {sorted(section)}')
  section.update(fields)
  return {'name': name, 'fau': fau, 'fau_hidden': fau_hidden, 'dtype': dtype,
          'param_dtype': param_dtype, name: section}


def resolve_compute_dtype(name: str, backend: str | None = None) -> str:
  """config.model.dtype as a dtype name: 'auto' -> 'bfloat16' on GPU/TPU, 'float32' on CPU."""
  if name != AUTO:
    return name
  backend = backend or jax.default_backend()
  return 'bfloat16' if backend in BFLOAT16_BACKENDS else 'float32'


def dtype_of(model_config: Mapping[str, Any], key: str) -> Any:
  """config.model.dtype or .param_dtype as a jnp dtype; ValueError naming the key."""
  value = model_config[key]
  if not isinstance(value, str):
    return jnp.dtype(value).type
  if key == 'dtype':
    value = resolve_compute_dtype(value)
  if value not in DTYPES:
    choices = tuple(DTYPES) + ((AUTO,) if key == 'dtype' else ())
    raise ValueError(f'config.model.{key} must be one of {choices}, got {value!r}')
  if value == 'float64' and not jax.config.jax_enable_x64:
    raise ValueError(f'config.model.{key}=float64 needs 64-bit JAX: set JAX_ENABLE_X64=1 '
                     '(without it jax silently computes in float32)')
  return DTYPES[value]


def compute_dtypes(model_config: Mapping[str, Any]) -> dict[str, Any]:
  """{'dtype', 'param_dtype'} as jnp dtypes, the keyword arguments every module takes."""
  return {key: dtype_of(model_config, key) for key in ('dtype', 'param_dtype')}


def shared_fields(model_config: Mapping[str, Any], **changes: Any) -> dict[str, Any]:
  """The fields of `config.model` every network reads (a dict), with `changes` applied."""
  fields = {key: model_config[key] for key in SHARED_FIELDS}
  fields.update(changes)
  return fields


def rename_variables(variables: Mapping[str, Any], renames: Mapping[str, str],
                     hint: str) -> dict[str, Any]:
  """{collection: {new: variables[collection][old]}} for `renames` {new: old}, no copies.

  A module without BatchNorm has no batch statistics, so only `params` must hold every old
  key; ValueError with `hint` (which config keys to check) otherwise.
  """
  params = variables.get('params', {})
  missing = sorted(old for old in renames.values() if old not in params)
  if missing:
    raise ValueError(f'the variables lack {missing}: {hint}? They have {sorted(params)}')
  renamed = {}
  for collection in COLLECTIONS:
    tree = variables.get(collection, {})
    renamed[collection] = {new: tree[old] for new, old in renames.items() if old in tree}
  return renamed
