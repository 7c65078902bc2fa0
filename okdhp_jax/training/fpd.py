"""FPD (Fast Pose Distillation, CVPR 2019): the two-stage baseline OKDHP compares against.

Stage one trains a big teacher (an 8-stack hourglass) alone; stage two trains a plain student
on alpha * MSE(student, GT) + (1 - alpha) * MSE(student, teacher), alpha 0.5, on every student
stack output. The frozen teacher runs in eval mode (BatchNorm running statistics), its LAST
stack's heatmaps are the soft target, and no gradient reaches it. It is loaded from an export
directory (okdhp_jax.exported), either trained here or converted from PyTorch.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
from jax.sharding import Mesh

from okdhp_jax.exported import load_exported
from okdhp_jax.models.outputs import PoseOutputs
from okdhp_jax.training import losses
from okdhp_jax.training import sharding as sharding_lib
from okdhp_jax.training import step as step_lib


def fpd_loss(outputs: PoseOutputs, target: jax.Array, teacher_heatmaps: jax.Array,
             target_weight: jax.Array, *, alpha: float,
             use_target_weight: bool = True) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Sum over student stacks of alpha * MSE(GT) + (1 - alpha) * MSE(teacher).

  Args:
    outputs: the student's PoseOutputs.
    target, teacher_heatmaps: [batch, height, width, joints].
    target_weight: [batch, joints], applied to both terms.
    alpha: config.fpd.alpha.
  """
  if not use_target_weight:
    target_weight = jnp.ones_like(target_weight)
  teacher_heatmaps = jax.lax.stop_gradient(teacher_heatmaps)
  stacks = outputs.all_stack_heatmaps
  mse_gt = sum(losses.joints_mse(h, target, target_weight) for h in stacks)
  mse_teacher = sum(losses.joints_mse(h, teacher_heatmaps, target_weight) for h in stacks)
  total = alpha * mse_gt + (1.0 - alpha) * mse_teacher
  metrics = {'loss': total, 'mse_stacks': mse_gt, 'mse_teacher': mse_teacher,
             'mse/teacher': losses.joints_mse(teacher_heatmaps, target, target_weight)}
  for b, heatmaps in enumerate(outputs.branch_heatmaps):
    metrics[f'mse/branch_{b}'] = losses.joints_mse(heatmaps, target, target_weight)
  return total, metrics


def teacher_last_heatmaps(outputs: Any) -> jax.Array:
  """The teacher's last stack: from PoseOutputs (its ensemble) or a tuple of stacks."""
  if isinstance(outputs, PoseOutputs):
    return outputs.ensemble
  return outputs[-1]


def load_fpd_teacher(path: str) -> tuple[nn.Module, dict[str, Any]]:
  """Loads an export directory (okdhp_jax.exported) as (module, variables)."""
  from okdhp_jax.models import build_model  # pylint: disable=g-import-not-at-top
  if not path:
    raise ValueError('config.fpd.teacher_checkpoint is empty; give an export directory')
  variables, description = load_exported(path)
  input_size = description.get('input_size')
  module = build_model(ml_collections.ConfigDict(description['model']),
                       description['num_joints'],
                       input_size=tuple(input_size) if input_size else None)
  return module, variables


def make_fpd_train_step(config: ml_collections.ConfigDict, student: nn.Module,
                        teacher: nn.Module, teacher_variables: dict[str, Any], *, mesh: Mesh,
                        steps_per_epoch: int, num_joints: int):
  """The jitted FPD train step for `student`, distilling from the frozen `teacher`.

  The teacher's variables are placed (replicated) on the mesh once and passed to the jitted
  function as an argument, not baked into the program as constants.

  Returns:
    fn (state, batch, rng) -> (state, metrics), same contract as step.make_train_step; its
    `.jitted` attribute is the underlying jitted function (state, teacher_variables, batch,
    rng). Metrics: loss, mse_stacks (GT), mse_teacher, mse/teacher (teacher vs GT),
    mse/branch_0, grad_norm, learning_rate, epoch.
  """
  sharding_lib.check_batch_divisible(config.train.batch_size, mesh)
  alpha = float(config.fpd.alpha)
  if not 0.0 <= alpha <= 1.0:
    raise ValueError(f'config.fpd.alpha={alpha} must lie in [0, 1]')

  def loss_fn(outputs, target, target_weight, epoch, teacher_heatmaps):
    del epoch
    return fpd_loss(outputs, target, teacher_heatmaps, target_weight, alpha=alpha,
                    use_target_weight=config.loss.use_target_weight)

  step_fn = step_lib.make_step_fn(config, student, steps_per_epoch=steps_per_epoch,
                                  loss_fn=loss_fn)

  def fpd_step(state, frozen_variables, batch, rng):
    step_lib.check_batch(batch, num_joints)
    teacher_heatmaps = teacher_last_heatmaps(
        teacher.apply(frozen_variables, batch['image'], train=False))
    if teacher_heatmaps.shape[-1] != num_joints:
      raise ValueError(f'the FPD teacher predicts {teacher_heatmaps.shape[-1]} joints; the '
                       f'student {num_joints}')
    return step_fn(state, batch, rng, jax.lax.stop_gradient(teacher_heatmaps))

  jitted = step_lib.jit_step(fpd_step, mesh, extra_args=1)
  frozen = jax.device_put(teacher_variables, sharding_lib.replicated(mesh))
  def train_step(state, batch, rng):
    return jitted(state, frozen, batch, rng)

  train_step.jitted = jitted
  return train_step
