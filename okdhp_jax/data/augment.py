"""TensorFlow ops for the top-down crop and its augmentation (graph mode, per example).

The crop matrix is the TF twin of `geometry.affine_matrix` (tested against it): image pixels
-> input pixels, pixel centres at integers. A horizontal flip is a mirror of the *output*,
x -> W - 1 - x, composed onto that matrix, so the flipped crop is exactly the array-reversed
unflipped crop and joints follow the same matrix before the meta's left/right swap.

Randomness is stateless: every op takes a `seed` [2] tensor, so a pipeline seed plus the
example's position fixes every draw.
"""

from __future__ import annotations

import math

from okdhp_jax.data import crop
from okdhp_jax.data import geometry
from okdhp_jax.data.tf_host import tf

def fix_aspect_ratio(scale: tf.Tensor, aspect_ratio: float) -> tf.Tensor:
  """Grows the short side of scale [2] = (sw, sh) so that sw / sh == aspect_ratio (w / h)."""
  sw, sh = scale[0], scale[1]
  wider = sw > aspect_ratio * sh
  return tf.stack([tf.where(wider, sw, sh * aspect_ratio), tf.where(wider, sw / aspect_ratio, sh)])


def affine_matrix(center, scale, rotation, output_size, flip=False) -> tf.Tensor:
  """[3, 3] float32 matrix: image pixels -> output pixels (geometry.affine_matrix + mirror).

  Args:
    center: [2] (x, y) image pixels. scale: [2] (sw, sh), units of 200 px (only sw is used).
    rotation: degrees (scalar). output_size: (height, width), Python ints.
    flip: bool scalar; mirror the output horizontally (x -> width - 1 - x).
  """
  out_h, out_w = output_size
  center = tf.cast(center, tf.float32)
  k = out_w / (tf.cast(scale[0], tf.float32) * geometry.PIXEL_STD)
  theta = tf.cast(rotation, tf.float32) * (math.pi / 180.0)
  cos, sin = tf.cos(theta) * k, tf.sin(theta) * k
  tx = out_w * 0.5 - (cos * center[0] + sin * center[1])
  ty = out_h * 0.5 - (-sin * center[0] + cos * center[1])
  matrix = tf.stack([
      tf.stack([cos, sin, tx]),
      tf.stack([-sin, cos, ty]),
      tf.constant([0.0, 0.0, 1.0]),
  ])
  mirror = tf.constant([[-1.0, 0.0, out_w - 1.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
  return tf.cond(tf.convert_to_tensor(flip), lambda: mirror @ matrix, lambda: matrix)


def transform_points(points: tf.Tensor, matrix: tf.Tensor) -> tf.Tensor:
  """points [N, 2] -> [N, 2] under a [3, 3] (affine) matrix."""
  return points @ tf.transpose(matrix[:2, :2]) + matrix[:2, 2]


def crop_joints(joints, joints_vis, matrix, output_size, flip_permutation=None, flip=False):
  """Joints [J, 2] -> input pixels; visibility 0 outside the crop; swap pairs when flipped."""
  out_h, out_w = output_size
  moved = transform_points(tf.cast(joints, tf.float32), matrix)
  vis = tf.cast(joints_vis, tf.float32)
  if flip_permutation is not None:
    perm = tf.constant(flip_permutation, tf.int32)
    moved = tf.cond(flip, lambda: tf.gather(moved, perm), lambda: moved)
    vis = tf.cond(flip, lambda: tf.gather(vis, perm), lambda: vis)
  inside = ((moved[:, 0] >= 0) & (moved[:, 0] < out_w) & (moved[:, 1] >= 0)
            & (moved[:, 1] < out_h))
  vis = vis * tf.cast(inside, tf.float32)
  return moved, vis


def half_body(joints, joints_vis, upper_body, num_joints: int, aspect_ratio: float, seed):
  """HRNet's half-body box: the visible upper or lower body, x1.5.

  Returns:
    (center [2], scale [2], ok): ok is False when fewer than two joints would be selected.
  """
  upper = tf.scatter_nd(tf.constant([[i] for i in upper_body], tf.int32),
                        tf.ones([len(upper_body)]), [num_joints])
  vis = tf.cast(joints_vis > 0, tf.float32)
  upper_sel, lower_sel = vis * upper, vis * (1.0 - upper)
  n_upper, n_lower = tf.reduce_sum(upper_sel), tf.reduce_sum(lower_sel)
  coin = tf.random.stateless_uniform([], seed)
  take_upper = ((coin < 0.5) & (n_upper > 2)) | (n_lower <= 2)
  selected = tf.where(take_upper, upper_sel, lower_sel)
  count = tf.reduce_sum(selected)
  mask = selected[:, None] > 0
  center = tf.reduce_sum(joints * selected[:, None], axis=0) / tf.maximum(count, 1.0)
  low = tf.reduce_min(tf.where(mask, joints, float('inf')), axis=0)
  high = tf.reduce_max(tf.where(mask, joints, float('-inf')), axis=0)
  wh = high - low
  scale = fix_aspect_ratio(wh / geometry.PIXEL_STD, aspect_ratio) * 1.5
  ok = (count >= 2) & tf.reduce_all(scale > 0)
  return center, scale, ok


def augmentation_matrix(parsed: dict, seed: tf.Tensor, *, input_size, scale_factor: float,
                        rotation_factor: float, rotation_prob: float, flip: bool,
                        half_body_prob: float, half_body_min_joints: int, meta
                        ) -> tuple[tf.Tensor, tf.Tensor]:
  """The random crop of one parsed record: ([3, 3] image -> input pixels, flipped bool)."""
  out_h, out_w = input_size
  aspect_ratio = out_w / out_h
  seeds = tf.random.experimental.stateless_split(seed, num=7)
  joints, vis = parsed['person/joints'], parsed['person/joints_vis']
  center, scale = parsed['person/center'], parsed['person/scale']
  if half_body_prob > 0:
    hb_center, hb_scale, ok = half_body(joints, vis, meta.upper_body, meta.num_joints,
                                        aspect_ratio, seeds[0])
    use = (ok & (tf.reduce_sum(vis) > half_body_min_joints)
           & (tf.random.stateless_uniform([], seeds[1]) < half_body_prob))
    center = tf.where(use, hb_center, center)
    scale = tf.where(use, hb_scale, scale)
  scale = fix_aspect_ratio(scale, aspect_ratio)
  factor = tf.clip_by_value(
      tf.random.stateless_normal([], seeds[2]) * scale_factor + 1.0,
      1.0 - scale_factor, 1.0 + scale_factor)
  scale = scale * factor
  rotation = tf.clip_by_value(tf.random.stateless_normal([], seeds[3]) * rotation_factor,
                              -2.0 * rotation_factor, 2.0 * rotation_factor)
  rotation = tf.where(tf.random.stateless_uniform([], seeds[4]) < rotation_prob, rotation, 0.0)
  do_flip = tf.logical_and(tf.constant(bool(flip)),
                           tf.random.stateless_uniform([], seeds[5]) < 0.5)
  return affine_matrix(center, scale, rotation, input_size, do_flip), do_flip


def train_example(parsed: dict, seed: tf.Tensor, *, input_size, meta,
                  max_decode_reduction: int = crop.DECODE_REDUCTIONS[-1], **augmentation) -> dict:
  """One parsed record -> augmented {'image' uint8 [H, W, 3], 'joints' [J, 2], 'joints_vis' [J]}.

  `augmentation`: augmentation_matrix's keyword arguments (scale_factor, rotation_factor, ...).
  """
  matrix, do_flip = augmentation_matrix(parsed, seed, input_size=input_size, meta=meta,
                                        **augmentation)
  # Without the restart index (a dict built by hand) the window is decoded from the whole file.
  image = crop.crop_image(parsed['image/encoded'], parsed['image/height'],
                          parsed['image/width'], matrix, input_size, max_decode_reduction,
                          parsed.get('image/restart_layout'),
                          parsed.get('image/restart_offsets'))
  joints, vis = crop_joints(parsed['person/joints'], parsed['person/joints_vis'], matrix,
                            input_size, meta.flip_permutation(), do_flip)
  return {'image': image, 'joints': joints, 'joints_vis': vis}


def eval_example(parsed: dict, *, input_size,
                 max_decode_reduction: int = crop.DECODE_REDUCTIONS[-1]) -> dict:
  """One parsed record -> the unaugmented crop plus what back-projection needs."""
  out_h, out_w = input_size
  scale = fix_aspect_ratio(parsed['person/scale'], out_w / out_h)
  center = parsed['person/center']
  matrix = affine_matrix(center, scale, 0.0, input_size, False)
  image = crop.crop_image(parsed['image/encoded'], parsed['image/height'],
                          parsed['image/width'], matrix, input_size, max_decode_reduction,
                          parsed.get('image/restart_layout'),
                          parsed.get('image/restart_offsets'))
  joints, vis = crop_joints(parsed['person/joints'], parsed['person/joints_vis'], matrix,
                            input_size)
  return {
      'image': image, 'joints': joints, 'joints_vis': vis,
      'center': center, 'scale': scale, 'image_id': parsed['image/id'],
      'person_index': parsed['person/index'], 'box': parsed['person/box'],
      'score': parsed['person/score'], 'area': parsed['person/area'],
  }
