"""The train state pytree and how a fresh one is made.

`TrainState` holds only arrays (step, params, batch_stats, opt_state), so Orbax saves it whole
and restores a checkpoint into the live state's shapes and shardings; the optimiser's code (an
optax transformation) is rebuilt from the config. On a GPU the train loop keeps the same
arrays as one vector per dtype between steps (flat_state.py).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import flax.struct
import jax
import ml_collections
import numpy as np
from jax.sharding import Mesh

from okdhp_jax import sharding as sharding_lib
from okdhp_jax.models.initializers import host_variables
from okdhp_jax.training import optimizer as optimizer_lib


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

  # The train step and checkpoints take this state or flat_state.FlatTrainState, which keeps
  # the same arrays as one vector per dtype; these say how each holds them.
  def params_tree(self) -> Any:
    return self.params

  def stats_tree(self) -> Any:
    return self.batch_stats

  def arrange_params(self, tree: Any) -> Any:
    """A tree shaped like the parameters (their gradients) as this state holds parameters."""
    return tree

  def arrange_stats(self, tree: Any) -> Any:
    return tree

  def per_array(self) -> TrainState:
    return self

  def per_array_shapes(self) -> TrainState:
    """What a checkpoint's layout names (checkpoint_packing.layout)."""
    return self


def create_train_state(config: ml_collections.ConfigDict, model: nn.Module, rng: jax.Array, *,
                       mesh: Mesh, steps_per_epoch: int) -> TrainState:
  """Initialises parameters and optimiser state, replicated over `mesh`."""
  # `host_variables` rather than `model.init` under jit: a multi-branch hourglass has hundreds
  # of separate random draws, each compiled apart; one draw sliced on the host compiles once.
  # The optimiser's state comes from one jitted call: optax builds it leaf by leaf, and eagerly
  # every leaf shape would compile a program of its own.
  height, width = config.data.input_size
  replicated = sharding_lib.replicated(mesh)
  variables = jax.device_put(host_variables(model, rng, (1, height, width, 3)), replicated)
  tx, _ = optimizer_lib.make_optimizer(config.optim, steps_per_epoch=steps_per_epoch,
                                       global_batch_size=config.train.batch_size)
  params = variables['params']
  opt_state = jax.jit(tx.init, out_shardings=replicated)(params)
  return TrainState(step=jax.device_put(np.zeros((), np.int32), replicated), params=params,
                    batch_stats=variables.get('batch_stats', {}), opt_state=opt_state)
