"""FPD (Fast Pose Distillation, CVPR 2019): the two-stage baseline OKDHP compares against.

Stage one trains a big teacher (an 8-stack hourglass) alone; stage two trains a plain student
on alpha * MSE(student, GT) + (1 - alpha) * MSE(student, teacher), alpha 0.5, on every student
stack output. The frozen teacher runs in eval mode (BatchNorm running statistics), its LAST
stack's heatmaps are the soft target, and no gradient reaches it. It is loaded from an export
directory (okdhp_jax/export/store.py), either trained here or converted from PyTorch.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import ml_collections
from jax.sharding import Mesh

from okdhp_jax import sharding as sharding_lib
from okdhp_jax.export.store import load_exported
from okdhp_jax.methods import losses
from okdhp_jax.methods.base import Method, Metrics, Targets, register
from okdhp_jax.models import build_model
from okdhp_jax.models.outputs import PoseOutputs


@flax.struct.dataclass
class FrozenTeacher:
  """FPD's frozen state: the teacher's {'params', 'batch_stats'}, replicated on the mesh."""

  variables: Any


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
  mse_gt = losses.joints_mse_sum(stacks, target, target_weight)
  mse_teacher = losses.joints_mse_sum(stacks, teacher_heatmaps, target_weight)
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
  """Loads an export directory (okdhp_jax/export/store.py) as (module, variables)."""
  if not path:
    raise ValueError('config.fpd.teacher_checkpoint is empty: FPD needs an exported teacher '
                     '(python -m okdhp_jax.main --mode export) or a converted PyTorch one '
                     '(python -m okdhp_jax.tools.convert_torch)')
  variables, description = load_exported(path)
  input_size = description.get('input_size')
  module = build_model(ml_collections.ConfigDict(description['model']),
                       description['num_joints'],
                       input_size=tuple(input_size) if input_size else None)
  return module, variables


@register('fpd')
class FPD(Method):
  """A student (config.model) distilled from the frozen teacher in config.fpd.teacher_checkpoint.

  Logs loss, mse_stacks (GT), mse_teacher, mse/teacher (teacher vs GT) and mse/branch_b.
  """

  config_section = 'fpd'
  teacher: nn.Module | None = None

  @classmethod
  def default_config(cls) -> ml_collections.ConfigDict:
    """config.fpd: the teacher export and the mix of its loss with the GT one."""
    fpd = ml_collections.ConfigDict()
    fpd.teacher_checkpoint = ''     # an exported hourglass (Orbax) or a converted PyTorch one.
    fpd.teacher_num_stacks = 8      # what the study tool counts the teacher's cost from.
    fpd.alpha = 0.5                 # alpha * MSE(GT) + (1 - alpha) * MSE(teacher)
    return fpd

  def check_config(self) -> None:
    super().check_config()
    alpha = float(self.config.fpd.alpha)
    if not 0.0 <= alpha <= 1.0:
      raise ValueError(f'config.fpd.alpha={alpha} must lie in [0, 1]')

  def frozen_state(self, mesh: Mesh) -> FrozenTeacher:
    self.teacher, variables = load_fpd_teacher(self.config.fpd.teacher_checkpoint)
    return FrozenTeacher(jax.device_put(variables, sharding_lib.replicated(mesh)))

  def loss(self, outputs: PoseOutputs, targets: Targets, *, images: jax.Array,
           epoch: jax.Array, frozen: FrozenTeacher) -> tuple[jax.Array, Metrics]:
    del epoch
    if self.teacher is None:
      raise RuntimeError('FPD.loss before frozen_state(): the teacher is not loaded')
    teacher_heatmaps = teacher_last_heatmaps(
        self.teacher.apply(frozen.variables, images, train=False))
    if teacher_heatmaps.shape[-1] != self.num_joints:
      raise ValueError(f'the FPD teacher in config.fpd.teacher_checkpoint predicts '
                       f'{teacher_heatmaps.shape[-1]} joints; the student {self.num_joints}')
    return fpd_loss(outputs, targets.heatmaps, teacher_heatmaps, targets.weight,
                    alpha=float(self.config.fpd.alpha),
                    use_target_weight=self.config.loss.use_target_weight)
