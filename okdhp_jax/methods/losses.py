"""Loss terms the training methods are built from (the released code's definitions).

  joints_mse    HRNet's JointsMSELoss against GT (or teacher) heatmaps.
  pixelwise_kl  OKDHP's pixel-wise distillation term.
  kd_ramp       OKDHP's warm-up of the distillation weight.

`joints_mse_sum` and `pixelwise_kl_sum` are those terms summed over several predictions
(every stack of a network) with one reduction each: summed term by term, every term is a
reduction of its own, and a GPU launches each (OKDHP-HG4's loss with its gradient, batch 64 on
the H100 description of tools/gpu_program.py: 47 reduction kernels term by term, 25 so).

How they combine is each method's business (okdhp_jax/methods/).
"""

from __future__ import annotations

from typing import Sequence

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
  return joints_mse_sum([pred], target, target_weight)


def joints_mse_sum(preds: Sequence[jax.Array], target: jax.Array,
                   target_weight: jax.Array) -> jax.Array:
  """sum(joints_mse(p, target, target_weight) for p in preds) as one mean over the pixels of
  the predictions' summed squared errors (all of one shape)."""
  weight = at_least_float32(target_weight[:, None, None, :])
  target = at_least_float32(target)
  squares = sum(jnp.square((at_least_float32(p) - target) * weight) for p in preds)
  return 0.5 * jnp.mean(squares)


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
  return pixelwise_kl_sum([pred], teacher, target_weight, temperature)


def pixelwise_kl_sum(preds: Sequence[jax.Array], teacher: jax.Array, target_weight: jax.Array,
                     temperature: float = 1.0) -> jax.Array:
  """sum(pixelwise_kl(p, teacher, ...) for p in preds) as one sum over the pixels of
  p_teacher * sum_p (log p_teacher - log p_pred): the predictions' log-ratios are added
  pixel by pixel, then weighted by the teacher once."""
  batch, height, width, joints = teacher.shape
  weight = at_least_float32(target_weight[:, None, :])

  def log_p(maps):
    maps = at_least_float32(maps).reshape(batch, height * width, joints) * weight
    return jax.nn.log_softmax(maps / temperature, axis=1)

  log_p_teacher = log_p(teacher)
  log_ratios = sum(log_p_teacher - log_p(pred) for pred in preds)
  kl = jnp.sum(jnp.exp(log_p_teacher) * log_ratios)
  return kl * temperature**2 / (batch * height * width)


def kd_ramp(epoch: jax.Array | float, ramp_epochs: float) -> jax.Array:
  """exp(-5 (1 - min(e, L) / L)^2): exp(-5) at epoch 0, 1 from epoch L on (1 when L <= 0)."""
  if ramp_epochs <= 0:
    return jnp.ones((), jnp.float32)
  progress = jnp.minimum(jnp.asarray(epoch, jnp.float32), ramp_epochs) / ramp_epochs
  return jnp.exp(-5.0 * jnp.square(1.0 - progress))
