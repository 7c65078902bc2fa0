"""Hostile image files (issue 37): read correctly or refused by name, by the inference API and
the converters alike (okdhp_jax/data/image_files.py is their one reader).

Every file is built here with numpy and Pillow: a 16-bit grey PNG, a small JPEG whose frame
header is patched to claim 20000x20000, a JPEG cut in half. tests/test_inference.py runs
tools.predict on them.
"""

from __future__ import annotations

import io
import os
import shutil
import struct

import numpy as np
import pytest
from PIL import Image

from data_prep import common
from data_prep import mpii
from okdhp_jax.data import crop as crop_lib
from okdhp_jax.data import image_files
from okdhp_jax.data.tf_host import tf
from okdhp_jax.inference import images
from sample_data import MPII_SAMPLES, mpii_annotations, mpii_people
from test_data_converters_bad_input import read_split

PHOTO = os.path.join(MPII_SAMPLES, '005808361.jpg')  # the first sample person's image
BASELINE = os.path.join(os.path.dirname(MPII_SAMPLES), 'coco', '000000000785.jpg')


def grey_photo(path=PHOTO) -> np.ndarray:
  """uint8 [height, width]: a sample photo in grey."""
  return np.asarray(Image.open(path).convert('L'))


def save_sixteen_bit(path, grey: np.ndarray) -> str:
  """A 16-bit grey PNG (Pillow mode I;16) holding grey * 257: full range, 255 -> 65535."""
  Image.fromarray(grey.astype(np.uint16) * 257).save(path)
  return str(path)


def forged_jpeg(height: int = 20000, width: int = 20000) -> bytes:
  """A 64x64 JPEG of a few hundred bytes whose frame header (SOF0) claims height x width."""
  buffer = io.BytesIO()
  Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(buffer, format='JPEG')
  data = bytearray(buffer.getvalue())
  position = 2
  while data[position + 1] != 0xC0:
    position += 2 + struct.unpack('>H', data[position + 2:position + 4])[0]
  struct.pack_into('>HH', data, position + 5, height, width)
  return bytes(data)


def truncated_jpeg(path=BASELINE) -> bytes:
  """The first half of a baseline JPEG photo, as an interrupted download leaves it."""
  with open(path, 'rb') as f:
    data = f.read()
  return data[:len(data) // 2]


def encoded(image: Image.Image, file_format: str, **options) -> bytes:
  buffer = io.BytesIO()
  image.save(buffer, format=file_format, **options)
  return buffer.getvalue()


# 1. High bit depths: scaled by the range of their type, or refused.

def test_sixteen_bit_grey_is_scaled_by_the_range_of_its_type(tmp_path):
  """value / 257, rounded: the picture as an 8-bit grey one (Pillow alone clips to white)."""
  grey = grey_photo()
  path = save_sixteen_bit(tmp_path / 'grey16.png', grey)
  assert Image.open(path).mode == 'I;16'
  assert (np.asarray(Image.open(path).convert('RGB')) == 255).mean() > 0.9  # what Pillow gives
  expected = np.repeat(grey[..., None], 3, axis=-1)
  np.testing.assert_array_equal(images.load_rgb(path), expected)
  # Neither stretched to the image's own range: a dark image stays dark.
  dark = np.array([[0, 257, 1000, 12850]], np.uint16)  # 0, 1, 3.9, 50 in 8 bits
  pixels = image_files.decode_rgb(encoded(Image.fromarray(dark), 'PNG'), 'dark.png')
  np.testing.assert_array_equal(pixels[..., 0], [[0, 1, 4, 50]])
  # Pillow's 32-bit integer mode holding 16-bit samples (a 16-bit PGM) is read the same way.
  pgm = encoded(Image.fromarray(dark.astype(np.int32)), 'PPM')
  assert Image.open(io.BytesIO(pgm)).mode == 'I'
  np.testing.assert_array_equal(image_files.decode_rgb(pgm, 'dark.pgm'), pixels)


def test_images_without_a_range_to_scale_by_are_refused_by_name():
  floats = encoded(Image.fromarray(np.array([[0.0, 0.5]], np.float32)), 'TIFF')
  with pytest.raises(image_files.ImageError, match=r'^float.tif has 32-bit floating-point '
                                                   r'pixels.*save it with 8- or 16-bit'):
    images.open_image(floats, 'float.tif').read_jpeg()
  wide = encoded(Image.fromarray(np.array([[0, 70000]], np.int32)), 'TIFF')
  with pytest.raises(ValueError, match=r'^wide.tif has 32-bit integer pixels \(mode I\) '
                                       r'outside 0..65535'):
    image_files.decode_rgb(wide, 'wide.tif')


# 2. Palette, grey + alpha, CMYK and EXIF-rotated images: read as stored, converted by Pillow.

def test_palette_alpha_cmyk_and_exif_rotated_images_read_as_stored(tmp_path):
  photo = Image.open(PHOTO).resize((96, 64))
  exif = Image.Exif()
  exif[0x0112] = 6  # 'rotate 90 degrees to display': not applied, as TensorFlow does not.
  files = {'palette.png': encoded(photo.convert('P'), 'PNG'),
           'grey_alpha.png': encoded(photo.convert('LA'), 'PNG'),
           'cmyk.jpg': encoded(photo.convert('CMYK'), 'JPEG', quality=95),
           'rotated.jpg': encoded(photo, 'JPEG', exif=exif.tobytes())}
  for name, data in files.items():
    path = tmp_path / name
    path.write_bytes(data)
    expected = np.asarray(Image.open(path).convert('RGB'))
    assert expected.shape == (64, 96, 3), name  # the stored orientation
    np.testing.assert_array_equal(images.load_rgb(path), expected, err_msg=name)
    source = images.open_image(str(path))
    assert (source.height, source.width) == (64, 96), name
    loaded = common.load_image(str(path))
    assert (loaded.height, loaded.width) == (64, 96), name
    # The record holds the pixels the predictor crops from.
    np.testing.assert_array_equal(tf.io.decode_jpeg(loaded.jpeg_bytes, channels=3).numpy(),
                                  tf.io.decode_jpeg(source.read_jpeg(), channels=3).numpy(),
                                  err_msg=name)


# 3. A stated pixel limit, checked on the header before anything is decoded.

def test_an_image_over_the_pixel_limit_is_refused_naming_file_limit_and_variable(monkeypatch):
  bomb = forged_jpeg()
  assert len(bomb) < 1000
  message = (r'^bomb.jpg is 20000x20000 = 400,000,000 pixels, over the limit of 89,478,485: '
             r'set OKDHP_MAX_IMAGE_PIXELS to a larger number to read it$')
  with pytest.raises(image_files.ImageError, match=message) as refused:
    images.open_image(bomb, 'bomb.jpg')
  assert refused.value.reason == 'image over the pixel limit'
  assert image_files.DEFAULT_MAX_PIXELS == Image.MAX_IMAGE_PIXELS  # Pillow's own default

  monkeypatch.setenv(image_files.MAX_PIXELS_VARIABLE, '400000000')  # raised: the header passes
  assert image_files.max_pixels() == 400_000_000
  assert images.open_image(bomb, 'bomb.jpg').width == 20000
  monkeypatch.setenv(image_files.MAX_PIXELS_VARIABLE, '1000')  # lowered: a photo is refused
  with pytest.raises(ValueError, match=r'005808361.jpg is .* over the limit of 1,000'):
    images.open_image(PHOTO)
  monkeypatch.setenv(image_files.MAX_PIXELS_VARIABLE, 'lots')
  with pytest.raises(ValueError, match="OKDHP_MAX_IMAGE_PIXELS='lots' must be a positive"):
    images.open_image(PHOTO)


# 4. Truncated and undecodable files: one line naming the file.

def test_a_truncated_jpeg_is_refused_from_its_header_in_one_line(tmp_path):
  """Refused before TensorFlow sees it: a crop above the cut would decode without complaint
  (a baseline JPEG's rows are decoded top to bottom)."""
  path = tmp_path / 'cut.jpg'
  path.write_bytes(truncated_jpeg())
  assert tf.io.decode_and_crop_jpeg(path.read_bytes(), [0, 0, 8, 8], channels=3).shape == (8, 8, 3)
  with pytest.raises(image_files.ImageError, match=r'^\S*cut.jpg is truncated: its JPEG data '
                                                   r'\([\d,]+ bytes\) ends before the end-of-'
                                                   r'image marker$') as refused:
    images.open_image(str(path))
  assert refused.value.reason == 'corrupt image' and '\n' not in str(refused.value)
  with pytest.raises(ValueError, match='cut.jpg is truncated'):
    images.load_rgb(path)


def test_tensorflow_decode_errors_keep_only_the_ops_reason(monkeypatch):
  """A decode that fails inside a tf.function is one line, without the graph listing."""
  @tf.function
  def decode(data):
    return tf.io.decode_jpeg(data, channels=3)

  with pytest.raises(tf.errors.InvalidArgumentError) as failed:
    decode(tf.constant(b'not an image'))
  assert 'Detected at node' in failed.value.message  # what the reason is cut from
  reason = crop_lib.decode_error_reason(failed.value)
  assert reason.startswith('Unknown image file format. One of JPEG') and reason.endswith(
      'required.'), reason  # the formats listed vary with TensorFlow's version

  # A header over TensorFlow's own size limit, let through by a raised pixel limit.
  monkeypatch.setenv(image_files.MAX_PIXELS_VARIABLE, '400000000')
  source = images.open_image(forged_jpeg(), 'bomb.jpg')
  with pytest.raises(ValueError) as refused:
    images.crop_people(source, [[100.0, 100.0]], [[0.5, 0.5]], (64, 64), max_reduction=1)
  assert str(refused.value) == ('bomb.jpg could not be decoded by TensorFlow (jpeg::Uncompress '
                                'failed. Invalid JPEG data or crop window.)')


# 5. The converters: the same reader, the refusals skipped and counted by reason.

def test_converters_read_and_refuse_hostile_images_as_predict_does(tmp_path):
  image_dir = tmp_path / 'images'
  shutil.copytree(MPII_SAMPLES, image_dir)
  grey16 = save_sixteen_bit(image_dir / 'grey16.png', grey_photo())
  (image_dir / 'bomb.jpg').write_bytes(forged_jpeg())
  (image_dir / 'cut.jpg').write_bytes(truncated_jpeg())
  (image_dir / 'float.tif').write_bytes(
      encoded(Image.fromarray(np.zeros((8, 8), np.float32)), 'TIFF'))
  first = mpii_people()[0]
  train = [dict(first, image=name) for name in ('grey16.png', 'bomb.jpg', 'cut.jpg', 'float.tif')]
  annotations = mpii_annotations(tmp_path / 'annotations', train=train)
  out = str(tmp_path / 'records')
  info, report = mpii.convert(annotations, str(image_dir), out, show_progress=False)

  assert info['splits']['train'] == 1
  assert dict(report.skipped['train']) == {
      'image over the pixel limit': 1, 'corrupt image': 1, 'unsupported pixel type': 1}
  messages = '\n'.join(report.messages)
  assert 'bomb.jpg is 20000x20000' in messages and 'OKDHP_MAX_IMAGE_PIXELS' in messages
  assert 'cut.jpg is truncated' in messages and 'float.tif has 32-bit floating-point' in messages
  assert all('\n' not in m for m in report.messages)
  # The 16-bit photo is stored as the predictor reads it: the 8-bit grey photo.
  record, = read_split(out, 'train', 16)
  as_grey = image_files.encode_jpeg(np.repeat(grey_photo()[..., None], 3, axis=-1))
  assert record['image/encoded'] == images.open_image(grey16).read_jpeg() == as_grey
