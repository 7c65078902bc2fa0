"""The OKDHP train step: a pure function (state, batch, rng) -> (state, metrics) under jit.

The batch is sharded over the mesh's `data` axis and the state is replicated; the compiler
turns every mean over the batch (losses, BatchNorm statistics) into a mean over the global
batch, so N devices compute what one device would on the same global batch. The input state
is donated: its buffers are reused for the new one.

The plain baseline is the same step with a one-branch, FAU-less model (no teacher, no KD).
"""

from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax
from jax.sharding import Mesh

from okdhp_jax.models.outputs import PoseOutputs
from okdhp_jax.training import losses
from okdhp_jax.training import sharding as sharding_lib
from okdhp_jax.training import state as state_lib
from okdhp_jax.training import targets as targets_lib
from okdhp_jax.training.state import TrainState

Batch = dict[str, jax.Array]
Metrics = dict[str, jax.Array]
# (outputs, target, target_weight, epoch, extras) -> (total loss, metrics)
LossFn = Callable[[PoseOutputs, jax.Array, jax.Array, jax.Array, Any], tuple[jax.Array, Metrics]]


def render_batch_targets(config: ml_collections.ConfigDict,
                         batch: Batch) -> tuple[jax.Array, jax.Array]:
  """GT heatmaps [B, H, W, J] and target weights [B, J] for a batch, per config.data."""
  return targets_lib.render_heatmaps(
      batch['joints'], batch['joints_vis'], input_size=tuple(config.data.input_size),
      heatmap_size=tuple(config.data.heatmap_size), sigma=float(config.data.sigma))


def make_step_fn(config: ml_collections.ConfigDict, model: nn.Module, *, steps_per_epoch: int,
                 loss_fn: LossFn) -> Callable[[TrainState, Batch, jax.Array, Any],
                                              tuple[TrainState, Metrics]]:
  """The un-jitted step body shared by the OKDHP and FPD trainers.

  `extras` is passed through to `loss_fn` (FPD: the teacher's heatmaps).
  """
  tx, schedule = state_lib.make_tx(config, steps_per_epoch=steps_per_epoch)

  def step_fn(state: TrainState, batch: Batch, rng: jax.Array,
              extras: Any = None) -> tuple[TrainState, Metrics]:
    rng = jax.random.fold_in(rng, state.step)
    target, target_weight = render_batch_targets(config, batch)
    epoch = state.step.astype(jnp.float32) / steps_per_epoch

    def compute_loss(params):
      outputs, new_variables = model.apply(
          {'params': params, 'batch_stats': state.batch_stats}, batch['image'], train=True,
          mutable=['batch_stats'], rngs={'dropout': rng})
      total, metrics = loss_fn(outputs, target, target_weight, epoch, extras)
      return total, (metrics, new_variables.get('batch_stats', state.batch_stats))

    grads, (metrics, batch_stats) = jax.grad(compute_loss, has_aux=True)(state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    new_state = TrainState(step=state.step + 1, params=optax.apply_updates(state.params, updates),
                           batch_stats=batch_stats, opt_state=opt_state)
    metrics = dict(metrics, grad_norm=optax.tree.norm(grads),
                   learning_rate=schedule(state.step), epoch=epoch)
    return new_state, metrics

  return step_fn


def jit_step(step_fn, mesh: Mesh, *, extra_args: int = 0):
  """jit with the state replicated and donated, the batch sharded over `data`.

  `extra_args` replicated arguments (e.g. teacher variables) come between state and batch.
  """
  replicated = sharding_lib.replicated(mesh)
  in_shardings = (replicated,) + (replicated,) * extra_args + (
      sharding_lib.data_sharded(mesh), replicated)
  return jax.jit(step_fn, in_shardings=in_shardings, out_shardings=(replicated, replicated),
                 donate_argnums=(0,))


def make_train_step(config: ml_collections.ConfigDict, model: nn.Module, *, mesh: Mesh,
                    steps_per_epoch: int, num_joints: int):
  """The jitted OKDHP train step.

  Args:
    config: the experiment config (data sizes and sigma, loss, optim, train.batch_size).
    model: a pose network returning PoseOutputs (multi-branch, or plain for the baseline).
    mesh: a mesh with a `data` axis (sharding.make_mesh).
    steps_per_epoch: optimiser steps per epoch (optimizer.steps_per_epoch).
    num_joints: joints per person; checked against the batch.

  Returns:
    jitted fn (state, batch, rng) -> (state, metrics). batch: {'image' [B, H, W, 3] float32,
    'joints' [B, J, 2], 'joints_vis' [B, J]}; metrics: replicated scalars (loss, mse_stacks,
    mse/branch_b, mse_ensemble, kl, kd_ramp, fau_weight/branch_b, grad_norm, learning_rate,
    epoch). The input state is donated.
  """
  sharding_lib.check_batch_divisible(config.train.batch_size, mesh)

  def loss_fn(outputs, target, target_weight, epoch, extras):
    del extras
    return losses.okdhp_loss(outputs, target, target_weight, loss_config=config.loss,
                             epoch=epoch)

  step_fn = make_step_fn(config, model, steps_per_epoch=steps_per_epoch, loss_fn=loss_fn)

  def train_step(state: TrainState, batch: Batch, rng: jax.Array):
    check_batch(batch, num_joints)
    return step_fn(state, batch, rng)

  return jit_step(train_step, mesh)


def check_batch(batch: Batch, num_joints: int) -> None:
  """Trace-time shape checks with messages that name the offending field."""
  for key in ('image', 'joints', 'joints_vis'):
    if key not in batch:
      raise ValueError(f'train batch is missing {key!r}; got keys {sorted(batch)}')
  if batch['joints'].shape[1:] != (num_joints, 2):
    raise ValueError(f"batch['joints'] has shape {batch['joints'].shape}; expected "
                     f'[batch, {num_joints}, 2]')
  if batch['joints_vis'].shape[1:] != (num_joints,):
    raise ValueError(f"batch['joints_vis'] has shape {batch['joints_vis'].shape}; expected "
                     f'[batch, {num_joints}]')
