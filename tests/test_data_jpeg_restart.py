"""JPEGs stored with restart markers (data_prep/jpeg_restart.py) and the crops cut from their
regions (okdhp_jax/data/jpeg_window.py): the same pixels as the source, the same crops."""

from __future__ import annotations

import glob
import io
import os

import numpy as np
import pytest
from PIL import Image

from data_prep import jpeg_baseline
from data_prep import jpeg_restart
from okdhp_jax.data import augment
from okdhp_jax.data import crop
from okdhp_jax.data import jpeg_window
from okdhp_jax.data import records
from okdhp_jax.data.tf_host import tf

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PHOTOS = sorted(glob.glob(os.path.join(REPO, 'data_prep', 'samples', '*', '*.jpg')))


def _decode(data: bytes) -> np.ndarray:
  return tf.io.decode_jpeg(data, channels=3).numpy()


def _restart_copy(path: str) -> bytes:
  with open(path, 'rb') as f:
    data = f.read()
  rewritten = jpeg_baseline.restart_copy(path, data)
  assert rewritten is not None, path
  return rewritten


@pytest.mark.parametrize('path', PHOTOS, ids=os.path.basename)
def test_bundled_photos_are_rewritten_without_loss_and_indexed(path):
  with open(path, 'rb') as f:
    original = f.read()
  rewritten = _restart_copy(path)
  np.testing.assert_array_equal(_decode(rewritten), _decode(original))
  frame = jpeg_window.read_frame(rewritten)
  layout, offsets = jpeg_window.restart_index(rewritten)
  mcu_h, mcu_w, interval, per_row, sof, scan = layout.tolist()
  assert (mcu_h, mcu_w) == (frame.mcu_height, frame.mcu_width)
  assert interval * per_row == frame.mcus_per_row  # intervals tile each MCU row
  assert len(offsets) == frame.mcu_rows * per_row + 1 and offsets[-1] == len(rewritten)
  assert rewritten[sof:sof + 2] == b'\xff\xc0' and scan == frame.scan_offset
  # Intervals at most 32 px (or a twentieth of the width) unless the markers would cost more
  # than a tenth of the file; the rewrite grows the file by at most that (plus the tables).
  assert interval * mcu_w <= max(32, frame.width // 20) or per_row == 1
  assert len(rewritten) <= 1.12 * len(original)


def _pillow_jpeg(array: np.ndarray, **options) -> bytes:
  out = io.BytesIO()
  Image.fromarray(array).save(out, format='JPEG', **options)
  return out.getvalue()


@pytest.mark.parametrize('size', [(1, 1), (17, 23), (33, 65), (8, 640), (101, 97)])
@pytest.mark.parametrize('options', [
    dict(subsampling=0, quality=95), dict(subsampling=1, quality=75),
    dict(subsampling=2, quality=100), dict(subsampling=2, quality=60, progressive=True),
    dict(grey=True, quality=90)], ids=['444', '422', '420_q100', '420_progressive', 'grey'])
def test_the_entropy_coder_is_lossless_for_any_sampling_and_size(size, options, tmp_path):
  options = dict(options)
  rng = np.random.default_rng(size[0] * 1000 + size[1])
  # Noise on a gradient: large and sparse coefficients, long zero runs (ZRL) at quality 100.
  y, x = np.mgrid[:size[0], :size[1]]
  image = (x * 3 + y * 2)[..., None] + np.array([0, 60, 120]) + rng.normal(0, 25, size + (3,))
  image = np.clip(image, 0, 255).astype(np.uint8)
  if options.pop('grey', False):
    image = image[..., 0]
  data = _pillow_jpeg(image, **options)
  path = tmp_path / 'source.jpg'
  path.write_bytes(data)
  rewritten = jpeg_baseline.restart_copy(str(path), data)
  assert rewritten is not None
  np.testing.assert_array_equal(_decode(rewritten), _decode(data))
  assert jpeg_window.restart_index(rewritten) is not None


def test_huffman_code_lengths_stay_within_16_bits():
  # Fibonacci counts give a maximally skewed tree (code lengths up to 32 before the limit).
  counts = np.zeros(256, np.int64)
  a, b = 1, 1
  for symbol in range(30):
    counts[symbol] = a
    a, b = b, a + b
  bits, huffval = jpeg_restart._code_lengths(counts)
  assert bits[0] == 0 and bits.sum() == len(huffval) == 30
  assert sorted(huffval.tolist()) == list(range(30))
  # A complete prefix code but for the reserved all-ones word: Kraft sum just below 1.
  kraft = sum(int(bits[n]) * 2.0 ** -n for n in range(1, 17))
  assert kraft == 1 - 2.0 ** -int(np.flatnonzero(bits)[-1])
  code, length = jpeg_restart._canonical_codes(bits, huffval)
  assert length[huffval].max() <= 16 and length[29] < length[0]  # frequent: shorter codes


def test_jpegs_whose_restart_intervals_do_not_tile_the_rows_are_not_indexed():
  image = np.full((40, 72, 3), 128, np.uint8)  # 9 MCUs per row at 4:4:4
  assert jpeg_window.restart_index(_pillow_jpeg(image, subsampling=0)) is None  # no markers
  crossing = _pillow_jpeg(image, subsampling=0, restart_marker_blocks=2)  # 2 does not divide 9
  assert jpeg_window.read_frame(crossing).restart_interval == 2
  assert jpeg_window.restart_index(crossing) is None
  tiling = _pillow_jpeg(image, subsampling=0, restart_marker_blocks=3)
  layout, offsets = jpeg_window.restart_index(tiling)
  assert layout[2:4].tolist() == [3, 3] and len(offsets) == 5 * 3 + 1
  assert jpeg_window.restart_index(tiling + b'\xff\xd0junk') is None  # markers after the end
  with pytest.raises(jpeg_window.Unsupported):
    jpeg_window.read_frame(b'not a jpeg')


def _crops(data: bytes, height: int, width: int, output_size, count: int, seed: int):
  """Random crops (scale, rotation, flip as in training) with and without the restart index."""
  layout, offsets = jpeg_window.restart_index(data)
  rng = np.random.default_rng(seed)
  for _ in range(count):
    center = rng.uniform([0, 0], [width, height]).astype(np.float32)
    scale = np.float32(rng.uniform(0.5, 4.0)) * np.array([0.75, 1.0], np.float32)
    rotation = np.float32(rng.choice([0.0, rng.uniform(-80, 80)]))
    matrix = augment.affine_matrix(tf.constant(center), tf.constant(scale), rotation,
                                   output_size, bool(rng.integers(2)))
    yield (crop.crop_image(tf.constant(data), height, width, matrix, output_size, 8,
                           tf.constant(layout), tf.constant(offsets)).numpy(),
           crop.crop_image(tf.constant(data), height, width, matrix, output_size, 8).numpy())


@pytest.mark.parametrize('name', ['mpii/004645041.jpg', 'coco/000000000785.jpg'])
def test_crops_from_the_region_are_the_crops_from_the_whole_image(name):
  # MPII: 4:2:0 and decoded at 1/2-1/8; COCO: 4:4:4 at full size. Equal to the last grey
  # level: the region's blocks are the image's, and chroma upsampling differs only in a
  # region's outermost pixels, which the window's margin keeps out of the warp's reach.
  data = _restart_copy(os.path.join(REPO, 'data_prep', 'samples', name))
  height, width = _decode(data).shape[:2]
  for with_region, whole in _crops(data, height, width, (256, 192), 24, seed=len(name)):
    np.testing.assert_array_equal(with_region, whole)


def test_a_window_of_the_region_decodes_like_the_whole_image():
  data = _restart_copy(os.path.join(REPO, 'data_prep', 'samples', 'coco', '000000197388.jpg'))
  layout, offsets = jpeg_window.restart_index(data)
  height, width = _decode(data).shape[:2]
  rng = np.random.default_rng(1)
  for ratio in (1, 2, 4, 8):
    rows, cols = -(-height // ratio), -(-width // ratio)
    for _ in range(6):
      y, x = rng.integers(0, rows), rng.integers(0, cols)
      window = tf.constant([y, x, rng.integers(1, rows - y + 1), rng.integers(1, cols - x + 1)],
                           tf.int32)
      part, part_window = jpeg_window.region(tf.constant(data), tf.constant(layout),
                                             tf.constant(offsets), height, width, window,
                                             tf.constant(ratio))
      assert len(part.numpy()) < len(data) or window.numpy()[2] * ratio > height // 2
      np.testing.assert_array_equal(
          tf.io.decode_and_crop_jpeg(part, part_window, channels=3, ratio=ratio).numpy(),
          tf.io.decode_and_crop_jpeg(data, window, channels=3, ratio=ratio).numpy())


def test_records_without_the_index_parse_and_crop_from_the_whole_image():
  # A JPEG without restart markers (--no-restart-markers, or a file the index cannot tile): no
  # restart fields.
  image = np.zeros((64, 48, 3), np.uint8)
  image[10:50, 12:36] = 200
  data = _pillow_jpeg(image, quality=95)
  example = records.PersonExample(
      image_bytes=data, image_filename='a.jpg', image_id=1, image_height=64, image_width=48,
      person_index=0, center=np.array([24.0, 32.0]), scale=np.array([0.24, 0.32]),
      joints=np.zeros((16, 2)), joints_vis=np.ones(16), box=np.array([0.0, 0.0, 48.0, 64.0]))
  parsed = records.parse(tf.constant(records.serialize(example)), 16)
  assert parsed['image/restart_layout'].numpy().tolist() == [0] * 6
  assert parsed['image/restart_offsets'].numpy().size == 0
  matrix = augment.affine_matrix(parsed['person/center'], parsed['person/scale'], 0.0, (32, 24))
  with_fields = crop.crop_image(data, 64, 48, matrix, (32, 24), 8,
                                parsed['image/restart_layout'],
                                parsed['image/restart_offsets'])
  np.testing.assert_array_equal(with_fields.numpy(),
                                crop.crop_image(data, 64, 48, matrix, (32, 24), 8).numpy())
