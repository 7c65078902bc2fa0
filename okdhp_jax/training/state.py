"""The train state pytree and its shape-first creation.

`TrainState` holds only arrays (step, params, batch_stats, opt_state), so Orbax saves and
restores it whole; the optimiser's code (an optax transformation) is rebuilt from the config.
`abstract_train_state` gives the same tree as ShapeDtypeStructs with shardings: the Orbax
restore target, obtained with `jax.eval_shape` without allocating anything.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import ml_collections
from jax.sharding import Mesh

from okdhp_jax.training import optimizer as optimizer_lib
from okdhp_jax.training import sharding as sharding_lib


@flax.struct.dataclass
class TrainState:
  step: jax.Array        # int32 scalar: optimiser updates done.
  params: Any
  batch_stats: Any
  opt_state: Any

  @property
  def variables(self) -> dict[str, Any]:
    """{'params', 'batch_stats'}: what `model.apply` and export take."""
    return {'params': self.params, 'batch_stats': self.batch_stats}


def make_tx(config: ml_collections.ConfigDict, *, steps_per_epoch: int):
  """The optimiser and schedule for `config` (global batch = config.train.batch_size)."""
  return optimizer_lib.make_optimizer(config.optim, steps_per_epoch=steps_per_epoch,
                                      global_batch_size=config.train.batch_size)


def _init_fn(config: ml_collections.ConfigDict, model: nn.Module, steps_per_epoch: int):
  tx, _ = make_tx(config, steps_per_epoch=steps_per_epoch)
  height, width = config.data.input_size

  def init(rng: jax.Array) -> TrainState:
    # Batch 2, not 1: nothing in init depends on it, and it avoids degenerate BN statistics.
    variables = model.init(rng, jnp.zeros((2, height, width, 3), jnp.float32), train=False)
    params = variables['params']
    return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                      batch_stats=variables.get('batch_stats', {}),
                      opt_state=tx.init(params))
  return init


def abstract_train_state(config: ml_collections.ConfigDict, model: nn.Module, *, mesh: Mesh,
                         steps_per_epoch: int) -> TrainState:
  """The TrainState as jax.ShapeDtypeStruct leaves carrying replicated shardings."""
  shapes = jax.eval_shape(_init_fn(config, model, steps_per_epoch), jax.random.key(0))
  sharding = sharding_lib.replicated(mesh)
  return jax.tree.map(
      lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=sharding), shapes)


def create_train_state(config: ml_collections.ConfigDict, model: nn.Module, rng: jax.Array, *,
                       mesh: Mesh, steps_per_epoch: int) -> tuple[TrainState, Any]:
  """Initialises parameters and optimiser state, replicated over `mesh`.

  Returns:
    (state, state_sharding): state_sharding is a TrainState-shaped tree of NamedShardings.
  """
  # `init_variables` rather than `model.init` under jit: compiling hundreds of separate random
  # draws takes a minute on CPU for a multi-branch hourglass; one draw sliced on the host does not.
  from okdhp_jax.models import init_variables
  height, width = config.data.input_size
  variables = init_variables(model, rng, (1, height, width, 3))
  tx, _ = make_tx(config, steps_per_epoch=steps_per_epoch)
  params = variables['params']
  state = TrainState(step=jnp.zeros((), jnp.int32), params=params,
                     batch_stats=variables.get('batch_stats', {}), opt_state=tx.init(params))
  state_sharding = jax.tree.map(lambda _: sharding_lib.replicated(mesh), state)
  return jax.device_put(state, state_sharding), state_sharding
