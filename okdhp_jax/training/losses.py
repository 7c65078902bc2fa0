"""The OKDHP objective (the released code's losses), in one place.

  total = sum_s MSE(stack_s, GT) + ensemble_weight * MSE(ensemble, GT)
          + kd_weight * ramp(epoch) * sum_s KL(p_ensemble || p_stack_s)

over every stack output s (shared and private). The ensemble (the FAU-weighted sum of the
branches' last heatmaps) is the teacher. A network with one branch and no FAU has no teacher:
its ensemble and KD terms are 0, which is the plain baseline.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections

from okdhp_jax.models.outputs import PoseOutputs
from okdhp_jax.precision import at_least_float32


def joints_mse(pred: jax.Array, target: jax.Array, target_weight: jax.Array) -> jax.Array:
  """HRNet's JointsMSELoss: per joint 0.5 * mean((pred * w - gt * w)^2), averaged over joints.

  Every joint map has the same number of pixels, so the average of per-joint means is the
  mean over everything.

  Args:
    pred, target: [batch, height, width, joints].
    target_weight: [batch, joints]; ones to ignore visibility.
  """
  weight = at_least_float32(target_weight[:, None, None, :])
  diff = (at_least_float32(pred) - at_least_float32(target)) * weight
  return 0.5 * jnp.mean(jnp.square(diff))


def pixelwise_kl(pred: jax.Array, teacher: jax.Array, target_weight: jax.Array,
                 temperature: float = 1.0) -> jax.Array:
  """KL(p_teacher || p_pred), p = softmax over the height*width pixels of each joint map.

  Maps are multiplied by the target weight first (an invisible joint becomes two all-zero
  maps, two uniform distributions, KL 0). Summed over pixels, joints and batch and divided by
  batch * height * width (not by joints), as the released code does. With a temperature T the
  maps are divided by T and the result multiplied by T^2 (Hinton's convention, so gradient
  magnitudes do not shrink with T); at the default T = 1 neither has any effect.

  Args:
    pred, teacher: [batch, height, width, joints].
    target_weight: [batch, joints].
  """
  batch, height, width, joints = pred.shape
  weight = at_least_float32(target_weight[:, None, :])
  pred = at_least_float32(pred).reshape(batch, height * width, joints) * weight
  teacher = at_least_float32(teacher).reshape(batch, height * width, joints) * weight
  log_p_pred = jax.nn.log_softmax(pred / temperature, axis=1)
  log_p_teacher = jax.nn.log_softmax(teacher / temperature, axis=1)
  kl = jnp.sum(jnp.exp(log_p_teacher) * (log_p_teacher - log_p_pred))
  return kl * temperature**2 / (batch * height * width)


def kd_ramp(epoch: jax.Array | float, ramp_epochs: float) -> jax.Array:
  """exp(-5 (1 - min(e, L) / L)^2): exp(-5) at epoch 0, 1 from epoch L on (1 when L <= 0)."""
  if ramp_epochs <= 0:
    return jnp.ones((), jnp.float32)
  progress = jnp.minimum(jnp.asarray(epoch, jnp.float32), ramp_epochs) / ramp_epochs
  return jnp.exp(-5.0 * jnp.square(1.0 - progress))


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
      kd_ramp_epochs, stop_gradient_teacher).
    epoch: float epoch (step / steps_per_epoch), drives the KD ramp.

  Returns:
    (total, metrics) with scalar metrics: loss, mse_stacks (sum over stacks), mse/branch_b
    (each branch's last stack), mse_ensemble, kl (sum over stacks), kd_ramp, and
    fau_weight/branch_b (mean FAU weight) when the network has an FAU.
  """
  if not loss_config.use_target_weight:
    target_weight = jnp.ones_like(target_weight)
  stacks = outputs.all_stack_heatmaps
  mse_stacks = sum(joints_mse(h, target, target_weight) for h in stacks)
  zero = jnp.zeros((), jnp.float32)
  ramp = kd_ramp(epoch, loss_config.kd_ramp_epochs)

  mse_ensemble, kl = zero, zero
  if has_teacher(outputs):
    mse_ensemble = joints_mse(outputs.ensemble, target, target_weight)
    if loss_config.kd_weight:
      teacher = outputs.ensemble
      if loss_config.stop_gradient_teacher:
        teacher = jax.lax.stop_gradient(teacher)
      kl = sum(pixelwise_kl(h, teacher, target_weight, loss_config.kd_temperature)
               for h in stacks)

  total = (mse_stacks + loss_config.ensemble_weight * mse_ensemble
           + loss_config.kd_weight * ramp * kl)

  metrics = {'loss': total, 'mse_stacks': mse_stacks, 'mse_ensemble': mse_ensemble,
             'kl': kl, 'kd_ramp': ramp}
  for b, heatmaps in enumerate(outputs.branch_heatmaps):
    metrics[f'mse/branch_{b}'] = joints_mse(heatmaps, target, target_weight)
  if outputs.fau_weights is not None:
    mean_weight = jnp.mean(at_least_float32(outputs.fau_weights), axis=(0, 2))
    for b in range(outputs.num_branches):
      metrics[f'fau_weight/branch_{b}'] = mean_weight[b]
  return total, metrics
