"""Skeleton drawings of predicted and GT poses, as uint8 arrays (clu's write_images) and PNGs.

Limbs come from `DatasetMeta.skeleton`, so every dataset draws with its own layout. Joints whose
score (or visibility) is below the threshold, or whose coordinates are not finite, are not drawn,
nor are limbs touching them.
"""

from __future__ import annotations

import io
import os

import numpy as np
from PIL import Image, ImageDraw

from okdhp_jax import paths
from okdhp_jax.data import augment
from okdhp_jax.data.meta import DatasetMeta

PRED_COLOR = (255, 48, 48)   # red
GT_COLOR = (48, 220, 48)     # green


def _check_image(image) -> np.ndarray:
  image = np.asarray(image)
  if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
    raise ValueError(f'images to draw on must be uint8 [height, width, 3]; got {image.dtype} '
                     f'{image.shape}')
  return image


def draw_pose(image, joints, meta: DatasetMeta, *, scores=None, color=PRED_COLOR,
              score_threshold: float = 0.2, radius: int = 2, width: int = 2) -> np.ndarray:
  """Draws one skeleton.

  Args:
    image: uint8 [H, W, 3].
    joints: [J, 2] (x, y) in the image's pixels.
    meta: the dataset layout (skeleton).
    scores: optional [J] joint scores or visibilities; joints below `score_threshold` are skipped.
    color: RGB of limbs and joints.

  Returns:
    a new uint8 [H, W, 3] image.
  """
  image = _check_image(image)
  joints = np.asarray(joints, np.float64)
  if joints.shape != (meta.num_joints, 2):
    raise ValueError(f'joints must be [{meta.num_joints}, 2] for {meta.name!r}; got '
                     f'{joints.shape}')
  shown = np.isfinite(joints).all(axis=-1)
  if scores is not None:
    shown &= np.asarray(scores, np.float64).reshape(-1) >= score_threshold
  canvas = Image.fromarray(image)
  draw = ImageDraw.Draw(canvas)
  color = tuple(int(c) for c in color)
  for a, b in meta.skeleton:
    if shown[a] and shown[b]:
      draw.line([tuple(joints[a]), tuple(joints[b])], fill=color, width=width)
  for (x, y), ok in zip(joints, shown):
    if ok:
      draw.ellipse([x - radius, y - radius, x + radius, y + radius], fill=color)
  return np.asarray(canvas)


def draw_prediction_and_gt(image, pred, gt, gt_vis, meta: DatasetMeta, scores=None, *,
                           score_threshold: float = 0.2) -> np.ndarray:
  """GT skeleton (green, visible joints only) under the predicted one (red): uint8 [H, W, 3]."""
  drawn = draw_pose(image, gt, meta, scores=gt_vis, color=GT_COLOR, score_threshold=0.5)
  return draw_pose(drawn, pred, meta, scores=scores, color=PRED_COLOR,
                   score_threshold=score_threshold)


def draw_crops(batch, pred_xy, pred_scores, valid, meta: DatasetMeta,
               count: int) -> list[np.ndarray]:
  """Predicted and GT skeletons on the network-input crops of an eval batch (no re-reading).

  Args:
    batch: an eval batch: 'image' [B, H, W, 3] normalised, 'joints' [B, J, 2], 'joints_vis'.
    pred_xy: [B, J, 2] predictions in input pixels; pred_scores: [B, J].
    valid: bool [B], padding rows are skipped; count: how many to draw at most.

  Returns:
    up to `count` uint8 [H, W, 3] images.
  """
  images = []
  for i in np.flatnonzero(valid)[:count]:
    crop = np.clip(augment.denormalize(batch['image'][i]), 0, 255).astype(np.uint8)
    images.append(draw_prediction_and_gt(crop, pred_xy[i], batch['joints'][i],
                                         batch['joints_vis'][i], meta, pred_scores[i]))
  return images


def save_png(path: str, image) -> str:
  """Writes a uint8 [H, W, 3] image as PNG (local or gs://), creating the folder."""
  image = _check_image(image)
  target = paths.resolve(path)
  target.parent.mkdir(parents=True, exist_ok=True)
  buffer = io.BytesIO()
  Image.fromarray(image).save(buffer, format='PNG')
  target.write_bytes(buffer.getvalue())
  return str(target)


def write_pngs(directory: str, images: list[np.ndarray], prefix: str) -> list[str]:
  """`save_png` of each image as DIRECTORY/PREFIX_NN.png; returns the paths."""
  return [save_png(os.path.join(directory, f'{prefix}_{i:02d}.png'), image)
          for i, image in enumerate(images)]
