"""2x2, stride-2 max pooling whose gradient is PyTorch's, without XLA's select-and-scatter.

`nn.max_pool`'s gradient is a select-and-scatter, which XLA's CPU backend expands into a
reduce-window over (value, index) tuples fed by one iota per dimension, then a scatter, a
costly part of HG4's train step on a CPU (docs/performance.md). The windows here do not
overlap, so the gradient is written out on a reshape of the input: each window's cotangent
goes to the first of its largest inputs in row-major order, the position PyTorch's
`max_pool2d` (and select-and-scatter) route it to. Without a gradient the
pass is `nn.max_pool`, so exported graphs keep a plain max pool (TFLite's MAX_POOL_2D).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp


def max_pool2(x: jax.Array) -> jax.Array:
  """`x [B, H, W, C] -> [B, H // 2, W // 2, C]`, the max of each 2x2 window (stride 2).

  Odd H or W (the last row or column is dropped, as PyTorch does) keep `nn.max_pool`'s own
  gradient.
  """
  if x.ndim != 4 or x.shape[1] % 2 or x.shape[2] % 2:
    return _flax_max_pool2(x)
  return _max_pool2_even(x)


def _flax_max_pool2(x: jax.Array) -> jax.Array:
  return nn.max_pool(x, (2, 2), strides=(2, 2))


@jax.custom_vjp
def _max_pool2_even(x: jax.Array) -> jax.Array:
  return _flax_max_pool2(x)


def _windows(x: jax.Array) -> jax.Array:
  """[B, H, W, C] -> [B, H/2, 2, W/2, 2, C]: axis 2 is the row in the window, 4 the column."""
  b, h, w, c = x.shape
  return x.reshape(b, h // 2, 2, w // 2, 2, c)


def _max_pool2_fwd(x):
  # Under differentiation (training) the max of the reshaped windows: the same values as
  # nn.max_pool (a max is exact), and a reduction XLA's CPU backend runs faster than its
  # reduce-window.
  y = jnp.max(_windows(x), axis=(2, 4))
  return y, (x, y)


def _max_pool2_bwd(residuals, dy):
  x, y = residuals
  windows = _windows(x)
  # The first maximal position in row-major window order takes the whole cotangent.
  taken = jnp.zeros(y.shape, bool)
  rows = []
  for row in range(2):
    columns = []
    for column in range(2):
      first = (windows[:, :, row, :, column, :] == y) & ~taken
      if (row, column) == (1, 1):
        first = ~taken  # NaN windows (no position equals the max) still route it somewhere
      taken = taken | first
      columns.append(jnp.where(first, dy, jnp.zeros_like(dy)))
    rows.append(jnp.stack(columns, axis=3))
  return (jnp.stack(rows, axis=2).reshape(x.shape),)


_max_pool2_even.defvjp(_max_pool2_fwd, _max_pool2_bwd)
