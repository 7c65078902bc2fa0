"""Image files read as 8-bit RGB, or refused with one line naming the file.

The converters (data_prep/common.py) and the inference API (okdhp_jax/inference/images.py)
read every image file through here, so a record and a prediction see the same pixels:

* Pixels are taken as stored: an EXIF orientation tag is not applied, since TensorFlow's JPEG
  decoder, which crops for training and inference, does not apply it and annotations are given
  in stored pixels. Palette, grey, grey+alpha, CMYK and RGBA images become RGB by Pillow's
  conversion (alpha is dropped).
* 16-bit grey samples (Pillow's I;16 modes, and its 32-bit integer mode 'I' when every value
  lies in 0..65535, as in a 16-bit PGM) are scaled to 8 bits by the full range of the type:
  value / 257, rounded, so 65535 is 255. Pillow's own conversion clips them at 255 (a white
  image); an image's own minimum and maximum would brighten a dark photo. 16-bit colour images
  Pillow reads as their high byte (value // 256, within 1 of value / 257). Other 32-bit
  integer images and floating-point ones have no range to scale by and are refused.
* An image of more than `max_pixels()` pixels (width x height from the header, before anything
  is decoded) is refused: by default Pillow's own limit, 89,478,485, since a forged header on a
  small file could otherwise ask for gigabytes. The environment variable
  OKDHP_MAX_IMAGE_PIXELS raises it, usefully up to 178,956,970: TensorFlow's JPEG decoder, which
  makes every crop, refuses a larger image (2**29 bytes of RGB) wherever a crop needs it at
  full scale.
* A JPEG with no end-of-image marker after its first scan is refused from its bytes alone
  (a truncated file: Pillow and TensorFlow both fail to decode it whole, while TensorFlow
  decodes a crop above the cut without complaint).
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import threading

import numpy as np
from PIL import Image

from okdhp_jax.data import jpeg_window

MAX_PIXELS_VARIABLE = 'OKDHP_MAX_IMAGE_PIXELS'
DEFAULT_MAX_PIXELS = 89_478_485  # Pillow's Image.MAX_IMAGE_PIXELS (2**30 // 4 // 3).
SIXTEEN_BIT_MODES = ('I;16', 'I;16L', 'I;16B', 'I;16N')
# What an image that is not a plain JPEG is stored or cropped from: a JPEG of this quality.
JPEG_QUALITY = 95
_EOI = b'\xff\xd9'
_SOS = 0xDA
# Held while Pillow's module-wide limit is off for one Image.open (_opened), so that threads
# reading images at once (the converters' loaders) put it back in turn.
_PILLOW_LIMIT_LOCK = threading.Lock()


class ImageError(ValueError):
  """An image file that is refused; the message names it, `reason` is a summary bucket."""

  def __init__(self, reason: str, message: str):
    super().__init__(message)
    self.reason = reason


@dataclasses.dataclass(frozen=True)
class Header:
  """What an image file's header says.

  Attributes:
    format: Pillow's name of the file format ('JPEG', 'PNG', ...).
    mode: Pillow's pixel mode ('RGB', 'L', 'I;16', 'CMYK', ...).
    height, width: in pixels.
    progressive: a progressive JPEG.
  """

  format: str | None
  mode: str
  height: int
  width: int
  progressive: bool

  @property
  def is_plain_jpeg(self) -> bool:
    """A grey or RGB JPEG, which TensorFlow's decoder takes as it is."""
    return self.format == 'JPEG' and self.mode in ('RGB', 'L')


def max_pixels() -> int:
  """The largest width x height read: $OKDHP_MAX_IMAGE_PIXELS, else DEFAULT_MAX_PIXELS."""
  text = os.environ.get(MAX_PIXELS_VARIABLE, '').strip()
  if not text:
    return DEFAULT_MAX_PIXELS
  try:
    value = int(text.replace('_', '').replace(',', ''))
  except ValueError:
    value = 0
  if value < 1:
    raise ValueError(f'{MAX_PIXELS_VARIABLE}={text!r} must be a positive whole number of '
                     'pixels')
  return value


@contextlib.contextmanager
def _opened(data: bytes, name: str):
  """The Pillow image of `data` with its header checked; ImageError naming `name` otherwise.

  Pillow's own decompression-bomb check is off while the header is read, so that the limit
  here (which may be set above Pillow's) is the one that applies, with its own message.
  """
  try:
    with _PILLOW_LIMIT_LOCK:
      pillow_limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
      try:
        image = Image.open(io.BytesIO(data))
      finally:
        Image.MAX_IMAGE_PIXELS = pillow_limit
  except Exception as error:  # pylint: disable=broad-except  (Pillow raises many types)
    raise _unreadable(name, error) from None
  with image:
    _check_size(image, name)
    if image.format == 'JPEG':
      _check_jpeg_end(data, name)
    yield image


def _unreadable(name: str, error: Exception) -> ImageError:
  return ImageError('corrupt image', f'{name} is not a readable image '
                                     f'({type(error).__name__}: {error})')


def _check_size(image: Image.Image, name: str) -> None:
  width, height = image.size
  if width < 1 or height < 1:
    raise ImageError('corrupt image', f'{name} has size {width}x{height}')
  limit = max_pixels()
  if width * height > limit:
    raise ImageError('image over the pixel limit',
                     f'{name} is {width}x{height} = {width * height:,} pixels, over the limit '
                     f'of {limit:,}: set {MAX_PIXELS_VARIABLE} to a larger number to read it')


def _check_jpeg_end(data: bytes, name: str) -> None:
  """ImageError unless an EOI marker follows the first scan's header (entropy-coded data
  cannot hold 0xFFD9, so its absence means the file was cut short)."""
  try:
    scan = next(offset + 2 + length for marker, offset, length in jpeg_window.segments(data)
                if marker == _SOS)
  except jpeg_window.Unsupported:
    return  # a header Pillow reads but this parser does not: the full decode judges it.
  if data.find(_EOI, scan) < 0:
    raise ImageError('corrupt image', f'{name} is truncated: its JPEG data ({len(data):,} '
                                      'bytes) ends before the end-of-image marker')


def read_header(data: bytes, name: str) -> Header:
  """The header of image-file bytes, checked (size, pixel limit, a truncated JPEG).

  Raises:
    ImageError naming `name`.
  """
  with _opened(data, name) as image:
    progressive = bool(image.info.get('progressive') or image.info.get('progression'))
    return Header(image.format, image.mode, image.height, image.width,
                  image.format == 'JPEG' and progressive)


def check_decodes(data: bytes, name: str) -> None:
  """ImageError naming `name` unless every pixel of the image decodes (damage inside the data
  that the header does not show)."""
  with _opened(data, name) as image:
    _load(image, name)


def decode_rgb(data: bytes, name: str) -> np.ndarray:
  """The pixels of image-file bytes as uint8 [height, width, 3] RGB, fully decoded.

  Raises:
    ImageError naming `name` for anything not read whole (see the module docstring).
  """
  with _opened(data, name) as image:
    _load(image, name)
    return to_rgb(image, name)


def encode_jpeg(pixels: np.ndarray, quality: int = JPEG_QUALITY) -> bytes:
  """uint8 [height, width, 3] (or [height, width]) pixels as JPEG bytes."""
  out = io.BytesIO()
  Image.fromarray(np.asarray(pixels, np.uint8)).save(out, format='JPEG', quality=quality)
  return out.getvalue()


def reencode(data: bytes, name: str) -> bytes:
  """Image-file bytes as the JPEG the converters store and the predictor crops from; raises
  ImageError naming `name`."""
  return encode_jpeg(decode_rgb(data, name))


def _load(image: Image.Image, name: str) -> None:
  try:
    image.load()
  except Exception as error:  # pylint: disable=broad-except  (Pillow raises many types)
    raise _unreadable(name, error) from None


def to_rgb(image: Image.Image, name: str) -> np.ndarray:
  """uint8 [height, width, 3] of a loaded Pillow image; high bit depths scaled by their type."""
  if image.mode in SIXTEEN_BIT_MODES or image.mode == 'I':
    return _sixteen_bit_grey(np.asarray(image), image.mode, name)
  if image.mode == 'F':
    raise ImageError('unsupported pixel type',
                     f'{name} has 32-bit floating-point pixels, which have no fixed range to '
                     'scale to 8 bits: save it with 8- or 16-bit samples')
  try:
    return np.asarray(image.convert('RGB'))
  except Exception as error:  # pylint: disable=broad-except  (a mode Pillow cannot convert)
    raise _unreadable(name, error) from None


def _sixteen_bit_grey(values: np.ndarray, mode: str, name: str) -> np.ndarray:
  """uint8 [height, width, 3] of 16-bit grey samples [height, width]: round(value / 257)."""
  if values.size and (values.min() < 0 or values.max() > 65535):
    raise ImageError('unsupported pixel type',
                     f'{name} has 32-bit integer pixels (mode {mode}) outside 0..65535, which '
                     'have no fixed range to scale to 8 bits: save it with 8- or 16-bit samples')
  grey = np.round(values.astype(np.float32) / 257.0).astype(np.uint8)
  return np.repeat(grey[..., None], 3, axis=-1)
