"""What a training method is, and the registry that maps `config.method` to one.

A method owns what differs between OKDHP, FPD and the plain baseline: the loss it minimises, the
metrics it logs, and any frozen state its loss reads (FPD's teacher). The train step, the loop
and the train state reach it only through this interface and know no method by name, so a new
method (OKDDip, a self-distillation variant) is one new module:

  @register('my_method')
  class MyMethod(Method):
    def loss(self, outputs, targets, *, images, epoch, frozen):
      ...
      return total, {'loss': total, ...}

and `--config.method=my_method` selects it (the module must be imported; the built-in ones are
imported by okdhp_jax/methods/__init__.py). A method with settings of its own names a config
section and its defaults (`config_section`, `default_config`); configs add them with
`configs/default.py:set_method`.
"""

from __future__ import annotations

from typing import Any, ClassVar

import flax.struct
import jax
import ml_collections
from jax.sharding import Mesh

from okdhp_jax.models.outputs import PoseOutputs
from okdhp_jax.registry import Registry

Metrics = dict[str, jax.Array]


@flax.struct.dataclass
class Targets:
  """What a batch is supervised with, rendered on the device by the heatmap codec.

  Attributes:
    heatmaps: [batch, height, width, joints] GT heatmaps.
    weight: [batch, joints] target weights (0 for invisible or out-of-map joints).
  """

  heatmaps: jax.Array
  weight: jax.Array


class Method:
  """Base class of training methods; subclasses override `loss` and, if needed, the rest.

  Attributes:
    name: the `config.method` value it is registered under (set by `register`).
    config_section: the config section holding its own settings ('' for none).
    config: the experiment config.
    num_joints: joints per person of the dataset.
  """

  name: ClassVar[str] = ''
  config_section: ClassVar[str] = ''

  def __init__(self, config: ml_collections.ConfigDict, *, num_joints: int):
    self.config = config
    self.num_joints = int(num_joints)
    self.check_config()

  @classmethod
  def default_config(cls) -> ml_collections.ConfigDict | None:
    """The defaults of `config.<config_section>`, or None for a method without settings."""
    return None

  def check_config(self) -> None:
    """Raises ValueError naming the config key of a setting this method cannot use."""
    section = self.config_section
    if section and section not in self.config:
      raise ValueError(f'config.method={self.name!r} reads config.{section}, which this config '
                       f"lacks: add it with configs/default.py's set_method(config, "
                       f"{self.name!r})")

  def frozen_state(self, mesh: Mesh) -> Any:
    """A pytree the loss reads but training never changes, replicated on `mesh`, or None.

    Called once when training starts (not for evaluation or export). It is passed to the jitted
    step as an argument rather than captured, so it is not baked into the program as constants.
    """
    del mesh
    return None

  def loss(self, outputs: PoseOutputs, targets: Targets, *, images: jax.Array,
           epoch: jax.Array, frozen: Any) -> tuple[jax.Array, Metrics]:
    """The loss of one batch and the scalars to log, traced under jit.

    Args:
      outputs: the network's PoseOutputs in training mode.
      targets: GT heatmaps and target weights.
      images: [batch, height, width, 3] the network's input (e.g. for a teacher to see).
      epoch: float32 scalar, step / steps_per_epoch (for warm-ups and ramps).
      frozen: what `frozen_state` returned.

    Returns:
      (total, metrics): a scalar to minimise and {name: scalar}, logged as train/<name>; it
      must hold 'loss'.
    """
    raise NotImplementedError(f'{type(self).__name__} must define loss()')


_METHODS = Registry('method', Method)
# Class decorator: makes a Method subclass selectable as `config.method=name`.
register = _METHODS.register
registered_names = _METHODS.names


def get_method(name: str) -> type[Method]:
  """The Method class registered as `name`."""
  method = _METHODS.get(name)
  if method is None:
    raise ValueError(f'config.method={name!r} is not a registered training method; choose one '
                     f'of {registered_names()} (the plain baseline is okdhp with one branch)')
  return method


def create(config: ml_collections.ConfigDict, *, num_joints: int) -> Method:
  """The method `config.method` names, built for `config`."""
  if 'trainer' in config:
    raise ValueError(f'config.trainer={config.trainer!r}: the key is config.method now')
  return get_method(config.method)(config, num_joints=num_joints)
