"""Progressive JPEGs stored as baseline ones (data_prep/jpeg_baseline.py): the same pixels."""

from __future__ import annotations

import collections
import concurrent.futures
import glob
import io
import json
import os
import shutil

import numpy as np
import pytest
from PIL import Image

from data_prep import common
from data_prep import jpeg_baseline
from data_prep import mpii
from okdhp_jax.data.tf_host import tf
from sample_data import mpii_annotations

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MPII_PHOTOS = sorted(glob.glob(os.path.join(REPO, 'data_prep', 'samples', 'mpii', '*.jpg')))


def _is_progressive(data: bytes) -> bool:
  with Image.open(io.BytesIO(data)) as image:
    return jpeg_baseline.is_progressive(image)


@pytest.mark.parametrize('path', MPII_PHOTOS, ids=os.path.basename)
def test_mpii_photos_become_baseline_and_every_window_decodes_the_same(path):
  with open(path, 'rb') as f:
    original = f.read()
  assert _is_progressive(original)
  loaded = common.load_image(path)
  assert loaded.baseline_rewrite and not _is_progressive(loaded.jpeg_bytes)
  assert (loaded.height, loaded.width) == tf.io.decode_jpeg(original).shape[:2]
  # The pipeline's decodes (okdhp_jax/data/crop.py): windows at every reduction it uses.
  for ratio in (1, 2, 4, 8):
    height, width = loaded.height // ratio, loaded.width // ratio
    for window in ([0, 0, height, width], [height // 5, width // 3, height // 2, width // 3],
                   [height // 2 + 3, 7, height // 3, width // 2]):
      expected = tf.io.decode_and_crop_jpeg(original, window, channels=3, ratio=ratio)
      got = tf.io.decode_and_crop_jpeg(loaded.jpeg_bytes, window, channels=3, ratio=ratio)
      np.testing.assert_array_equal(got.numpy(), expected.numpy(), err_msg=f'{window} 1/{ratio}')


def test_a_grey_progressive_jpeg_is_rewritten_too(tmp_path):
  rng = np.random.default_rng(0)
  grey = (rng.random((70, 90)) * 255).astype(np.uint8)
  path = str(tmp_path / 'grey.jpg')
  Image.fromarray(grey).save(path, progressive=True, quality=90)
  loaded = common.load_image(path)
  assert loaded.baseline_rewrite and not _is_progressive(loaded.jpeg_bytes)
  with open(path, 'rb') as f:
    np.testing.assert_array_equal(tf.io.decode_jpeg(loaded.jpeg_bytes).numpy(),
                                  tf.io.decode_jpeg(f.read()).numpy())


def test_a_rewrite_that_would_change_a_pixel_keeps_the_original_bytes(tmp_path, monkeypatch):
  # A progressive file cut after its first scans: the decoder smooths the blocks whose
  # coefficients never came, which a baseline file cannot ask for, so the rewrite decodes
  # differently and the check keeps the original.
  with open(MPII_PHOTOS[0], 'rb') as f:
    data = f.read()
  scans = [i for i in range(len(data) - 1) if data[i:i + 2] == b'\xff\xda']
  cut = data[:scans[3]] + b'\xff\xd9'
  path = tmp_path / 'cut.jpg'
  path.write_bytes(cut)
  scratch = tmp_path / 'scratch'
  scratch.mkdir()
  assert jpeg_baseline.baseline_copy(str(path), cut, str(scratch)) is None
  loaded = common.load_image(str(path))
  assert loaded.jpeg_bytes == cut and not loaded.baseline_rewrite
  # A file jpeglib cannot read is no error either: the bytes stay.
  broken = tmp_path / 'not_a_jpeg.jpg'
  broken.write_bytes(b'\xff\xd8not a jpeg')
  assert jpeg_baseline.baseline_copy(str(broken), broken.read_bytes(), str(scratch)) is None
  assert os.listdir(scratch) == []  # no temporary file left behind, failed or not
  monkeypatch.setattr(jpeg_baseline, 'baseline_copy', lambda *args: None)
  monkeypatch.setattr(jpeg_baseline, 'restart_copy', lambda *args: None)
  loaded = common.load_image(MPII_PHOTOS[0])
  with open(MPII_PHOTOS[0], 'rb') as f:
    assert loaded.jpeg_bytes == f.read() and not loaded.baseline_rewrite


def test_rewrites_on_threads_are_the_rewrites_made_in_turn():
  photos = [(path, open(path, 'rb').read()) for path in MPII_PHOTOS]
  serial = [jpeg_baseline.baseline_copy(path, data) for path, data in photos]
  assert all(serial) and all(s.count(b'JFIF\0') == 1 for s in serial)  # one JFIF marker
  with concurrent.futures.ThreadPoolExecutor(8) as pool:
    threaded = list(pool.map(lambda job: jpeg_baseline.baseline_copy(*job), photos * 6))
  assert threaded == serial * 6


def test_each_photo_is_rewritten_once_though_its_people_are_not_adjacent(tmp_path, monkeypatch):
  samples = os.path.dirname(MPII_PHOTOS[0])
  with open(os.path.join(samples, 'test_mpii.json')) as f:
    people = json.load(f)
  images = tmp_path / 'images'
  shutil.copytree(samples, images)
  shutil.copy(MPII_PHOTOS[0], images / 'unseen.jpg')
  hidden = dict(people[0], image='unseen.jpg', joints_vis=[0] * 16)  # skipped: not counted
  annotations = mpii_annotations(
      tmp_path / 'annotations',
      train=[people[i % len(people)] for i in range(4 * len(people))] + [hidden])
  loads = []
  load_image = common.load_image
  monkeypatch.setattr(common, 'load_image',
                      lambda path, *args: loads.append(path) or load_image(path, *args))
  info, _ = mpii.convert(annotations, str(images), str(tmp_path / 'records'),
                         show_progress=False, workers=2)
  assert info['splits'] == {'train': 20, 'valid': 5}
  assert sorted(collections.Counter(loads).values()) == [1] + [2] * 5  # once per photo, split
  assert info['progressive_jpegs_stored_as_baseline'] == {'train': 5, 'valid': 5}
