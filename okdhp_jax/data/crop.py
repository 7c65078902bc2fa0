"""A person's crop from JPEG bytes: decode only the window it needs, at the scale it needs, then
warp it with OpenCV. This is where the host input pipeline spends its time.

Two costs dominate on full-size photos (data_prep/bench.py measures them):

* Decoding. `tf.io.decode_and_crop_jpeg` decodes only the crop's window, and its `ratio`
  (libjpeg's scaled IDCT) decodes that window at 1/2, 1/4 or 1/8 of its size for little more
  than the entropy decoding. When the crop shrinks the image by at least r anyway (an MPII
  person is 600-1000 px tall, the crop 256), the window is decoded at 1/r: each output pixel
  still spans at least one decoded pixel, and the IDCT's block average is a better low-pass
  than bilinear sampling of the full-size window, which aliases. config.data.max_decode_reduction
  caps r (1: always decode at full size).
* Warping. TensorFlow's ImageProjectiveTransformV3 costs many times OpenCV's warpAffine
  (fixed-point bilinear, what mmpose and HRNet crop with) per crop, whatever the window's
  size, and OpenCV's is fastest on four channels, which is why the warp adds a fourth one
  (docs/performance.md). TensorFlow has no fast affine warp, so it is called through
  tf.numpy_function; OpenCV releases the GIL while it works, so parallel map calls overlap.

Pixel centres are at integer coordinates throughout. A pixel of the 1/r decode averages the
original pixels [r i, r i + r), so its centre is at r i + (r - 1) / 2.
"""

from __future__ import annotations

import re

import cv2
import numpy as np

from okdhp_jax.data import jpeg_window
from okdhp_jax.data.tf_host import tf

# The scales libjpeg decodes at (tf.io.decode_and_crop_jpeg's `ratio`).
DECODE_REDUCTIONS = (1, 2, 4, 8)

# tf.data already runs one crop per thread; OpenCV's own threads would only compete with it.
cv2.setNumThreads(1)


def check_max_reduction(value, name: str) -> int:
  """`value` as an int if it is one of DECODE_REDUCTIONS; else ValueError naming `name`."""
  if value not in DECODE_REDUCTIONS:
    raise ValueError(f'{name}={value!r}: choose one of {DECODE_REDUCTIONS} (1 decodes every '
                     f'image at full size)')
  return int(value)


def decode_error_reason(error: Exception) -> str:
  """TensorFlow's own reason for a failed decode, in one line.

  A failure inside a tf.function carries a graph listing ('Graph execution error', 'Detected at
  node ... defined at' and a call stack, '[[{{node ...}}]] [Op:...]') around the op's message;
  only that message (e.g. 'jpeg::Uncompress failed. Invalid JPEG data or crop window.') is kept.
  """
  message = getattr(error, 'message', None) or str(error)
  lines = [line.strip() for line in message.splitlines()]
  reasons = [line for line in lines if line and not line.startswith('[[')]
  reason = reasons[-1] if reasons else message
  return re.sub(r'\{\{[^}]*\}\}|\[Op:[^\]]*\]', '', reason).strip()


def decode_reduction(matrix: tf.Tensor, max_reduction: int) -> tf.Tensor:
  """int32 scalar: the largest r of DECODE_REDUCTIONS (<= max_reduction) that the crop shrinks by.

  Args:
    matrix: [3, 3] image pixels -> output pixels (a similarity: scale, rotation, mirror).
  """
  zoom = tf.sqrt(tf.abs(tf.linalg.det(matrix[:2, :2])))  # output pixels per image pixel
  reduction = tf.constant(1, tf.int32)
  for r in DECODE_REDUCTIONS[1:]:
    if r <= max_reduction:
      reduction = tf.where(r * zoom <= 1.0, tf.constant(r, tf.int32), reduction)
  return reduction


def window(matrix: tf.Tensor, height, width, output_size, reduction: tf.Tensor):
  """Where the crop's pixels come from in the 1/reduction decode of the image.

  Returns:
    (window [4] int32 (y, x, height, width) in reduced pixels, as decode_and_crop_jpeg takes it;
     to_window [2, 3] float32 output pixels -> window pixels; empty bool: the crop misses the
     image entirely).
  """
  out_h, out_w = output_size
  r = tf.cast(reduction, tf.float32)
  # Image pixels -> reduced pixels, composed after the inverse crop matrix.
  to_reduced = tf.stack([tf.stack([1.0 / r, 0.0, -(r - 1.0) / (2.0 * r)]),
                         tf.stack([0.0, 1.0 / r, -(r - 1.0) / (2.0 * r)]),
                         tf.constant([0.0, 0.0, 1.0])])
  output_to_reduced = to_reduced @ tf.linalg.inv(matrix)
  corners = tf.constant([[-1.0, -1.0, 1.0], [out_w, -1.0, 1.0], [-1.0, out_h, 1.0],
                         [out_w, out_h, 1.0]])
  source = (corners @ tf.transpose(output_to_reduced))[:, :2]
  # The preimage of the output plus 2 px, so bilinear neighbours inside the image are decoded.
  low = tf.cast(tf.floor(tf.reduce_min(source, axis=0)), tf.int32) - 2
  high = tf.cast(tf.math.ceil(tf.reduce_max(source, axis=0)), tf.int32) + 2
  size = (tf.cast(tf.stack([width, height]), tf.int32) + reduction - 1) // reduction
  empty = tf.reduce_any(high < 0) | tf.reduce_any(low > size - 1)
  low = tf.clip_by_value(low, 0, size - 1)
  high = tf.clip_by_value(high, 0, size - 1)
  extent = tf.maximum(high - low + 1, 1)
  low_f = tf.cast(low, tf.float32)
  to_window = output_to_reduced[:2] - tf.stack([tf.stack([0.0, 0.0, low_f[0]]),
                                                tf.stack([0.0, 0.0, low_f[1]])])
  return tf.stack([low[1], low[0], extent[1], extent[0]]), to_window, empty


def decode_window(encoded: tf.Tensor, crop_window: tf.Tensor, reduction: tf.Tensor,
                  max_reduction: int = DECODE_REDUCTIONS[-1]) -> tf.Tensor:
  """uint8 [h, w, 3]: the window of the JPEG decoded at 1/reduction (`ratio` is an attribute
  of the op, so each reduction is its own branch)."""
  reductions = [r for r in DECODE_REDUCTIONS if r <= max_reduction]
  if len(reductions) == 1:
    return tf.io.decode_and_crop_jpeg(encoded, crop_window, channels=3)
  branches = [lambda r=r: tf.io.decode_and_crop_jpeg(encoded, crop_window, channels=3, ratio=r)
              for r in reductions]
  index = tf.argmax(tf.cast(tf.equal(tf.constant(reductions, tf.int32), reduction), tf.int32),
                    output_type=tf.int32)
  return tf.switch_case(index, branches)


def _warp_affine(patch: np.ndarray, to_patch: np.ndarray, empty: np.ndarray, out_h: np.ndarray,
                 out_w: np.ndarray) -> np.ndarray:
  """numpy side of warp: cv2.warpAffine with the output -> patch map, zeros outside.

  The warp runs on four channels (RGB plus an unused one) and drops the fourth afterwards:
  OpenCV's bilinear remap has a SIMD path for 4-channel uint8 images but not for 3-channel
  ones, so this halves the warp for far less in channel conversions, with identical pixels
  (tests/test_data_crop.py).
  """
  if empty:
    return np.zeros((int(out_h), int(out_w), 3), np.uint8)
  image = cv2.warpAffine(cv2.cvtColor(patch, cv2.COLOR_RGB2RGBA), to_patch,
                         (int(out_w), int(out_h)), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                         borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0, 0))
  return cv2.cvtColor(image, cv2.COLOR_RGBA2RGB)


def warp(patch: tf.Tensor, to_patch: tf.Tensor, empty: tf.Tensor, output_size) -> tf.Tensor:
  """uint8 [out_h, out_w, 3]: bilinear samples of `patch` at to_patch @ (x, y, 1), zero fill."""
  out_h, out_w = output_size
  image = tf.numpy_function(_warp_affine, [patch, to_patch, empty, out_h, out_w], tf.uint8,
                            stateful=False)
  image.set_shape([out_h, out_w, 3])
  return image


def decode_for_crop(encoded: tf.Tensor, height, width, matrix: tf.Tensor, output_size,
                    max_reduction: int = DECODE_REDUCTIONS[-1], restart_layout=None,
                    restart_offsets=None):
  """The decoded window the crop `matrix` samples: (uint8 [h, w, 3] patch, [2, 3] output pixels
  -> patch pixels, bool: the crop misses the image). Arguments as for crop_image."""
  reduction = decode_reduction(matrix, max_reduction)
  crop_window, to_window, empty = window(matrix, height, width, output_size, reduction)
  if restart_layout is not None:
    encoded, crop_window = tf.cond(
        jpeg_window.has_index(restart_layout),
        lambda: jpeg_window.region(encoded, restart_layout, restart_offsets, height, width,
                                   crop_window, reduction),
        lambda: (encoded, crop_window))
  return decode_window(encoded, crop_window, reduction, max_reduction), to_window, empty


def crop_image(encoded: tf.Tensor, height, width, matrix: tf.Tensor, output_size,
               max_reduction: int = DECODE_REDUCTIONS[-1], restart_layout=None,
               restart_offsets=None) -> tf.Tensor:
  """The crop `matrix` defines, from JPEG bytes (bilinear, zero fill outside the image).

  Args:
    encoded: JPEG bytes (scalar string). height, width: the image's size.
    matrix: [3, 3] image pixels -> output pixels. output_size: (height, width), Python ints.
    max_reduction: the largest decode reduction allowed (1: decode at full size).
    restart_layout, restart_offsets: the record's restart index (jpeg_window.py); with one,
      only the MCU rows and restart intervals around the window are decoded.

  Returns:
    uint8 [out_h, out_w, 3].
  """
  patch, to_window, empty = decode_for_crop(encoded, height, width, matrix, output_size,
                                            max_reduction, restart_layout, restart_offsets)
  return warp(patch, to_window, empty, output_size)
