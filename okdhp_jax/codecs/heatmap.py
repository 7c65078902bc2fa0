"""The heatmap codec: joints <-> Gaussian heatmaps, both directions in one place (as mmpose's).

Encoding (JAX, on the device, inside the train step). Convention of HRNet and the released
OKDHP code: for joint (x, y) in input pixels the heatmap centre is mu = int(x / stride + 0.5)
(truncation toward zero, as Python's int); an unnormalised Gaussian (peak 1) of standard
deviation `sigma` fills a square window of radius 3 sigma (13x13 for sigma 2) clipped to the
map; the target weight is 0 when the joint is invisible or the window lies entirely outside the
map, and the map is then all zero. The window is separable (a row profile times a column
profile), so a whole batch renders as two small broadcasts with no scatter and no Python loop.

Decoding (NumPy, on the host, after evaluation). HRNet's test-time rule: the argmax of each
joint's map, the maximum as the joint's score, a quarter-pixel step toward the higher neighbour
along x and along y, then times the stride into network-input pixels. As HRNet's
`get_final_preds`: with integer argmax (px, py) the step applies only when
`1 < px < W - 1 and 1 < py < H - 1` (both at once, strict, so a peak in column or row 1 is not
refined either), and moves by sign(right - left) / 4 and sign(below - above) / 4 (no move on a
tie). As HRNet's `get_max_preds`, a joint whose maximum is <= 0 decodes to (0, 0). The codec
knows no crop: its callers (evaluation, inference) take input pixels back to image pixels
through the inverse of the crop's affine transform (okdhp_jax/data/geometry.py).

Flip test (JAX). HRNet's protocol: mirror the heatmaps predicted on a mirrored image back,
swap left/right joints, and shift them one pixel to the right: HRNet's
`output_flipped[:, :, :, 1:] = output_flipped[:, :, :, :-1]` (NCHW), i.e. in NHWC
`out[:, :, 1:] = out[:, :, :-1]`, column 0 keeping its value. Why: mirroring the image
(x -> W_in - 1 - x) and mirroring the heatmap (u -> W_out - 1 - u) differ by 1 - 1 / stride
heatmap pixels (0.75 at stride 4), so the flipped-back map sits that far to the left; the
one-pixel shift compensates (leaving 0.25 px to the right).

`HeatmapCodec` holds encoding and decoding for one config's sizes; `flip_back` needs none of
them and stays a function. A new target representation (e.g. SimCC or regression) would be one
new module beside this one with the same parts.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


# ------------------------------------------------------------------ encoding (JAX, on device)

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


# ------------------------------------------------------------------ flip test (JAX)

def flip_back(heatmaps: jax.Array, flip_perm, *, shift: bool) -> jax.Array:
  """Mirrors heatmaps of a flipped image back and swaps left/right joints.

  Args:
    heatmaps: [..., height, width, joints] predicted on horizontally flipped images.
    flip_perm: [joints] int, DatasetMeta.flip_permutation().
    shift: move the result one pixel to the right (HRNet's shift_heatmap).
  """
  flipped = jnp.flip(heatmaps, axis=-2)[..., jnp.asarray(flip_perm)]
  if shift:
    flipped = jnp.concatenate([flipped[..., :1, :], flipped[..., :-1, :]], axis=-2)
  return flipped


# ------------------------------------------------------------------ decoding (NumPy, on host)

def _check_heatmaps(heatmaps) -> np.ndarray:
  heatmaps = np.asarray(heatmaps, np.float32)
  if heatmaps.ndim != 4:
    raise ValueError(
        f'heatmaps must be [batch, height, width, joints]; got shape {heatmaps.shape}')
  if not np.all(np.isfinite(heatmaps)):
    raise ValueError('heatmaps contain NaN or inf values; the network output is broken')
  return heatmaps


def decode_heatmaps(heatmaps) -> tuple[np.ndarray, np.ndarray]:
  """Argmax + quarter-pixel refinement, in heatmap pixels.

  Args:
    heatmaps: [batch, height, width, joints] (numpy or jax array).

  Returns:
    coords: float32 [batch, joints, 2] as (x, y) in heatmap pixels (pixel centres at integers).
    scores: float32 [batch, joints], the maximum of each map.
  """
  heatmaps = _check_heatmaps(heatmaps)
  batch, height, width, joints = heatmaps.shape
  flat = heatmaps.transpose(0, 3, 1, 2).reshape(batch, joints, height * width)
  index = np.argmax(flat, axis=-1)  # first maximum on ties, as np.argmax in HRNet.
  scores = np.take_along_axis(flat, index[..., None], axis=-1)[..., 0]
  px = index % width
  py = index // width
  coords = np.stack([px, py], axis=-1).astype(np.float32)

  interior = (px > 1) & (px < width - 1) & (py > 1) & (py < height - 1)
  b, j = np.nonzero(interior)
  x, y = px[b, j], py[b, j]
  dx = heatmaps[b, y, x + 1, j] - heatmaps[b, y, x - 1, j]
  dy = heatmaps[b, y + 1, x, j] - heatmaps[b, y - 1, x, j]
  coords[b, j, 0] += 0.25 * np.sign(dx)
  coords[b, j, 1] += 0.25 * np.sign(dy)

  coords *= (scores > 0)[..., None]  # HRNet's pred_mask: an all-negative map decodes to (0, 0).
  return coords, scores.astype(np.float32)


def heatmaps_to_input_coords(heatmaps, input_size) -> tuple[np.ndarray, np.ndarray]:
  """Decodes heatmaps to joints in network-input pixels (the crop).

  Args:
    heatmaps: [batch, height, width, joints].
    input_size: (height, width) of the network input.

  Returns:
    coords: float64 [batch, joints, 2] (x, y), pixel centres at integers: heatmap pixels
      times the stride input size / heatmap size.
    scores: float32 [batch, joints], the maximum of each map.
  """
  coords, scores = decode_heatmaps(heatmaps)
  heat_h, heat_w = np.shape(heatmaps)[1:3]
  stride = np.array([input_size[1] / heat_w, input_size[0] / heat_h])
  return coords * stride, scores


@dataclasses.dataclass(frozen=True)
class HeatmapCodec:
  """Gaussian heatmaps of one input and heatmap size: what the step, evaluation and predict use.

  Attributes:
    input_size: (height, width) of the network input.
    heatmap_size: (height, width) of the heatmaps.
    sigma: Gaussian standard deviation in heatmap pixels.
  """

  input_size: tuple[int, int]
  heatmap_size: tuple[int, int]
  sigma: float

  @classmethod
  def from_config(cls, data_config: Any) -> 'HeatmapCodec':
    """From config.data (input_size, heatmap_size, sigma)."""
    return cls(tuple(int(s) for s in data_config.input_size),
               tuple(int(s) for s in data_config.heatmap_size), float(data_config.sigma))

  def encode(self, joints: jax.Array, joints_vis: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Targets [B, h, w, J] and target weights [B, J] for joints [B, J, 2] in input pixels."""
    return render_heatmaps(joints, joints_vis, input_size=self.input_size,
                           heatmap_size=self.heatmap_size, sigma=self.sigma)

  def decode(self, heatmaps) -> tuple[np.ndarray, np.ndarray]:
    """Joints [B, J, 2] in network-input pixels and scores [B, J] of heatmaps [B, h, w, J];
    see heatmaps_to_input_coords."""
    return heatmaps_to_input_coords(heatmaps, self.input_size)
