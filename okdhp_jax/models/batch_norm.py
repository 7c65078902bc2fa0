"""BatchNorm that keeps PyTorch's running statistics.

Flax's `nn.BatchNorm` and PyTorch's `BatchNorm2d` normalise a training batch the same way (with
the biased batch variance), but update the running variance differently: Flax with the biased
variance, PyTorch with the unbiased one, var * n / (n - 1), n = values per channel. At the
hourglass's innermost 4x4 level and batch 16 the two drift apart by 0.4 % per update, so
weights moved between the two frameworks would evaluate differently. Flax has no switch for
this, hence this module. Its variables are named as Flax's (params scale/bias, batch_stats
mean/var), so checkpoints and the PyTorch import are unchanged.

The batch statistics are reduced over every axis but the last. Under `jax.jit` with a
batch-sharded input they are global over the devices (as SyncBatchNorm would be); no axis
name is needed because the project has no `pmap`.

The training-mode gradient is written out (`normalize_batch`) rather than left to autodiff:
the same values to float rounding, with 2 reductions per layer in the backward pass instead
of 8. OKDHP-HG4 has hundreds of BatchNorm layers, and small reductions are a large share of
its step on a GPU (docs/performance.md).
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

# PyTorch BatchNorm momentum 0.1 is Flax-style momentum 0.9 (weight of the old value).
MOMENTUM = 0.9
EPSILON = 1e-5


class BatchNorm(nn.Module):
  """`x [..., C] -> [..., C]` (dtype `dtype`); statistics and running averages in float32
  (float64 when the input or the parameters are float64).

  Attributes:
    use_running_average: eval mode (normalise with the running statistics, update nothing).
    momentum: weight of the old running value (Flax convention: 0.9 is PyTorch's 0.1).
    epsilon: added to the variance.
  """

  use_running_average: bool = False
  momentum: float = MOMENTUM
  epsilon: float = EPSILON
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    channels = x.shape[-1]
    stats_dtype = _stats_dtype(x.dtype, self.param_dtype)
    running_mean = self.variable('batch_stats', 'mean', jnp.zeros, (channels,), stats_dtype)
    running_var = self.variable('batch_stats', 'var', jnp.ones, (channels,), stats_dtype)
    scale = self.param('scale', nn.initializers.ones, (channels,), self.param_dtype)
    bias = self.param('bias', nn.initializers.zeros, (channels,), self.param_dtype)

    if self.use_running_average:
      return _normalize(x, running_mean.value, running_var.value, scale, bias, self.epsilon,
                        self.dtype)
    y, mean, var = normalize_batch(x, scale, bias, self.epsilon, self.dtype)
    if not self.is_initializing():
      count = x.size // channels
      unbiased = var * (count / max(count - 1, 1))
      running_mean.value = self.momentum * running_mean.value + (1 - self.momentum) * mean
      running_var.value = self.momentum * running_var.value + (1 - self.momentum) * unbiased
    return y


def _stats_dtype(x_dtype, param_dtype):
  """At least float32 (float64 in a float64 network for numerical checks)."""
  return jnp.promote_types(jnp.float32, jnp.promote_types(x_dtype, param_dtype))


def _normalize(x, mean, var, scale, bias, epsilon, dtype):
  # Same order of operations as Flax's BatchNorm: (x - mean) * (rsqrt(var + eps) * scale) + b.
  stats_dtype = _stats_dtype(x.dtype, scale.dtype)
  multiplier = jax.lax.rsqrt(var + epsilon) * scale.astype(stats_dtype)
  return ((x - mean) * multiplier + bias.astype(stats_dtype)).astype(dtype)


def _batch_stats(x, scale):
  """Per-channel mean and biased variance over every axis but the last, in the stats dtype."""
  wide = x.astype(_stats_dtype(x.dtype, scale.dtype))
  axes = tuple(range(x.ndim - 1))
  mean = jnp.mean(wide, axis=axes)
  # Two passes, mean((x - mean)^2), as PyTorch computes it: the one-pass E[x^2] - E[x]^2
  # cancels badly when the mean is large, which makes gradients depend on the reduction
  # order, and so on the number of devices.
  return mean, jnp.mean(jnp.square(wide - mean), axis=axes)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def normalize_batch(x, scale, bias, epsilon, dtype):
  """Training-mode BatchNorm: `(y [..., C] in dtype, batch mean [C], biased variance [C])`.

  Its gradient is written out (the textbook BatchNorm backward, as PyTorch's and cuDNN's):
  two reductions per layer, sum(dy) and sum(dy * x_hat), which also give the scale's and the
  bias's gradients. Differentiating the forward pass gives about 8 reductions per layer
  (through both passes of the variance).
  """
  mean, var = _batch_stats(x, scale)
  return _normalize(x, mean, var, scale, bias, epsilon, dtype), mean, var


def _normalize_batch_fwd(x, scale, bias, epsilon, dtype):
  mean, var = _batch_stats(x, scale)
  inv_std = jax.lax.rsqrt(var + epsilon)
  return (_normalize(x, mean, var, scale, bias, epsilon, dtype), mean, var), (
      x, scale, bias, mean, inv_std)


def _normalize_batch_bwd(epsilon, dtype, residuals, cotangents):
  del epsilon, dtype
  x, scale, bias, mean, inv_std = residuals
  dy, dmean, dvar = cotangents
  stats_dtype = mean.dtype
  axes = tuple(range(x.ndim - 1))
  count = x.size // x.shape[-1]
  centred = x.astype(stats_dtype) - mean
  x_hat = centred * inv_std
  dy = dy.astype(stats_dtype)
  sum_dy = jnp.sum(dy, axis=axes)
  sum_dy_x_hat = jnp.sum(dy * x_hat, axis=axes)
  # y = x_hat * scale + bias, x_hat = (x - mean(x)) / sqrt(var(x) + eps):
  # dx = scale / std * (dy - mean(dy) - x_hat * mean(dy * x_hat)). The batch mean and variance
  # are outputs too (for the running averages); their cotangents, zero in training, add
  # dmean / n and dvar * 2 (x - mean) / n.
  dx = (scale.astype(stats_dtype) * inv_std) * (
      dy - sum_dy / count - x_hat * (sum_dy_x_hat / count))
  dx = dx + dmean / count + dvar * (2.0 / count) * centred
  return (dx.astype(x.dtype), sum_dy_x_hat.astype(scale.dtype), sum_dy.astype(bias.dtype))


normalize_batch.defvjp(_normalize_batch_fwd, _normalize_batch_bwd)
