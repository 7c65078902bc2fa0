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


def crop_image(encoded: tf.Tensor, height, width, matrix: tf.Tensor, output_size) -> tf.Tensor:
  """Decodes only the needed window of a JPEG and warps it (bilinear, zero fill).

  Args:
    encoded: JPEG bytes (scalar string). height, width: source size.
    matrix: [3, 3] image -> output. output_size: (height, width).

  Returns:
    float32 [out_h, out_w, 3], values in [0, 255].
  """
  out_h, out_w = output_size
  inverse = tf.linalg.inv(matrix)
  corners = tf.constant([[-1.0, -1.0], [out_w, -1.0], [-1.0, out_h], [out_w, out_h]])
  source = transform_points(corners, inverse)
  # The preimage of the output plus 2 px, so bilinear neighbours inside the image are decoded.
  low = tf.cast(tf.floor(tf.reduce_min(source, axis=0)), tf.int32) - 2
  high = tf.cast(tf.math.ceil(tf.reduce_max(source, axis=0)), tf.int32) + 2
  size = tf.cast(tf.stack([width, height]), tf.int32)
  low = tf.clip_by_value(low, 0, size - 1)
  high = tf.clip_by_value(high, 0, size - 1)
  empty = tf.reduce_any(high < low)
  extent = tf.maximum(high - low + 1, 1)
  window = tf.stack([low[1], low[0], extent[1], extent[0]])
  patch = tf.io.decode_and_crop_jpeg(encoded, window, channels=3)
  patch = tf.cast(patch, tf.float32)
  # Output -> window coordinates: the inverse, shifted by the window's top-left corner.
  low_f = tf.cast(low, tf.float32)
  to_window = inverse - tf.stack([tf.stack([0.0, 0.0, low_f[0]]),
                                  tf.stack([0.0, 0.0, low_f[1]]),
                                  tf.constant([0.0, 0.0, 0.0])])
  transform = tf.reshape(to_window, [9])[:8]
  warped = tf.raw_ops.ImageProjectiveTransformV3(
      images=patch[None], transforms=transform[None],
      output_shape=tf.constant([out_h, out_w], tf.int32), fill_value=0.0,
      interpolation='BILINEAR', fill_mode='CONSTANT')[0]
  warped = tf.where(empty, tf.zeros_like(warped), warped)
  warped.set_shape([out_h, out_w, 3])
  return warped


def to_uint8(image: tf.Tensor) -> tf.Tensor:
  """Float pixels in [0, 255] -> uint8, rounded: what crosses to the device (normalised there,
  okdhp_jax/data/normalization.py). Rounding moves a pixel by at most half a grey level."""
  return tf.cast(tf.round(tf.clip_by_value(image, 0.0, 255.0)), tf.uint8)


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


def train_example(parsed: dict, seed: tf.Tensor, *, input_size, scale_factor: float,
                  rotation_factor: float, rotation_prob: float, flip: bool,
                  half_body_prob: float, half_body_min_joints: int, meta) -> dict:
  """One parsed record -> augmented {'image', 'joints', 'joints_vis'}."""
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
  matrix = affine_matrix(center, scale, rotation, input_size, do_flip)
  image = crop_image(parsed['image/encoded'], parsed['image/height'], parsed['image/width'],
                     matrix, input_size)
  joints, vis = crop_joints(joints, vis, matrix, input_size, meta.flip_permutation(), do_flip)
  return {'image': to_uint8(image), 'joints': joints, 'joints_vis': vis}


def eval_example(parsed: dict, *, input_size) -> dict:
  """One parsed record -> the unaugmented crop plus what back-projection needs."""
  out_h, out_w = input_size
  scale = fix_aspect_ratio(parsed['person/scale'], out_w / out_h)
  center = parsed['person/center']
  matrix = affine_matrix(center, scale, 0.0, input_size, False)
  image = crop_image(parsed['image/encoded'], parsed['image/height'], parsed['image/width'],
                     matrix, input_size)
  joints, vis = crop_joints(parsed['person/joints'], parsed['person/joints_vis'], matrix,
                            input_size)
  return {
      'image': to_uint8(image), 'joints': joints, 'joints_vis': vis,
      'center': center, 'scale': scale, 'image_id': parsed['image/id'],
      'person_index': parsed['person/index'], 'box': parsed['person/box'],
      'score': parsed['person/score'], 'area': parsed['person/area'],
  }
