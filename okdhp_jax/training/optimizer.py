"""Adam with a step-decay schedule (the OKDHP MPII protocol): lr 2.5e-4, x0.1 at epochs 90 and 120.

Epoch boundaries become optimiser steps through `steps_per_epoch`; the schedule is evaluated
at the optimiser's update count, so update k (0-based) uses lr(k), and the first update of
epoch 90 (k = 90 * steps_per_epoch) already uses the decayed rate, like PyTorch's MultiStepLR
stepped once per epoch.

Two things are written for the compiled program. `global_norm`, the gradient norm the train
step logs, is one reduction over every parameter rather than one per parameter array (on a GPU
and a CPU; a TPU's program is left as it was). On a GPU only, the optimiser reads each gradient
in its parameter's layout, so it updates the weights in place (`_in_parameter_layout`).
`python -m okdhp_jax.tools.gpu_program` counts both.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import ml_collections
import optax
from jax.experimental import layout as layout_lib

from okdhp_jax import sharding


def steps_per_epoch(num_examples: int, global_batch_size: int) -> int:
  """ceil(num_examples / global_batch_size): HRNet-style train loaders keep the last, partial
  batch (drop_last=False), so an epoch has ceil(N / B) updates."""
  if num_examples <= 0:
    raise ValueError(f'config.data.num_train_examples must be positive, got {num_examples}')
  if global_batch_size <= 0:
    raise ValueError(f'config.train.batch_size must be positive, got {global_batch_size}')
  return math.ceil(num_examples / global_batch_size)


def base_learning_rate(optim_config: ml_collections.ConfigDict, global_batch_size: int) -> float:
  """config.optim.learning_rate, scaled linearly by global_batch / base_batch_size when
  config.optim.scale_lr_with_batch is set."""
  lr = float(optim_config.learning_rate)
  if optim_config.scale_lr_with_batch:
    lr *= global_batch_size / optim_config.base_batch_size
  return lr


def make_schedule(optim_config: ml_collections.ConfigDict, *, steps_per_epoch: int,
                  global_batch_size: int) -> optax.Schedule:
  """Piecewise-constant lr: multiplied by lr_decay_factor at each epoch in lr_decay_epochs."""
  boundaries: dict[int, float] = {}
  for epoch in optim_config.lr_decay_epochs:
    step = int(round(epoch * steps_per_epoch))
    # Two epochs landing on one step (tiny runs) compound instead of overwriting each other.
    boundaries[step] = boundaries.get(step, 1.0) * optim_config.lr_decay_factor
  return optax.piecewise_constant_schedule(
      base_learning_rate(optim_config, global_batch_size), boundaries)


def make_optimizer(optim_config: ml_collections.ConfigDict, *, steps_per_epoch: int,
                   global_batch_size: int) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """Adam (PyTorch defaults: betas 0.9/0.999, eps 1e-8) on the schedule above.

  weight_decay > 0 adds L2 to the gradient before Adam, as PyTorch's Adam(weight_decay=...)
  does (not decoupled AdamW); the paper uses 0.

  Returns:
    (optimizer, schedule); the schedule is returned so the train step can log the lr.
  """
  schedule = make_schedule(optim_config, steps_per_epoch=steps_per_epoch,
                           global_batch_size=global_batch_size)
  adam = optax.adam(schedule, b1=0.9, b2=0.999, eps=1e-8)
  if optim_config.weight_decay:
    adam = optax.chain(optax.add_decayed_weights(optim_config.weight_decay), adam)
  return _in_parameter_layout(adam), schedule


def global_norm(tree) -> jax.Array:
  """The L2 norm of all of `tree`'s leaves together (optax.tree.norm's value).

  One dot product of the leaves' concatenation, except on a TPU: optax.tree.norm sums each leaf
  on its own, one or two reduction kernels per parameter array on a GPU (about 780 of
  OKDHP-HG4's) and a fusion each that XLA's CPU compiler compiles in every run (390 of the
  quickstart step's 3,911), and XLA's simplifier splits a sum of a concatenation back into
  those sums, though not a dot. A TPU keeps optax.tree.norm: its compiled slices are the ones
  the README's TPU tables were measured on.
  """
  if sharding.tracing_platform() == 'tpu':
    return optax.tree.norm(tree)
  return _norm_of_concatenation(tree)


def _norm_of_concatenation(tree) -> jax.Array:
  flat = jnp.concatenate([jnp.ravel(leaf) for leaf in jax.tree.leaves(tree)])
  return jnp.sqrt(jnp.dot(flat, flat, precision=jax.lax.Precision.HIGHEST))


def _in_parameter_layout(
    tx: optax.GradientTransformation) -> optax.GradientTransformationExtraArgs:
  """`tx` (same state, same updates) reading the gradients in the parameters' memory layout.

  On a GPU a convolution's weight gradient comes from cuDNN with the output channels major
  ([O, H, W, I]) while the float32 weights and Adam's moments are stored [H, W, I, O]. Left
  to itself XLA runs Adam in the gradient's order, so it cannot write the donated weights and
  moments in place and copies all three afterwards (1,131 copies of 0.34 GiB a step in
  OKDHP-HG4). Constrained to the parameters' layout, the gradient is transposed on its own
  (one kernel per convolution weight) and Adam writes in place. Other platforms get their own
  layouts, unconstrained. A flat state (flat_state.py, a GPU's default) has no such arrays:
  its gradients arrive as one vector, in the weights' order, and this changes nothing.
  """
  def update(updates, state, params=None, **extra_args):
    updates = sharding.for_gpu(_in_row_major_layout, lambda tree: tree, updates)
    return tx.update(updates, state, params, **extra_args)

  return optax.GradientTransformationExtraArgs(tx.init, update)


def _in_row_major_layout(tree):
  """`tree` with each array of two or more dimensions pinned to the row-major layout."""
  def constrain(x):
    if x.ndim < 2:
      return x
    return layout_lib.with_layout_constraint(
        x, layout_lib.Layout(major_to_minor=tuple(range(x.ndim))))

  return jax.tree.map(constrain, tree)
