"""The top-down crop: one similarity transform between image pixels and network-input pixels.

Convention (HRNet's, written in closed form): a person box of centre `c = (cx, cy)` and scale
`s = (sw, sh)` in units of 200 px is rotated by `rotation` degrees and resized so that its width
`sw * 200` fills the output width. Pixel centres sit at integer coordinates. With
k = out_w / (200 sw) and R the 2x2 rotation by -rotation (image y points down):

  dst = k * R @ (src - c) + (out_w / 2, out_h / 2)

The same matrix serves the tf.data crop, joint transforms, the back-projection of predicted
joints and drawing, so every direction uses one definition.
"""

from __future__ import annotations

import numpy as np

PIXEL_STD = 200.0


def box_to_center_scale(box_xywh, aspect_ratio: float, padding: float = 1.25):
  """COCO rule: box (x, y, w, h) -> centre [2] and scale [2] at the input's aspect ratio w / h."""
  x, y, w, h = (float(v) for v in box_xywh)
  center = np.array([x + w * 0.5, y + h * 0.5], np.float32)
  if w > aspect_ratio * h:
    h = w / aspect_ratio
  else:
    w = h * aspect_ratio
  scale = np.array([w / PIXEL_STD, h / PIXEL_STD], np.float32) * padding
  return center, scale


def affine_matrix(center, scale, rotation, output_size, inverse: bool = False) -> np.ndarray:
  """2x3 matrix mapping image pixels to output pixels (or back with `inverse=True`).

  Args:
    center: [2] (x, y) in image pixels.
    scale: [2] (sw, sh) in units of 200 px, or a scalar (square box).
    rotation: degrees, counter-clockwise as seen on screen.
    output_size: (height, width) of the output (network input or heatmap).
    inverse: return the output -> image map instead.

  Returns:
    float64 [2, 3] matrix M; apply as M @ [x, y, 1].
  """
  out_h, out_w = output_size
  scale_w = float(np.atleast_1d(np.asarray(scale, np.float64))[0])
  k = out_w / (scale_w * PIXEL_STD)
  theta = np.deg2rad(float(rotation))
  cos, sin = np.cos(theta), np.sin(theta)
  rot = np.array([[cos, sin], [-sin, cos]])  # rotation by -theta in y-down coordinates.
  c = np.asarray(center, np.float64).reshape(2)
  half = np.array([out_w * 0.5, out_h * 0.5])
  if not inverse:
    linear = k * rot
    offset = half - linear @ c
  else:
    linear = rot.T / k
    offset = c - linear @ half
  return np.concatenate([linear, offset[:, None]], axis=1)


def apply_affine(points, matrix) -> np.ndarray:
  """points [..., 2] -> matrix applied, [..., 2] (float64)."""
  points = np.asarray(points, np.float64)
  matrix = np.asarray(matrix, np.float64)
  return points @ matrix[:, :2].T + matrix[:, 2]


def input_to_image(coords, center, scale, input_size) -> np.ndarray:
  """Back-projects joints in network-input pixels to image pixels, one person per row.

  Args:
    coords: [batch, joints, 2] (x, y) in the pixels of each person's crop.
    center: [batch, 2]; scale: [batch, 2] (units of 200 px): the crop boxes.
    input_size: (height, width) of the crop.

  Returns:
    float64 [batch, joints, 2] in original image pixels (0-based).
  """
  coords = np.asarray(coords, np.float64)
  center = np.asarray(center, np.float64)
  scale = np.asarray(scale, np.float64)
  for name, value in (('center', center), ('scale', scale)):
    if value.shape != (coords.shape[0], 2):
      raise ValueError(f'{name} must be [batch={coords.shape[0]}, 2]; got shape {value.shape}')
  out = np.empty_like(coords)
  for i in range(coords.shape[0]):
    inv = affine_matrix(center[i], scale[i], 0.0, input_size, inverse=True)
    out[i] = apply_affine(coords[i], inv)
  return out
