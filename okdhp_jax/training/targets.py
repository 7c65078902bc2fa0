"""Gaussian heatmap targets, rendered on device inside the train step.

Convention (HRNet / the released OKDHP code): for joint (x, y) in input
pixels, the heatmap centre is mu = int(x / stride + 0.5) (truncation toward zero, as Python's
int); an unnormalised Gaussian (peak 1) of standard deviation `sigma` fills a square window of
radius 3 sigma (13x13 for sigma 2) clipped to the map; the target weight is 0 when the joint is
invisible or the window lies entirely outside the map, and the map is then all zero.

The window is separable (a product of a row and a column profile), so a whole batch renders as
two small broadcasts with no scatter and no Python loop.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp


def _window_profile(mu: jax.Array, size: int, sigma: float) -> tuple[jax.Array, jax.Array]:
  """1-D Gaussian profile of HRNet's window along one axis.

  Args:
    mu: [batch, joints] integer-valued window centre on this axis (float array).
    size: heatmap extent on this axis.
    sigma: Gaussian standard deviation in heatmap pixels.

  Returns:
    profile [batch, joints, size] (0 outside the window) and `outside` [batch, joints] bool,
    True when the window misses the map on this axis.
  """
  radius = 3.0 * sigma
  window_centre = math.floor((2.0 * radius + 1.0) / 2.0)  # HRNet: x0 = size // 2.
  upper_left = jnp.trunc(mu - radius)
  bottom_right = jnp.trunc(mu + radius + 1.0)
  pixels = jnp.arange(size, dtype=jnp.float32)[None, None, :]
  inside = (pixels >= upper_left[..., None]) & (pixels < bottom_right[..., None])
  offset = pixels - upper_left[..., None] - window_centre
  profile = jnp.where(inside, jnp.exp(-offset**2 / (2.0 * sigma**2)), 0.0)
  outside = (upper_left >= size) | (bottom_right < 0)
  return profile, outside


def render_heatmaps(
    joints: jax.Array,
    joints_vis: jax.Array,
    *,
    input_size: tuple[int, int],
    heatmap_size: tuple[int, int],
    sigma: float,
) -> tuple[jax.Array, jax.Array]:
  """Renders Gaussian heatmaps and target weights.

  Args:
    joints: [batch, joints, 2] (x, y) in input pixels.
    joints_vis: [batch, joints] visibility in {0, 1}.
    input_size: (height, width) of the network input.
    heatmap_size: (height, width) of the heatmaps.
    sigma: Gaussian standard deviation in heatmap pixels.

  Returns:
    heatmaps [batch, height, width, joints] float32 and target_weight [batch, joints] float32.
  """
  joints = jnp.asarray(joints, jnp.float32)
  heat_h, heat_w = heatmap_size
  stride_x = input_size[1] / heat_w
  stride_y = input_size[0] / heat_h
  mu_x = jnp.trunc(joints[..., 0] / stride_x + 0.5)
  mu_y = jnp.trunc(joints[..., 1] / stride_y + 0.5)
  profile_x, outside_x = _window_profile(mu_x, heat_w, sigma)
  profile_y, outside_y = _window_profile(mu_y, heat_h, sigma)
  visible = jnp.asarray(joints_vis, jnp.float32) > 0.5
  target_weight = (visible & ~outside_x & ~outside_y).astype(jnp.float32)
  # [b, j, h, 1] * [b, j, 1, w] -> [b, h, w, j]
  heatmaps = profile_y[..., :, None] * profile_x[..., None, :] * target_weight[..., None, None]
  return jnp.transpose(heatmaps, (0, 2, 3, 1)), target_weight
