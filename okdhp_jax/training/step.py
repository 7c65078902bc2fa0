"""The train step: a pure function (state, frozen, batch) -> (state, metrics) under jit.

One step for every method: targets are rendered on the device by the heatmap codec, the network
runs in training mode, and the method (okdhp_jax/methods/) turns its outputs into the loss and
the metrics to log; `frozen` is the method's frozen state (FPD's teacher, None for OKDHP).

The batch is sharded over the mesh's `data` axis and the state is replicated. The step body
runs per device (`shard_map`) and says itself what crosses the devices, rather than leaving
it to the compiler's partitioner, which reduces each weight's gradient in the dtype of the
convolution that makes it (bfloat16 in a bfloat16 network):
  - the parameter gradients, averaged in float32 (the parameters' dtype), once per step;
  - BatchNorm's batch statistics, per `config.train.batch_norm_stats`: 'global' averages them
    over the devices in every layer (forward and backward), so N devices compute what one
    device computes on the same global batch; 'per_device' keeps each device's own (the
    released code's DataParallel replicas), and only the running averages are averaged, once;
  - the losses and metrics, averaged (every device holds as many rows).
The input state is donated: its buffers are reused for the new one.
"""

from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax
from jax.sharding import Mesh, PartitionSpec

from okdhp_jax import cpu_compiler
from okdhp_jax import sharding as sharding_lib
from okdhp_jax.codecs.heatmap import HeatmapCodec
from okdhp_jax.data import normalization
from okdhp_jax.methods.base import Method, Metrics, Targets
from okdhp_jax.models import batch_norm
from okdhp_jax.training import optimizer
from okdhp_jax.training.flat_state import FlatTrainState
from okdhp_jax.training.state import TrainState

Batch = dict[str, jax.Array]
AnyTrainState = TrainState | FlatTrainState  # flat_state.arranged_for says which.
TrainStep = Callable[[AnyTrainState, Any, Batch], tuple[AnyTrainState, Metrics]]

# config.train.batch_norm_stats: BatchNorm's training statistics over the global batch, or
# over each device's share of it.
BATCH_NORM_STATS = ('global', 'per_device')


def statistics_axis(train_config: ml_collections.ConfigDict) -> str | None:
  """The mesh axis BatchNorm statistics are averaged over (None: each device's own)."""
  choice = train_config.get('batch_norm_stats', 'global')
  if choice not in BATCH_NORM_STATS:
    raise ValueError(f'config.train.batch_norm_stats={choice!r}; choose from '
                     f'{BATCH_NORM_STATS}')
  return sharding_lib.DATA_AXIS if choice == 'global' else None


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
    jitted fn (state, frozen, batch) -> (state, metrics). state: a TrainState, or the
    FlatTrainState that flat_state.arranged_for makes of it (on a GPU; the step returns the
    form it takes); frozen: method.frozen_state(mesh);
    batch: {'image' uint8 [B, H, W, 3] (normalised here), 'joints' [B, J, 2], 'joints_vis'
    [B, J]}; metrics:
    replicated scalars, the method's plus grad_norm, learning_rate and epoch. The input state
    is donated.
  """
  sharding_lib.check_batch_divisible(config.train.batch_size, mesh)
  codec = HeatmapCodec.from_config(config.data)
  tx, schedule = optimizer.make_optimizer(config.optim, steps_per_epoch=steps_per_epoch,
                                          global_batch_size=config.train.batch_size)

  axis = sharding_lib.DATA_AXIS
  stats_axis = statistics_axis(config.train)

  def device_step(state: AnyTrainState, frozen: Any, batch: Batch
                  ) -> tuple[AnyTrainState, Metrics]:
    """One device's share: `batch` holds its rows; collectives named below."""
    check_batch(batch, num_joints)
    targets = Targets(*codec.encode(batch['joints'], batch['joints_vis']))
    images = normalization.normalize(batch['image'])
    epoch = state.step.astype(jnp.float32) / steps_per_epoch

    old_stats = state.stats_tree()

    def compute_loss(params):
      with batch_norm.statistics_across(stats_axis):
        outputs, new_variables = model.apply(
            {'params': params, 'batch_stats': old_stats}, images, train=True,
            mutable=['batch_stats'])
      total, metrics = method.loss(outputs, targets, images=images, epoch=epoch,
                                   frozen=frozen)
      return total, (metrics, new_variables.get('batch_stats', old_stats))

    # This device's gradients of its rows' loss, float32 like the parameters; their mean is
    # the global batch's gradient, reduced in float32 whatever the compute dtype. The network
    # takes per-array trees; the state may hold them flat (flat_state.py), and then the
    # gradients and new statistics are laid out as it holds them.
    grads, (metrics, batch_stats) = jax.grad(compute_loss, has_aux=True)(state.params_tree())
    grads = jax.lax.pmean(state.arrange_params(grads), axis)
    batch_stats = state.arrange_stats(batch_stats)
    if stats_axis is None:  # each device updated the running averages with its own.
      batch_stats = jax.lax.pmean(batch_stats, axis)
    metrics = jax.lax.pmean(metrics, axis)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    new_state = state.replace(step=state.step + 1,
                              params=optax.apply_updates(state.params, updates),
                              batch_stats=batch_stats, opt_state=opt_state)
    metrics = dict(metrics, grad_norm=optimizer.global_norm(grads),
                   learning_rate=schedule(state.step), epoch=epoch)
    return new_state, metrics

  # Unchecked replication (check_vma=False): the gradients of the replicated parameters are
  # each device's own until the pmean above, as in a data-parallel step written by hand.
  per_device = jax.shard_map(device_step, mesh=mesh,
                             in_specs=(PartitionSpec(), PartitionSpec(), PartitionSpec(axis)),
                             out_specs=(PartitionSpec(), PartitionSpec()), check_vma=False)

  def train_step(state: AnyTrainState, frozen: Any, batch: Batch
                 ) -> tuple[AnyTrainState, Metrics]:
    return per_device(state, frozen, batch)  # named so: profiles and XLA dumps say train_step.

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
