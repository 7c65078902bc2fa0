"""Skeleton drawings of predicted and GT poses, as uint8 arrays (clu's write_images) or PNGs.

Limbs come from `DatasetMeta.skeleton`, so every dataset draws with its own layout. Joints whose
score (or visibility) is below the threshold, or whose coordinates are not finite, are not drawn,
nor are limbs touching them.
"""

from __future__ import annotations

import os

import numpy as np
from PIL import Image, ImageDraw

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


def draw_batch(images, preds, gts, gt_vis, meta: DatasetMeta, scores=None, *,
               max_images: int | None = None, score_threshold: float = 0.2) -> np.ndarray:
  """`draw_prediction_and_gt` over a batch: uint8 [N, H, W, 3] for writer.write_images.

  Args:
    images: uint8 [B, H, W, 3]; preds, gts: [B, J, 2] in those images' pixels;
    gt_vis: [B, J]; scores: [B, J] or None; max_images: draw only the first N.
  """
  count = len(images) if max_images is None else min(max_images, len(images))
  if count == 0:
    return np.zeros((0,) + np.shape(images)[1:], np.uint8)
  return np.stack([
      draw_prediction_and_gt(images[i], preds[i], gts[i], gt_vis[i], meta,
                             None if scores is None else scores[i],
                             score_threshold=score_threshold)
      for i in range(count)
  ])


def save_png(path: str, image) -> None:
  """Writes a uint8 [H, W, 3] image as PNG, creating the folder."""
  image = _check_image(image)
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  Image.fromarray(image).save(path, format='PNG')
