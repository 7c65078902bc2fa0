"""OKDHP (Li et al., ICCV 2021): one-stage online distillation from an FAU-built ensemble.

  total = sum_s MSE(stack_s, GT) + ensemble_weight * MSE(ensemble, GT)
          + kd_weight * ramp(epoch) * sum_s KL(p_ensemble || p_stack_s)

over every stack output s (shared and private). The ensemble (the FAU-weighted sum of the
branches' last heatmaps, models/fau.py) is the teacher. A network with one branch and no FAU
has no teacher: its ensemble and KD terms are 0, which is the plain baseline.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections

from okdhp_jax.methods.base import Method, Metrics, Targets, register
from okdhp_jax.models.outputs import PoseOutputs
from okdhp_jax.precision import at_least_float32
from okdhp_jax.methods.losses import joints_mse, joints_mse_sum, kd_ramp, pixelwise_kl_sum


def has_teacher(outputs: PoseOutputs) -> bool:
  """An ensemble teacher exists when there are several branches or an FAU."""
  return outputs.num_branches > 1 or outputs.fau_weights is not None


def okdhp_loss(
    outputs: PoseOutputs,
    target: jax.Array,
    target_weight: jax.Array,
    *,
    loss_config: ml_collections.ConfigDict,
    epoch: jax.Array | float,
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """The total OKDHP loss and its parts.

  Args:
    outputs: the network's PoseOutputs (training mode).
    target: [batch, height, width, joints] GT heatmaps.
    target_weight: [batch, joints].
    loss_config: config.loss (use_target_weight, ensemble_weight, kd_weight, kd_temperature,
      kd_ramp_epochs, kd_ramp_integer_epoch, stop_gradient_teacher).
    epoch: float epoch (step / steps_per_epoch), drives the KD ramp (its integer part when
      kd_ramp_integer_epoch is set, as the released code, which updates the weight per epoch).

  Returns:
    (total, metrics) with scalar metrics: loss, mse_stacks (sum over stacks), mse/branch_b
    (each branch's last stack), mse_ensemble, kl (sum over stacks), kd_ramp,
    branch_disagreement (several branches), and fau_weight/branch_b (mean FAU weight) when the
    network has an FAU.
  """
  if not loss_config.use_target_weight:
    target_weight = jnp.ones_like(target_weight)
  stacks = outputs.all_stack_heatmaps
  mse_stacks = joints_mse_sum(stacks, target, target_weight)
  zero = jnp.zeros((), jnp.float32)
  ramp_epoch = jnp.floor(epoch) if loss_config.get('kd_ramp_integer_epoch') else epoch
  ramp = kd_ramp(ramp_epoch, loss_config.kd_ramp_epochs)

  mse_ensemble, kl = zero, zero
  if has_teacher(outputs):
    mse_ensemble = joints_mse(outputs.ensemble, target, target_weight)
    if loss_config.kd_weight:
      teacher = outputs.ensemble
      if loss_config.stop_gradient_teacher:
        teacher = jax.lax.stop_gradient(teacher)
      kl = pixelwise_kl_sum(stacks, teacher, target_weight, loss_config.kd_temperature)

  total = (mse_stacks + loss_config.ensemble_weight * mse_ensemble
           + loss_config.kd_weight * ramp * kl)

  metrics = {'loss': total, 'mse_stacks': mse_stacks, 'mse_ensemble': mse_ensemble,
             'kl': kl, 'kd_ramp': ramp}
  for b, heatmaps in enumerate(outputs.branch_heatmaps):
    metrics[f'mse/branch_{b}'] = joints_mse(heatmaps, target, target_weight)
  if outputs.num_branches > 1:
    metrics['branch_disagreement'] = branch_disagreement(outputs.branch_heatmaps)
  if outputs.fau_weights is not None:
    mean_weight = jnp.mean(at_least_float32(outputs.fau_weights), axis=(0, 2))
    for b in range(outputs.num_branches):
      metrics[f'fau_weight/branch_{b}'] = mean_weight[b]
  return total, metrics


def branch_disagreement(branch_heatmaps) -> jax.Array:
  """Mean squared difference between the branches' heatmaps, averaged over branch pairs.

  Diversity among the students is what the ensemble teacher gains from; with identical inputs
  to identically built branches only their initialisation sets them apart, so this scalar
  (TensorBoard: train/branch_disagreement) shows whether they stay apart. Logged, not trained.
  """
  maps = [jax.lax.stop_gradient(at_least_float32(h)) for h in branch_heatmaps]
  pairs = [(a, b) for a in range(len(maps)) for b in range(a + 1, len(maps))]
  # The pairs' squares summed before the mean: one reduction, not one per pair.
  return jnp.mean(sum(jnp.square(maps[a] - maps[b]) for a, b in pairs)) / len(pairs)


@register('okdhp')
class OKDHP(Method):
  """OKDHP's loss on a multi-branch network; the plain baseline on a one-branch one."""

  config_section = 'loss'

  @classmethod
  def default_config(cls) -> ml_collections.ConfigDict:
    """config.loss: the paper's weights (FPD reads use_target_weight too)."""
    loss = ml_collections.ConfigDict()
    loss.use_target_weight = True
    loss.ensemble_weight = 1.0
    loss.kd_weight = 2.0
    loss.kd_temperature = 1.0
    loss.kd_ramp_epochs = 90.0      # ramp = exp(-5 (1 - min(e, L)/L)^2)
    # e = step / steps_per_epoch (smooth). True: e = the integer epoch, as the released code
    # (the ramp then steps once per epoch; the smooth one is up to 12 % higher late in epoch 0).
    loss.kd_ramp_integer_epoch = False
    loss.stop_gradient_teacher = False  # the released code lets gradients reach the teacher.
    return loss

  def loss(self, outputs: PoseOutputs, targets: Targets, *, images: jax.Array,
           epoch: jax.Array, frozen: None) -> tuple[jax.Array, Metrics]:
    del images, frozen  # the teacher is built from the outputs themselves.
    return okdhp_loss(outputs, targets.heatmaps, targets.weight, loss_config=self.config.loss,
                      epoch=epoch)
