"""BatchNorm's one-pass batch statistics, a GPU's (okdhp_jax/models/batch_norm.py), where one
pass goes wrong, a mean 1e3 times the spread, against float64 two-pass ones: on one device and
across devices (a vmapped axis stands for the mesh's); a GPU's program gets them."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from okdhp_jax.models import batch_norm

from traced_platforms import one_device_mesh

# pylint: disable=protected-access

CHANNELS = 32
# float32 holds 1e3 to 6.1e-5: the mean cannot be closer than that.
MEAN_ATOL = 2e-4
VAR_RTOL = 2e-6


def _data(shape, mean, seed=0):
  return np.random.default_rng(seed).normal(mean, 1.0, shape).astype(np.float32)


def _float64_stats(x):
  """Mean and biased variance of every row of `x` (channels last), two passes in float64."""
  rows = x.reshape(-1, x.shape[-1]).astype(np.float64)
  return rows.mean(0), rows.var(0)


def _one_pass(x, axis_name=None):
  return batch_norm._one_pass_stats(x, jnp.ones(CHANNELS), axis_name)


@pytest.mark.parametrize('mean', [1e3, 0.0])
def test_one_pass_holds_on_a_large_mean(mean):
  """16k rows per channel in float32: the one-pass variance within 2e-6 of the float64
  two-pass one, as the two passes (the CPU's) are, where E[x^2] - E[x]^2 misses it by more
  than 10 % at a mean of 1e3."""
  x = _data((64, 16, 16, CHANNELS), mean)
  want_mean, want_var = _float64_stats(x)
  two_pass = jax.jit(lambda x: batch_norm._two_pass_stats(x, jnp.ones(CHANNELS), None))
  for got_mean, got_var in (jax.jit(_one_pass)(x), two_pass(x)):
    np.testing.assert_allclose(got_mean, want_mean, rtol=0, atol=MEAN_ATOL)
    np.testing.assert_allclose(got_var, want_var, rtol=VAR_RTOL)
  if mean:
    wide = jnp.asarray(x).reshape(-1, CHANNELS)
    naive = jnp.mean(wide * wide, 0) - jnp.square(jnp.mean(wide, 0))
    assert np.max(np.abs(naive - want_var) / want_var) > 0.1


def test_one_pass_across_devices_is_the_global_batchs():
  """8 devices of 8x8x8 rows, their means apart by more than the spread: the gathered
  statistics are those of all the rows, the same on every device."""
  devices = 8
  x = _data((devices, 8, 8, 8, CHANNELS), 1e3, seed=1)
  x += np.arange(devices, dtype=np.float32)[:, None, None, None, None] * 3.0
  got_mean, got_var = jax.jit(jax.vmap(lambda x: _one_pass(x, 'data'), axis_name='data'))(x)
  want_mean, want_var = _float64_stats(x)
  for device in range(devices):
    np.testing.assert_allclose(got_mean[device], want_mean, rtol=0, atol=MEAN_ATOL)
    np.testing.assert_allclose(got_var[device], want_var, rtol=VAR_RTOL)


def test_a_gpu_program_reduces_once_per_direction():
  """Traced for a GPU, a layer's forward and backward take one reduction each (the variadic
  sums of `_two_sums`); for the CPU two each, the two passes and the two sums of before."""
  x = jnp.zeros((4, 8, 8, CHANNELS))

  def forward_and_backward(x):
    def loss(x):
      y, _, _ = batch_norm.normalize_batch(x, jnp.ones(CHANNELS), jnp.zeros(CHANNELS),
                                           batch_norm.EPSILON, jnp.float32)
      return jnp.sum(y ** 2)
    return jax.grad(loss)(x)

  on_cpu = str(jax.make_jaxpr(forward_and_backward)(x))
  with jax.sharding.use_abstract_mesh(one_device_mesh('gpu')):
    on_gpu = str(jax.make_jaxpr(forward_and_backward)(x))
  # + the loss's own sum
  assert (on_cpu.count('reduce_sum'), on_cpu.count('reduce[')) == (2 + 2 + 1, 0)
  assert (on_gpu.count('reduce_sum'), on_gpu.count('reduce[')) == (1, 1 + 1)

  a = jnp.asarray(_data((4, 8, 8, CHANNELS), 3.0))
  for variadic, separate in zip(batch_norm._variadic_sums(a, a * a, (0, 1, 2)),
                                batch_norm._separate_sums(a, a * a, (0, 1, 2))):
    np.testing.assert_allclose(variadic, separate, rtol=1e-5)
