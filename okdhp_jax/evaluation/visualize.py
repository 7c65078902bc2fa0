"""Skeleton drawings of predicted and GT poses, as uint8 arrays (clu's write_images) and PNGs.

Limbs come from `DatasetMeta.skeleton`, so every dataset draws with its own layout. Joints whose
score (or visibility) is below the threshold, or whose coordinates are not finite, are not drawn,
nor are limbs touching them.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageDraw

from okdhp_jax import paths
from okdhp_jax.data.meta import DatasetMeta

# Predictions are drawn thick in the colour of their side, ground truth thin in white.
SIDE_COLORS = {'left': (40, 140, 255), 'right': (255, 140, 0), 'centre': (40, 210, 90)}
GT_COLOR = (255, 255, 255)
LEGEND_HEIGHT = 22
MIN_PERSON_SIDE = 256


def _check_image(image) -> np.ndarray:
  image = np.asarray(image)
  if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
    raise ValueError(f'images to draw on must be uint8 [height, width, 3]; got {image.dtype} '
                     f'{image.shape}')
  return image


def _limb_side(meta: DatasetMeta, a: int, b: int) -> str:
  sides = meta.joint_sides
  return sides[a] if sides[a] == sides[b] else 'centre'


def draw_pose(image, joints, meta: DatasetMeta, *, scores=None, color=None,
              score_threshold: float = 0.2, radius: int = 2, width: int = 2) -> np.ndarray:
  """Draws one skeleton.

  Args:
    image: uint8 [H, W, 3].
    joints: [J, 2] (x, y) in the image's pixels.
    meta: the dataset layout (skeleton, joint sides).
    scores: optional [J] joint scores or visibilities; joints below `score_threshold` are skipped.
    color: one RGB for everything, or None for SIDE_COLORS by the meta's left and right.

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

  def fill(side: str):
    return tuple(int(c) for c in (color if color is not None else SIDE_COLORS[side]))

  for a, b in meta.skeleton:
    if shown[a] and shown[b]:
      draw.line([tuple(joints[a]), tuple(joints[b])], fill=fill(_limb_side(meta, a, b)),
                width=width)
  for (x, y), ok, side in zip(joints, shown, meta.joint_sides):
    if ok:
      draw.ellipse([x - radius, y - radius, x + radius, y + radius], fill=fill(side))
  return np.asarray(canvas)


def draw_prediction_and_gt(image, pred, gt, gt_vis, meta: DatasetMeta, scores=None, *,
                           score_threshold: float = 0.2, scale: float = 1.0) -> np.ndarray:
  """GT thin and white (visible joints), the prediction over it thick in side colours.

  `scale` grows line widths and joint dots with the image (drawings of upscaled crops).
  """
  drawn = draw_pose(image, gt, meta, scores=gt_vis, color=GT_COLOR, score_threshold=0.5,
                    radius=max(1, round(scale)), width=max(1, round(scale / 2)))
  return draw_pose(drawn, pred, meta, scores=scores, score_threshold=score_threshold,
                   radius=max(2, round(2 * scale)), width=max(2, round(1.5 * scale)))


def draw_crops(batch, pred_xy, pred_scores, valid, meta: DatasetMeta, count: int, *,
               min_side: int = MIN_PERSON_SIDE) -> list[np.ndarray]:
  """Predicted and GT skeletons on the crops of an eval batch, enlarged to a readable size.

  Args:
    batch: an eval batch: 'image' uint8 [B, H, W, 3], 'joints' [B, J, 2], 'joints_vis'.
    pred_xy: [B, J, 2] predictions in input pixels; pred_scores: [B, J].
    valid: bool [B], padding rows are skipped; count: how many to draw at most.
    min_side: crops are enlarged by a whole factor until their short side is at least this.

  Returns:
    up to `count` uint8 [k H, k W, 3] images.
  """
  images = []
  height, width = np.shape(batch['image'])[1:3]
  factor = max(1, -(-min_side // min(height, width)))
  # Pixel centres sit at integers: x in the crop is (x + 0.5) * k - 0.5 in the enlarged one.
  def enlarge(xy):
    return (np.asarray(xy, np.float64) + 0.5) * factor - 0.5

  for i in np.flatnonzero(valid)[:count]:
    crop = np.asarray(batch['image'][i], np.uint8)
    crop = np.asarray(Image.fromarray(crop).resize((width * factor, height * factor),
                                                   Image.BILINEAR))
    images.append(draw_prediction_and_gt(crop, enlarge(pred_xy[i]), enlarge(batch['joints'][i]),
                                         batch['joints_vis'][i], meta, pred_scores[i],
                                         scale=factor / 2))
  return images


def grid(images: list[np.ndarray], *, columns: int = 4, legend: bool = True) -> np.ndarray:
  """Equal-sized drawings side by side in rows of `columns`, with a colour legend below."""
  if not images:
    raise ValueError('grid() needs at least one image')
  height, width = images[0].shape[:2]
  rows = -(-len(images) // columns)
  columns = min(columns, len(images))
  pad = 4
  canvas = Image.new('RGB', (columns * (width + pad) + pad,
                             rows * (height + pad) + pad + (LEGEND_HEIGHT if legend else 0)),
                     (24, 24, 24))
  for i, image in enumerate(images):
    row, column = divmod(i, columns)
    canvas.paste(Image.fromarray(_check_image(image)),
                 (pad + column * (width + pad), pad + row * (height + pad)))
  if legend:
    draw = ImageDraw.Draw(canvas)
    x, y = pad, canvas.height - LEGEND_HEIGHT + 5
    for text, color in (('prediction: left', SIDE_COLORS['left']),
                        ('right', SIDE_COLORS['right']), ('centre', SIDE_COLORS['centre']),
                        ('ground truth (thin)', GT_COLOR)):
      draw.rectangle([x, y + 2, x + 10, y + 10], fill=color)
      draw.text((x + 14, y), text, fill=(230, 230, 230))
      x += 14 + int(draw.textlength(text)) + 12
  return np.asarray(canvas)


def save_png(path: str, image) -> str:
  """Writes a uint8 [H, W, 3] image as PNG (local or gs://), creating the folder."""
  image = _check_image(image)
  target = paths.resolve(path)
  target.parent.mkdir(parents=True, exist_ok=True)
  buffer = io.BytesIO()
  Image.fromarray(image).save(buffer, format='PNG')
  target.write_bytes(buffer.getvalue())
  return str(target)
