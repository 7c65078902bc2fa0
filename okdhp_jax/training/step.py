"""The train step: a pure function (state, frozen, batch) -> (state, metrics) under jit.

One step for every method: targets are rendered on the device by the heatmap codec, the network
runs in training mode, and the method (okdhp_jax/methods/) turns its outputs into the loss and
the metrics to log; `frozen` is the method's frozen state (FPD's teacher, None for OKDHP).

The batch is sharded over the mesh's `data` axis and the state is replicated; the compiler
turns every mean over the batch (losses, BatchNorm statistics) into a mean over the global
batch, so N devices compute what one device would on the same global batch. The input state
is donated: its buffers are reused for the new one.
"""

from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax
from jax.sharding import Mesh

from okdhp_jax import cpu_compiler
from okdhp_jax import sharding as sharding_lib
from okdhp_jax.codecs.heatmap import HeatmapCodec
from okdhp_jax.data import normalization
from okdhp_jax.methods.base import Method, Metrics, Targets
from okdhp_jax.training import optimizer
from okdhp_jax.training.state import TrainState

Batch = dict[str, jax.Array]
TrainStep = Callable[[TrainState, Any, Batch], tuple[TrainState, Metrics]]


def make_train_step(config: ml_collections.ConfigDict, model: nn.Module, method: Method, *,
                    mesh: Mesh, steps_per_epoch: int, num_joints: int) -> TrainStep:
  """The jitted train step of `method` for `model`.

  Args:
    config: the experiment config (data sizes and sigma, optim, train.batch_size).
    model: a pose network returning PoseOutputs (multi-branch, or plain for the baseline).
    method: the training method (methods.create(config, ...)).
    mesh: a mesh with a `data` axis (sharding.make_mesh).
    steps_per_epoch: optimiser steps per epoch (optimizer.steps_per_epoch).
    num_joints: joints per person; checked against the batch.

  Returns:
    jitted fn (state, frozen, batch) -> (state, metrics). frozen: method.frozen_state(mesh);
    batch: {'image' uint8 [B, H, W, 3] (normalised here), 'joints' [B, J, 2], 'joints_vis'
    [B, J]}; metrics:
    replicated scalars, the method's plus grad_norm, learning_rate and epoch. The input state
    is donated.
  """
  sharding_lib.check_batch_divisible(config.train.batch_size, mesh)
  codec = HeatmapCodec.from_config(config.data)
  tx, schedule = optimizer.make_optimizer(config.optim, steps_per_epoch=steps_per_epoch,
                                          global_batch_size=config.train.batch_size)

  def train_step(state: TrainState, frozen: Any, batch: Batch) -> tuple[TrainState, Metrics]:
    check_batch(batch, num_joints)
    targets = Targets(*codec.encode(batch['joints'], batch['joints_vis']))
    images = normalization.normalize(batch['image'])
    epoch = state.step.astype(jnp.float32) / steps_per_epoch

    def compute_loss(params):
      outputs, new_variables = model.apply(
          {'params': params, 'batch_stats': state.batch_stats}, images, train=True,
          mutable=['batch_stats'])
      total, metrics = method.loss(outputs, targets, images=images, epoch=epoch,
                                   frozen=frozen)
      return total, (metrics, new_variables.get('batch_stats', state.batch_stats))

    grads, (metrics, batch_stats) = jax.grad(compute_loss, has_aux=True)(state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    new_state = TrainState(step=state.step + 1, params=optax.apply_updates(state.params, updates),
                           batch_stats=batch_stats, opt_state=opt_state)
    metrics = dict(metrics, grad_norm=optax.tree.norm(grads),
                   learning_rate=schedule(state.step), epoch=epoch)
    return new_state, metrics

  replicated = sharding_lib.replicated(mesh)
  return jax.jit(train_step,
                 in_shardings=(replicated, replicated, sharding_lib.data_sharded(mesh)),
                 out_shardings=(replicated, replicated), donate_argnums=(0,),
                 compiler_options=_compiler_options(mesh))


def _compiler_options(mesh: Mesh) -> dict[str, Any] | None:
  """The CPU compiler options for a mesh of CPU devices, none for any other mesh.

  The mesh decides rather than the default backend: a step compiled ahead of time for a
  described GPU (tools/gpu_program.py) runs in a CPU-only process, yet is a GPU program.
  """
  on_cpu = mesh.devices.flat[0].platform == 'cpu'
  return cpu_compiler.compiler_options() if on_cpu else None


def check_batch(batch: Batch, num_joints: int) -> None:
  """Trace-time shape checks with messages that name the offending field."""
  for key in ('image', 'joints', 'joints_vis'):
    if key not in batch:
      raise ValueError(f'train batch is missing {key!r}; got keys {sorted(batch)}')
  normalization.check_uint8(batch['image'], "the train batch's 'image'")
  if batch['joints'].shape[1:] != (num_joints, 2):
    raise ValueError(f"batch['joints'] has shape {batch['joints'].shape}; expected "
                     f'[batch, {num_joints}, 2]')
  if batch['joints_vis'].shape[1:] != (num_joints,):
    raise ValueError(f"batch['joints_vis'] has shape {batch['joints_vis'].shape}; expected "
                     f'[batch, {num_joints}]')
