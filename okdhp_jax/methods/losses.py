"""Loss terms the training methods are built from (the released code's definitions).

  joints_mse    HRNet's JointsMSELoss against GT (or teacher) heatmaps.
  pixelwise_kl  OKDHP's pixel-wise distillation term.
  kd_ramp       OKDHP's warm-up of the distillation weight.

How they combine is each method's business (okdhp_jax/methods/).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

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
