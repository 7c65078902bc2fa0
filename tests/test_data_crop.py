"""The crop decodes a JPEG window at 1/2, 1/4 or 1/8 scale when the crop shrinks it that much:
markers stay where the joints say, and real photos stay close to the full-size decode."""

from __future__ import annotations

import os

import cv2
import ml_collections
import numpy as np
import pytest
import tensorflow as tf

from data_prep import coco
from data_prep import mpii
from okdhp_jax.data import augment
from okdhp_jax.data import crop
from okdhp_jax.data import image_files
from okdhp_jax.data import meta as meta_lib
from okdhp_jax.data import pipeline
from okdhp_jax.data import records
from sample_data import MPII_SAMPLES, mpii_annotations

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLES = os.path.join(REPO, 'data_prep', 'samples')
DRAWS = 8  # augmentation draws per person


@pytest.fixture(scope='module')
def real_people(tmp_path_factory):
  """[(meta, augmentation kwargs, parsed record)] for the bundled full-size MPII and COCO
  photos (5 and 12 people), through the real converters."""
  tmp = tmp_path_factory.mktemp('real')
  mpii.convert(mpii_annotations(tmp / 'mpii'), MPII_SAMPLES, str(tmp / 'mpii_records'),
               show_progress=False)
  coco.convert([os.path.join(SAMPLES, 'coco', 'test_coco.json')], os.path.join(SAMPLES, 'coco'),
               str(tmp / 'coco_records'), split='train', show_progress=False)
  # PAPER.md 5: MPII 256x256, scale +-25 %, rotation +-30 deg (p 0.6), flip; COCO 256x192 with
  # HRNet's scale 0.35, rotation 45 and half-body 0.3.
  common_kwargs = dict(rotation_prob=0.6, flip=True, half_body_min_joints=8)
  setups = [
      ('mpii', dict(input_size=(256, 256), scale_factor=0.25, rotation_factor=30.0,
                    half_body_prob=0.0, **common_kwargs)),
      ('coco', dict(input_size=(256, 192), scale_factor=0.35, rotation_factor=45.0,
                    half_body_prob=0.3, **common_kwargs)),
  ]
  out = []
  for name, kwargs in setups:
    meta = meta_lib.get_meta(name)
    files = records.split_files(str(tmp / f'{name}_records'), 'train')
    for serialized in tf.data.TFRecordDataset(files):
      out.append((meta, kwargs, records.parse(serialized, meta.num_joints)))
  assert len(out) == 5 + 12
  return out


def test_reduced_decode_stays_close_to_the_full_size_decode_on_real_photos(real_people):
  """Every augmented crop of the 17 real people (8 draws each) against the same crop decoded at
  full size. The two differ only where the full-size decode aliases (edges and fine texture:
  sampling 1 pixel in 2-4 picks a detail or misses it); joints are the same numbers.

  Measured (2026-11-27): mean |difference| 1.5 grey levels over the MPII crops and 0.8 over
  COCO's, 4.3 in the worst crop; at most 4.3 % of a crop's pixels differ by more than 32; the
  largest single difference is 166 (one pixel of a bright edge).
  """
  reductions, means, worst = [], [], 0
  for index, (meta, kwargs, parsed) in enumerate(real_people):
    for draw in range(DRAWS):
      seed = tf.constant([index, draw], tf.int64)
      exact = augment.train_example(parsed, seed, meta=meta, max_decode_reduction=1, **kwargs)
      fast = augment.train_example(parsed, seed, meta=meta, **kwargs)
      np.testing.assert_array_equal(fast['joints'].numpy(), exact['joints'].numpy())
      np.testing.assert_array_equal(fast['joints_vis'].numpy(), exact['joints_vis'].numpy())
      difference = np.abs(fast['image'].numpy().astype(int) - exact['image'].numpy().astype(int))
      channel_max = difference.max(-1)
      assert difference.mean() <= 6.0, (index, draw, difference.mean())
      assert (channel_max > 32).mean() <= 0.06, (index, draw, (channel_max > 32).mean())
      means.append(difference.mean())
      worst = max(worst, int(difference.max()))
      augmentation = {k: v for k, v in kwargs.items() if k != 'input_size'}
      matrix, _ = augment.augmentation_matrix(parsed, seed, input_size=kwargs['input_size'],
                                              meta=meta, **augmentation)
      reductions.append(int(crop.decode_reduction(matrix, 8)))
  assert np.mean(means) <= 2.0 and worst <= 200, (np.mean(means), worst)
  # The comparison means something: MPII's crops, and COCO's of large people, were decoded at
  # 1/2 or 1/4 (37 of the 136, measured).
  assert sum(r > 1 for r in reductions) >= 30 and 4 in reductions, reductions


# White squares on black, one per joint: their intensity-weighted centroids measure where the
# crop put them to a small fraction of a pixel (colour would bring in JPEG's half-resolution
# chroma, whose placement is not what is tested here).
SIDE = 2400  # pixels


def _marker_image(span: float):
  """(JPEG bytes, joints [16, 2]): a 4x4 grid of squares filling the middle of a crop that
  spans `span` image pixels around the image centre."""
  grid = np.stack(np.meshgrid(np.arange(4), np.arange(4)), -1).reshape(16, 2) - 1.5
  joints = np.round(grid * 0.2 * span + SIDE / 2)
  joints[3] += np.round([0.03 * span, -0.02 * span])  # break the grid's symmetry a little.
  half = max(3, int(span / 50))
  image = np.zeros((SIDE, SIDE, 3), np.uint8)
  for x, y in joints.astype(int):
    image[y - half:y + half + 1, x - half:x + half + 1] = 255
  return image_files.encode_jpeg(image, quality=98), joints


def _centroid(image, around, radius):
  """Intensity-weighted centroid (x, y) of the pixels within `radius` of `around`."""
  grey = image.astype(np.float64).mean(-1)
  ys, xs = np.mgrid[:grey.shape[0], :grey.shape[1]]
  weight = grey * (np.abs(xs - around[0]) <= radius) * (np.abs(ys - around[1]) <= radius)
  return np.array([(weight * xs).sum(), (weight * ys).sum()]) / weight.sum()


@pytest.mark.parametrize('reduction', [1, 2, 4, 8])
def test_markers_land_on_their_joints_at_every_decode_reduction(reduction):
  """The 1/r decode's pixel centres (r i + (r - 1) / 2 in the image) are placed right: each
  marker's centroid sits on the joint the same matrix moves, rotated and mirrored, within
  0.2 px (a slip of the (r - 1) / 2 offset would move every marker by 0.25-0.4 px). Measured:
  at most 0.03 px for r = 2, 4, 8; 0.14 px for the full-size decode shrunk 1.6 times, whose
  bilinear samples alias."""
  size = (256, 256)
  # A box 5 % wider than the crop shrunk by `reduction`: the crop shrinks it by r / 0.95.
  span = 256 * max(reduction, 1.5) / 0.95
  encoded, joints = _marker_image(span)
  errors = []
  for rotation, flip in ((0.0, False), (23.0, True)):
    matrix = augment.affine_matrix(tf.constant([SIDE / 2, SIDE / 2]),
                                   tf.constant([span / 200, span / 200]), rotation, size, flip)
    assert int(crop.decode_reduction(matrix, 8)) == reduction
    image = crop.crop_image(tf.constant(encoded), SIDE, SIDE, matrix, size).numpy()
    moved = augment.transform_points(tf.constant(joints, tf.float32), matrix).numpy()
    for point in moved:
      errors.append(np.abs(_centroid(image, point, radius=20) - point).max())
  assert max(errors) <= 0.2, (reduction, np.round(errors, 3))


def test_the_four_channel_warp_matches_opencvs_three_channel_warp_pixel_for_pixel():
  """crop.warp runs OpenCV on RGBA (its fast path) and drops alpha: the pixels must be those of
  the plain 3-channel warpAffine, also where the crop runs off the patch (zero fill)."""
  rng = np.random.default_rng(0)
  ran_off = 0
  photos = [os.path.join(SAMPLES, name, file) for name in ('coco', 'mpii')
            for file in sorted(f for f in os.listdir(os.path.join(SAMPLES, name))
                               if f.endswith('.jpg'))[:2]]
  for path in photos:
    photo = cv2.cvtColor(cv2.imread(path), cv2.COLOR_BGR2RGB)
    for _ in range(5):
      y, x = rng.integers(0, 200, 2)
      patch = np.ascontiguousarray(photo[y:y + 300, x:x + 240])
      output_size = ((256, 192), (256, 256))[rng.integers(2)]
      angle, zoom = rng.uniform(-80, 80), rng.uniform(0.5, 2.0)
      to_patch = cv2.getRotationMatrix2D((rng.uniform(0, 240), rng.uniform(0, 300)), angle,
                                         zoom).astype(np.float32)
      expected = cv2.warpAffine(patch, to_patch, output_size[::-1],
                                flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                                borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))
      image = crop.warp(tf.constant(patch), tf.constant(to_patch), tf.constant(False),
                        output_size).numpy()
      np.testing.assert_array_equal(image, expected)
      ran_off += bool((image == 0).all(-1).any())
  assert ran_off >= 5, ran_off  # the zero fill was compared too


def test_a_crop_that_misses_the_image_is_black():
  encoded, _ = _marker_image(1000.0)
  matrix = augment.affine_matrix(tf.constant([-5000.0, 300.0]), tf.constant([4.0, 4.0]), 0.0,
                                 (64, 48), False)
  image = crop.crop_image(tf.constant(encoded), SIDE, SIDE, matrix, (64, 48)).numpy()
  assert image.shape == (64, 48, 3) and image.dtype == np.uint8 and not image.any()


@pytest.mark.parametrize('value', [3, 16, 0])
def test_a_decode_reduction_libjpeg_cannot_do_is_refused_by_key(value):
  data = ml_collections.ConfigDict({'max_decode_reduction': value})
  with pytest.raises(ValueError, match=rf'config.data.max_decode_reduction={value}: choose one '
                                       r'of \(1, 2, 4, 8\)'):
    pipeline.max_decode_reduction(data)
  assert pipeline.max_decode_reduction(ml_collections.ConfigDict({})) == 8  # the default
