"""BatchNorm that keeps PyTorch's running statistics.

Flax's `nn.BatchNorm` and PyTorch's `BatchNorm2d` normalise a training batch the same way (with
the biased batch variance), but update the running variance differently: Flax with the biased
variance, PyTorch with the unbiased one, var * n / (n - 1), n = values per channel. At the
hourglass's innermost 4x4 level and batch 16 the two drift apart by 0.4 % per update, so
weights moved between the two frameworks would evaluate differently. Flax has no switch for
this, hence this module. Its variables are named as Flax's (params scale/bias, batch_stats
mean/var), so checkpoints and the PyTorch import are unchanged.

The batch statistics are reduced over every axis but the last, of the rows the module sees.
The train step runs per device (okdhp_jax/training/step.py, under `shard_map`) and sets, with
`statistics_across(axis)`, the mesh axis over which those statistics are averaged: the data
axis for statistics of the global batch (SyncBatchNorm's), none for statistics of each
device's share (what the released code's DataParallel replicas compute). A context rather than
a module attribute, as Flax's `logical_axis_rules`: the choice belongs to the step, and every
network gets it without a field in each of its modules. Outside a step there is no axis.

The training-mode gradient is written out (`normalize_batch`) rather than left to autodiff:
the same values to float rounding, with 2 reductions per layer in the backward pass instead
of 8. OKDHP-HG4 has hundreds of BatchNorm layers, and small reductions are a large share of
its step on a GPU (docs/performance.md). For the same reason a GPU takes the statistics in
one pass over the input (the sum and the sum of squares about a per-channel value of the batch
itself, which keeps the variance exact to float32 rounding however large the mean), and each
direction's two sums as one reduction: on a large layer two kernels each way, where the two
passes took four and the backward's two sums three (`python -m okdhp_jax.tools.gpu_program`
counts them). Other platforms compute as before.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
from typing import Any, Iterator

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.ad_checkpoint import checkpoint_name

from okdhp_jax import sharding

# The name of a training-mode BatchNorm's batch statistics (mean, variance, 1/std): a
# `jax.checkpoint` policy that saves them recomputes the normalised output without reducing
# the input again (models/hourglass.py's `RematBottleneck`).
STATISTICS_NAME = 'batch_norm_statistics'

# PyTorch BatchNorm momentum 0.1 is Flax-style momentum 0.9 (weight of the old value).
MOMENTUM = 0.9
EPSILON = 1e-5

# The mesh axis training-mode statistics are averaged over (None: the rows of this device).
_STATISTICS_AXIS: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    'batch_norm_statistics_axis', default=None)


@contextlib.contextmanager
def statistics_across(axis_name: str | None) -> Iterator[None]:
  """Within it, training-mode BatchNorm averages its batch statistics (and their gradients)
  over the named mesh axis of the enclosing `shard_map`; None: over this device's rows only.

  Read when the network is traced, so it must enclose the `model.apply` a step traces.
  """
  token = _STATISTICS_AXIS.set(axis_name)
  try:
    yield
  finally:
    _STATISTICS_AXIS.reset(token)


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
    axis_name = _STATISTICS_AXIS.get()
    y, mean, var = normalize_batch(x, scale, bias, self.epsilon, self.dtype, axis_name)
    if not self.is_initializing():
      count = _count(x, axis_name)
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


def _count(x, axis_name) -> int:
  """Values per channel the statistics are taken over: this device's, times the axis size."""
  devices = 1 if axis_name is None else jax.lax.axis_size(axis_name)
  return x.size // x.shape[-1] * devices


def _batch_stats(x, scale, axis_name):
  """Per-channel mean and biased variance over every axis but the last (and over the devices
  of `axis_name`), in the stats dtype: one pass over `x` on a GPU, two elsewhere.

  A GPU pays per kernel: XLA splits a reduction over many rows into two kernels, so the two
  passes' two dependent reductions cost four, and one pass two (`_one_pass_stats`). XLA's CPU
  backend writes out the shifted input the one pass reduces twice, which costs more there
  than the second pass, so the CPU keeps the two passes (and so does a TPU, unmeasured).
  """
  return sharding.for_gpu(functools.partial(_one_pass_stats, axis_name=axis_name),
                          functools.partial(_two_pass_stats, axis_name=axis_name), x, scale)


def _two_pass_stats(x, scale, axis_name):
  wide = x.astype(_stats_dtype(x.dtype, scale.dtype))
  axes = tuple(range(x.ndim - 1))
  mean = _mean_across(jnp.mean(wide, axis=axes), axis_name)
  # Two passes, mean((x - mean)^2), as PyTorch computes it: the one-pass E[x^2] - E[x]^2
  # cancels badly when the mean is large, which makes gradients depend on the reduction
  # order, and so on the number of devices.
  return mean, _mean_across(jnp.mean(jnp.square(wide - mean), axis=axes), axis_name)


def _mean_across(value, axis_name):
  # Every device holds the same number of rows (the step checks the batch divides), so the
  # mean of the devices' means is the mean over all their rows.
  return value if axis_name is None else jax.lax.pmean(value, axis_name)


def _one_pass_stats(x, scale, axis_name):
  """`_batch_stats` from one reduction of two sums (`_two_sums`), of x - k and of its square,
  k the first row's value of each channel.

  The one-pass variance E[(x-k)^2] - E[x-k]^2 cancels only as far as k is from the mean, a
  few standard deviations for a value of the batch itself, where E[x^2] - E[x]^2 loses
  everything when the mean is large (at 1e3 standard deviations, over 10 % of the variance in
  float32; tests/test_batch_norm_one_pass.py). Across devices each device's k, mean distance
  from it and variance are gathered in one collective and combined exactly (the law of total
  variance; every device holds as many rows).
  """
  wide = x.astype(_stats_dtype(x.dtype, scale.dtype))
  axes = tuple(range(x.ndim - 1))
  shift = jax.lax.stop_gradient(wide[(0,) * len(axes)])
  centred = wide - shift
  sum_centred, sum_squares = _two_sums(centred, jnp.square(centred), axes)
  count = x.size // x.shape[-1]
  offset = sum_centred / count  # the mean's distance from k
  var = jnp.maximum(sum_squares / count - jnp.square(offset), 0)
  if axis_name is None:
    return shift + offset, var
  shifts, offsets, variances = jax.lax.all_gather(jnp.stack([shift, offset, var]), axis_name,
                                                  axis=1)
  # The devices' means as distances from the first device's k: small numbers, which keep
  # their precision where means near a large value would round to its float32 steps.
  distances = shifts - shifts[0] + offsets
  distance = jnp.mean(distances, axis=0)
  return shifts[0] + distance, jnp.mean(variances + jnp.square(distances - distance), axis=0)


def _two_sums(a, b, axes):
  """(sum of a, sum of b) over `axes`, a and b of one shape: on a GPU one variadic reduction
  (two kernels where two sums of many rows take three), elsewhere two sums. XLA's CPU backend
  accumulates a variadic reduction in one sequential loop (1e-5 relative error over 16k rows
  where `jnp.sum` has 1e-7)."""
  return sharding.for_gpu(functools.partial(_variadic_sums, axes=axes),
                          functools.partial(_separate_sums, axes=axes), a, b)


def _variadic_sums(a, b, axes):
  zero = jnp.zeros((), a.dtype)
  return jax.lax.reduce((a, b), (zero, zero), lambda x, y: (x[0] + y[0], x[1] + y[1]), axes)


def _separate_sums(a, b, axes):
  return jnp.sum(a, axis=axes), jnp.sum(b, axis=axes)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4, 5))
def normalize_batch(x, scale, bias, epsilon, dtype, axis_name=None):
  """Training-mode BatchNorm: `(y [..., C] in dtype, batch mean [C], biased variance [C])`.

  `axis_name`: a mesh axis of the enclosing `shard_map` over which the statistics are
  averaged (statistics of the global batch); None: of the rows given.

  Its gradient is written out (the textbook BatchNorm backward, as PyTorch's and cuDNN's):
  two reductions per layer, sum(dy) and sum(dy * x_hat), which also give the scale's and the
  bias's gradients. Differentiating the forward pass gives about 8 reductions per layer
  (through both passes of the variance).
  """
  mean, var = _batch_stats(x, scale, axis_name)
  return _normalize(x, mean, var, scale, bias, epsilon, dtype), mean, var


def _normalize_batch_fwd(x, scale, bias, epsilon, dtype, axis_name):
  mean, var = (checkpoint_name(v, STATISTICS_NAME) for v in _batch_stats(x, scale, axis_name))
  inv_std = checkpoint_name(jax.lax.rsqrt(var + epsilon), STATISTICS_NAME)
  return (_normalize(x, mean, var, scale, bias, epsilon, dtype), mean, var), (
      x, scale, bias, mean, inv_std)


def _normalize_batch_bwd(epsilon, dtype, axis_name, residuals, cotangents):
  del epsilon, dtype
  x, scale, bias, mean, inv_std = residuals
  dy, dmean, dvar = cotangents
  stats_dtype = mean.dtype
  axes = tuple(range(x.ndim - 1))
  count = _count(x, axis_name)
  centred = x.astype(stats_dtype) - mean
  x_hat = centred * inv_std
  dy = dy.astype(stats_dtype)
  sum_dy, sum_dy_x_hat = _two_sums(dy, dy * x_hat, axes)
  # The scale's and bias's gradients are this device's sums (the step averages parameter
  # gradients over the devices); dx needs the sums over every row the statistics came from,
  # in one collective. The cotangents of the shared mean and variance add up over devices.
  total_dy, total_dy_x_hat, dmean, dvar = (
      (sum_dy, sum_dy_x_hat, dmean, dvar) if axis_name is None else
      jax.lax.psum((sum_dy, sum_dy_x_hat, dmean, dvar), axis_name))
  # y = x_hat * scale + bias, x_hat = (x - mean(x)) / sqrt(var(x) + eps):
  # dx = scale / std * (dy - mean(dy) - x_hat * mean(dy * x_hat)). The batch mean and variance
  # are outputs too (for the running averages); their cotangents, zero in training, add
  # dmean / n and dvar * 2 (x - mean) / n.
  dx = (scale.astype(stats_dtype) * inv_std) * (
      dy - total_dy / count - x_hat * (total_dy_x_hat / count))
  dx = dx + dmean / count + dvar * (2.0 / count) * centred
  return (dx.astype(x.dtype), sum_dy_x_hat.astype(scale.dtype), sum_dy.astype(bias.dtype))


normalize_batch.defvjp(_normalize_batch_fwd, _normalize_batch_bwd)
