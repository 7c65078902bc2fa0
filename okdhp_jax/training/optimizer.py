"""Adam with a step-decay schedule (the OKDHP MPII protocol): lr 2.5e-4, x0.1 at epochs 90 and 120.

Epoch boundaries become optimiser steps through `steps_per_epoch`; the schedule is evaluated
at the optimiser's update count, so update k (0-based) uses lr(k), and the first update of
epoch 90 (k = 90 * steps_per_epoch) already uses the decayed rate, like PyTorch's MultiStepLR
stepped once per epoch.
"""

from __future__ import annotations

import math

import ml_collections
import optax


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
    return optax.chain(optax.add_decayed_weights(optim_config.weight_decay), adam), schedule
  return adam, schedule
