"""Images and person boxes in, network-input crops out, with the evaluation's own crop op.

Every image reaches the crop as JPEG bytes, as in the records: a JPEG file's own bytes, and
anything else (PNG, CMYK, an RGB array) re-encoded at quality 95 as data_prep does when it
writes the records, so a person predicted here gets the crop the evaluation would give them.
The crop is `crop.crop_image` (decode only the box's window, at reduced scale when the crop
shrinks it, bilinear warp, zero fill) with the run's config.data.max_decode_reduction (an
export's model.json records it), one tf.function per input size mapped over the boxes of an
image.

Images are opened lazily: `open_image` reads only the header, so that thousands of images can
be checked (missing files, boxes outside, images over the pixel limit, truncated JPEGs) before
any network runs, and the bytes are read again when the crop needs them. Image files are read
as the converters read them (okdhp_jax/data/image_files.py: 16-bit images scaled to 8 bits,
EXIF orientation not applied, a pixel limit that $OKDHP_MAX_IMAGE_PIXELS raises).
"""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import Callable, Sequence

import numpy as np

from okdhp_jax import paths
from okdhp_jax.data import augment
from okdhp_jax.data import crop as crop_lib
from okdhp_jax.data import image_files
from okdhp_jax.data.tf_host import tf



@dataclasses.dataclass(frozen=True)
class ImageSource:
  """One image, by size, with its JPEG bytes read on demand.

  Attributes:
    name: what messages call it (the path, or `images[3]` for arrays and bytes).
    height, width: in pixels.
    read_jpeg: returns the JPEG bytes the crop op decodes.
  """

  name: str
  height: int
  width: int
  read_jpeg: Callable[[], bytes] = dataclasses.field(repr=False)


def _as_jpeg(data: bytes, name: str) -> tuple[Callable[[], bytes], int, int]:
  """(bytes reader, height, width) of encoded image bytes; JPEG kept, others re-encoded.

  Raises:
    image_files.ImageError (a ValueError) naming `name`.
  """
  header = image_files.read_header(data, name)
  if header.is_plain_jpeg:
    return (lambda: data), header.height, header.width
  return (lambda: image_files.reencode(data, name)), header.height, header.width


def read_file(path: str | os.PathLike) -> bytes:
  target = paths.resolve(path)
  if not target.exists():
    raise FileNotFoundError(f'image file {os.fspath(path)} does not exist')
  return target.read_bytes()


def open_image(source, name: str | None = None) -> ImageSource:
  """An image given as a path (str or os.PathLike), encoded bytes, or uint8 pixels.

  Args:
    source: a file path (local or gs://), the bytes of an image file, or an RGB (or grey)
      uint8 array [height, width, 3] ([height, width]).
    name: what errors call it; defaults to the path, or 'image'.

  Raises:
    FileNotFoundError naming a missing file; ValueError for anything that is not an image.
  """
  if isinstance(source, (str, os.PathLike)):
    name = name or os.fspath(source)
    path = source
    _, height, width = _as_jpeg(read_file(path), name)  # checks the header now.
    return ImageSource(name, height, width, lambda: _as_jpeg(read_file(path), name)[0]())
  name = name or 'image'
  if isinstance(source, (bytes, bytearray)):
    read, height, width = _as_jpeg(bytes(source), name)
    return ImageSource(name, height, width, read)
  pixels = np.asarray(source)
  if pixels.ndim == 2:
    pixels = np.repeat(pixels[..., None], 3, axis=-1)
  if pixels.dtype != np.uint8 or pixels.ndim != 3 or pixels.shape[-1] != 3 or 0 in pixels.shape:
    raise ValueError(f'{name}: pixel arrays must be uint8 [height, width, 3] RGB; got '
                     f'{pixels.dtype} {pixels.shape}')
  return ImageSource(name, pixels.shape[0], pixels.shape[1],
                     functools.partial(image_files.encode_jpeg, np.ascontiguousarray(pixels)))


def load_rgb(path: str | os.PathLike) -> np.ndarray:
  """The full-resolution RGB pixels uint8 [height, width, 3] of an image file (for drawing)."""
  return image_files.decode_rgb(read_file(path), os.fspath(path))


def check_boxes(boxes, image: ImageSource, labels: Sequence[str] | None = None) -> np.ndarray:
  """Person boxes of `image` as float64 [N, 4] (x, y, w, h), each one checked.

  A box that does not overlap the image at all is refused: its crop would be all zeros, and
  the network still answers every joint, often with a high score (issue 16). A box that only
  partly leaves the image is fine (the crop is zero-filled outside, as in the evaluation).

  Args:
    boxes: [N, 4] or [4] (x, y, w, h) in image pixels.
    labels: what messages call each box; defaults to 'box i'.
  """
  boxes = np.asarray(boxes, np.float64)
  if boxes.ndim == 1 and boxes.size == 4:
    boxes = boxes[None]
  if boxes.ndim != 2 or boxes.shape[1] != 4:
    raise ValueError(f'boxes for {image.name} must be [N, 4] (x, y, w, h); got shape '
                     f'{boxes.shape}')
  for i, (x, y, w, h) in enumerate(boxes):
    label = labels[i] if labels is not None else f'box {i}'
    text = f'{label} (x, y, w, h = {x:g}, {y:g}, {w:g}, {h:g})'
    if not np.all(np.isfinite(boxes[i])):
      raise ValueError(f'{text} on {image.name} is not finite')
    if w <= 0 or h <= 0:
      raise ValueError(f'{text} on {image.name} needs a positive width and height')
    if min(x + w, image.width) <= max(x, 0) or min(y + h, image.height) <= max(y, 0):
      raise ValueError(f'{text} lies entirely outside {image.name} ({image.width}x'
                       f'{image.height} pixels): there is no person to crop there')
  return boxes


@functools.lru_cache(maxsize=None)
def _crop_function(input_size: tuple[int, int], max_reduction: int):
  """tf.function (jpeg, height, width, centers [N, 2], scales [N, 2]) -> uint8 [N, h, w, 3]."""
  spec = tf.TensorSpec

  @tf.function(input_signature=[spec([], tf.string), spec([], tf.int32), spec([], tf.int32),
                                spec([None, 2], tf.float32), spec([None, 2], tf.float32)])
  def crop(jpeg, height, width, centers, scales):
    def one(center_scale):
      center, scale = center_scale
      matrix = augment.affine_matrix(center, scale, 0.0, input_size)
      return crop_lib.crop_image(jpeg, height, width, matrix, input_size, max_reduction)
    return tf.map_fn(one, (centers, scales),
                     fn_output_signature=spec([*input_size, 3], tf.uint8))

  return crop


def crop_people(image: ImageSource, centers, scales, input_size,
                max_reduction: int = crop_lib.DECODE_REDUCTIONS[-1]) -> np.ndarray:
  """The network inputs of the people of one image, as the evaluation crops them.

  Args:
    centers: [N, 2] (x, y) box centres; scales: [N, 2] (units of 200 px), at the input's
      aspect ratio (geometry.box_to_center_scale).
    input_size: (height, width) of the network input.
    max_reduction: the largest JPEG decode reduction (config.data.max_decode_reduction).

  Returns:
    uint8 [N, height, width, 3].
  """
  input_size = tuple(int(s) for s in input_size)
  crop = _crop_function(input_size, int(max_reduction))
  try:
    crops = crop(tf.constant(image.read_jpeg()), tf.constant(image.height, tf.int32),
                 tf.constant(image.width, tf.int32), tf.constant(centers, tf.float32),
                 tf.constant(scales, tf.float32))
  except tf.errors.InvalidArgumentError as error:
    raise ValueError(f'{image.name} could not be decoded by TensorFlow '
                     f'({crop_lib.decode_error_reason(error)})') from None
  return crops.numpy()
