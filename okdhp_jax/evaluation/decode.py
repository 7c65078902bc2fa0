"""Heatmaps -> joint coordinates and scores (the decoding half of the heatmap codec).

HRNet's test-time rule: take the argmax of each joint's map, use the maximum as the
joint's score, move the argmax a quarter pixel toward the higher neighbour along x and along y,
then map heatmap pixels back to image pixels through the inverse of the crop's affine transform.

The quarter-pixel step follows HRNet's `get_final_preds` exactly: with integer argmax (px, py) it
applies only when `1 < px < W - 1 and 1 < py < H - 1` (both at once, strict, so a peak in column
or row 1 is not refined either), and it moves by sign(right - left) / 4 and sign(below - above) / 4
(no move on a tie). As in HRNet's `get_max_preds`, a joint whose maximum is <= 0 decodes to (0, 0).
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from okdhp_jax.data import geometry


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


def heatmaps_to_image_coords(heatmaps, center, scale) -> tuple[np.ndarray, np.ndarray]:
  """Decodes and back-projects to original image pixels.

  Args:
    heatmaps: [batch, height, width, joints].
    center: [batch, 2] box centres (x, y) in image pixels.
    scale: [batch, 2] box scales (sw, sh) in units of 200 px.

  Returns:
    coords: float64 [batch, joints, 2], 0-based image pixels.
    scores: float32 [batch, joints].
  """
  heatmaps = _check_heatmaps(heatmaps)
  center = np.asarray(center, np.float64)
  scale = np.asarray(scale, np.float64)
  batch = heatmaps.shape[0]
  for name, value in (('center', center), ('scale', scale)):
    if value.shape != (batch, 2):
      raise ValueError(f'{name} must be [batch={batch}, 2]; got shape {value.shape}')
  coords, scores = decode_heatmaps(heatmaps)
  image_coords = geometry.heatmap_to_image(coords, center, scale, heatmaps.shape[1:3])
  return image_coords, scores


def named_heatmaps(outputs) -> dict[str, np.ndarray]:
  """What each model head predicts at test time, by the names reports use.

  Args:
    outputs: a `PoseOutputs`.

  Returns:
    {'branch_0': ..., 'branch_1': ..., 'ensemble': ...}, each [batch, height, width, joints].
    A single-branch model gives {'branch_0', 'ensemble'} with the same maps.
  """
  named = {f'branch_{i}': np.asarray(h) for i, h in enumerate(outputs.branch_heatmaps)}
  named['ensemble'] = np.asarray(outputs.ensemble)
  return named


def decode_named(heatmaps_by_name: Mapping[str, np.ndarray], center, scale):
  """`heatmaps_to_image_coords` for each entry of `named_heatmaps`: {name: (coords, scores)}."""
  return {name: heatmaps_to_image_coords(h, center, scale)
          for name, h in heatmaps_by_name.items()}
