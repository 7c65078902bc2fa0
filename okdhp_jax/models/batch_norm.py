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
"""

from __future__ import annotations

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
    axes = tuple(range(x.ndim - 1))
    # Statistics in at least float32 (float64 in a float64 network for numerical checks).
    stats_dtype = jnp.promote_types(jnp.float32, jnp.promote_types(x.dtype, self.param_dtype))
    running_mean = self.variable('batch_stats', 'mean', jnp.zeros, (channels,), stats_dtype)
    running_var = self.variable('batch_stats', 'var', jnp.ones, (channels,), stats_dtype)
    scale = self.param('scale', nn.initializers.ones, (channels,), self.param_dtype)
    bias = self.param('bias', nn.initializers.zeros, (channels,), self.param_dtype)

    if self.use_running_average:
      mean, var = running_mean.value, running_var.value
    else:
      wide = x.astype(stats_dtype)
      mean = jnp.mean(wide, axis=axes)
      # Two passes, mean((x - mean)^2), as PyTorch computes it: the one-pass E[x^2] - E[x]^2
      # cancels badly when the mean is large, which makes gradients depend on the reduction
      # order (1e-3 relative between 1 and 8 devices on the stem).
      var = jnp.mean(jnp.square(wide - mean), axis=axes)
      if not self.is_initializing():
        count = x.size // channels
        unbiased = var * (count / max(count - 1, 1))
        running_mean.value = self.momentum * running_mean.value + (1 - self.momentum) * mean
        running_var.value = self.momentum * running_var.value + (1 - self.momentum) * unbiased

    # Same order of operations as Flax's BatchNorm: (x - mean) * (rsqrt(var + eps) * scale) + b.
    multiplier = jax.lax.rsqrt(var + self.epsilon) * scale.astype(stats_dtype)
    y = (x - mean) * multiplier + bias.astype(stats_dtype)
    return y.astype(self.dtype)
