"""The hourglass's 2x2 max pool: nn.max_pool's values, and PyTorch's gradient (ties included)
without a select-and-scatter."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from okdhp_jax.models.pooling import max_pool2


def _tied(shape, dtype, seed=0):
  """Inputs rounded to a few values, so most windows hold ties (as ReLU zeros or bfloat16's
  coarse steps make them in a network)."""
  return jnp.asarray(np.round(np.random.default_rng(seed).normal(size=shape) * 0.7), dtype)


def _flax_pool(x):
  return nn.max_pool(x, (2, 2), strides=(2, 2))


@pytest.mark.parametrize('dtype', ['float32', 'bfloat16'])
def test_values_and_gradient_are_nn_max_pools(dtype):
  x = _tied((2, 8, 6, 3), dtype)
  dy = jnp.asarray(np.random.default_rng(1).normal(size=(2, 4, 3, 3)), dtype)
  np.testing.assert_array_equal(max_pool2(x), _flax_pool(x))
  ours = jax.vjp(max_pool2, x)[1](dy)[0]
  np.testing.assert_array_equal(ours, jax.vjp(_flax_pool, x)[1](dy)[0])
  # Every window passes its whole cotangent to one position.
  assert int((ours != 0).sum()) == int((dy != 0).sum())


def test_gradient_is_pytorchs_with_ties():
  torch = pytest.importorskip('torch')
  x, dy = _tied((2, 8, 6, 3), 'float32', seed=2), np.random.default_rng(3).normal(
      size=(2, 4, 3, 3)).astype(np.float32)
  ours = jax.vjp(max_pool2, x)[1](jnp.asarray(dy))[0]
  nchw = torch.tensor(np.asarray(x).transpose(0, 3, 1, 2), requires_grad=True)
  torch.nn.functional.max_pool2d(nchw, 2, stride=2).backward(
      torch.tensor(dy.transpose(0, 3, 1, 2)))
  assert int((np.asarray(x) == 0).sum()) > 50  # the ties are there
  np.testing.assert_array_equal(ours, nchw.grad.numpy().transpose(0, 2, 3, 1))


def test_odd_sizes_drop_the_last_row_and_column_as_pytorch():
  x = _tied((1, 5, 7, 2), 'float32')
  dy = jnp.ones((1, 2, 3, 2))
  assert max_pool2(x).shape == (1, 2, 3, 2)
  np.testing.assert_array_equal(max_pool2(x), _flax_pool(x))
  np.testing.assert_array_equal(jax.vjp(max_pool2, x)[1](dy)[0],
                                jax.vjp(_flax_pool, x)[1](dy)[0])


def test_the_gradient_has_no_select_and_scatter():
  """What XLA's CPU backend expands into iotas, reduce-windows and a scatter."""
  x = _tied((2, 8, 8, 4), 'float32')
  grad = jax.grad(lambda x: max_pool2(x).sum())
  assert 'select_and_scatter' not in str(jax.make_jaxpr(grad)(x))
  assert 'select_and_scatter' in str(jax.make_jaxpr(jax.grad(lambda x: _flax_pool(x).sum()))(x))
  # Without a gradient (inference, exports) it is a plain max pool: TFLite's MAX_POOL_2D.
  assert 'reduce_window_max' in str(jax.make_jaxpr(max_pool2)(x))
