"""tf.data pipeline: geometry proven with painted markers, determinism, sharding, padding."""

from __future__ import annotations

import colorsys
import os

import jax
import numpy as np
import pytest
import tensorflow as tf

from configs import default
from data_prep import common
from data_prep import mpii
from okdhp_jax.data import augment
from okdhp_jax.data import crop
from okdhp_jax.data import geometry
from okdhp_jax.data import image_files
from okdhp_jax.data import meta as meta_lib
from okdhp_jax.data import pipeline
from okdhp_jax.data import records
from sample_data import MPII_SAMPLES, mpii_annotations

MPII = meta_lib.MPII
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# 16 saturated colours on distinct hues, so blends with the black background never look like
# another marker.
COLOURS = np.array([colorsys.hsv_to_rgb(i / 16, 1.0, 1.0) for i in range(16)]) * 255
IMAGE_H, IMAGE_W = 320, 400
MARKER = 7  # half side of the painted squares.


def marker_person():
  """Image with one coloured square per joint, at known integer joint positions."""
  grid = np.stack(np.meshgrid(np.arange(4), np.arange(4)), -1).reshape(16, 2)
  joints = (grid * 52 + [122, 82]).astype(np.float64)
  joints[3] += [9, -4]  # break the grid's symmetry a little.
  image = np.zeros((IMAGE_H, IMAGE_W, 3), np.uint8)
  for (x, y), colour in zip(joints.astype(int), COLOURS):
    image[y - MARKER:y + MARKER + 1, x - MARKER:x + MARKER + 1] = colour
  vis = np.ones(16, np.float32)
  vis[5] = 0  # an unannotated joint stays invisible whatever the crop.
  return image, joints, vis


def write_marker_records(out_dir):
  image, joints, vis = marker_person()
  center = np.array([200.0, 160.0])
  scale = np.array([1.3, 1.3])
  example = records.PersonExample(
      image_bytes=image_files.encode_jpeg(image, quality=98), image_filename='markers.jpg',
      image_id=7, image_height=IMAGE_H, image_width=IMAGE_W, person_index=0, center=center,
      scale=scale, joints=joints, joints_vis=vis, box=np.array([70, 30, 260, 260.0]),
      score=1.0, area=260.0 ** 2)
  candidates = {s: [common.Candidate('markers', '', 'markers.jpg', lambda im: example)]
                for s in ('train', 'valid')}
  common.write_records(out_dir, candidates, {'dataset': 'mpii', 'num_joints': 16},
                       report=common.Report(strict=True), show_progress=False)
  return joints, vis, center, scale


def data_config(records_dir, **overrides):
  config = default.get_config().data
  config.records_dir = str(records_dir)
  config.shuffle_buffer = 16
  config.input_size = (192, 192)
  for key, value in overrides.items():
    config[key] = value
  return config


@pytest.fixture(scope='module')
def marker_dir(tmp_path_factory):
  out = tmp_path_factory.mktemp('markers')
  return out, write_marker_records(str(out))


@pytest.fixture(scope='module')
def mpii_dir(tmp_path_factory):
  """The 5 real MPII people in 3 shards (2, 2, 1)."""
  tmp = tmp_path_factory.mktemp('mpii')
  out = str(tmp / 'records')
  mpii.convert(mpii_annotations(tmp / 'annotations'), MPII_SAMPLES, out, examples_per_shard=2,
               show_progress=False)
  return out


def find_marker(image_255, colour):
  """Centroid (x, y) of the pixels close to `colour`, or None."""
  mask = np.linalg.norm(image_255 - colour, axis=-1) < 60
  if mask.sum() < 4:
    return None
  ys, xs = np.nonzero(mask)
  return np.array([xs.mean(), ys.mean()])


def test_tf_matrix_matches_geometry():
  rng = np.random.default_rng(0)
  for _ in range(10):
    center = rng.uniform(0, 500, 2)
    scale = rng.uniform(0.5, 3, 2)
    rotation = rng.uniform(-60, 60)
    size = (256, 192)
    expected = geometry.affine_matrix(center, scale, rotation, size)
    got = augment.affine_matrix(center, scale, rotation, size, False).numpy()
    np.testing.assert_allclose(got[:2], expected, rtol=1e-5, atol=1e-3)
    flipped = augment.affine_matrix(center, scale, rotation, size, True).numpy()
    points = rng.uniform(0, 500, (5, 2))
    mirrored = geometry.apply_affine(points, expected) * [-1, 1] + [size[1] - 1, 0]
    np.testing.assert_allclose(augment.transform_points(points, flipped).numpy(), mirrored,
                               rtol=1e-5, atol=1e-3)


def test_markers_follow_their_joints_through_augmentation(marker_dir):
  records_dir, (joints, vis, _, _) = marker_dir
  config = data_config(records_dir, rotation_prob=0.8)
  ds = pipeline.build_train_dataset(config, MPII, local_batch_size=8, seed=3)
  perm = MPII.flip_permutation()
  seen_flip, seen_plain, checked, hidden_outside = 0, 0, 0, 0
  marker_errors = []
  for batch in ds.take(3).as_numpy_iterator():
    for image, out_joints, out_vis in zip(batch['image'], batch['joints'], batch['joints_vis']):
      pixels = image.astype(np.float64)
      h, w = image.shape[:2]
      # Which joint's colour should sit at output joint i: itself, or its mirror when flipped.
      errors, all_errors = {}, {}
      for name, source in (('plain', np.arange(16)), ('flip', perm)):
        worst, all_errors[name] = 0.0, []
        for i in range(16):
          if out_vis[i] == 0:
            continue
          x, y = out_joints[i]
          if not (MARKER < x < w - 1 - MARKER and MARKER < y < h - 1 - MARKER):
            continue  # a marker cut by the border has a biased centroid.
          found = find_marker(pixels, COLOURS[source[i]])
          error = np.inf if found is None else np.abs(found - out_joints[i]).max()
          worst = max(worst, error)
          all_errors[name].append(error)
        errors[name] = worst
      assert min(errors.values()) <= 1.0, errors
      assert max(errors.values()) > 5.0, errors  # the two hypotheses are distinguishable.
      flipped = errors['flip'] <= 1.0
      seen_flip += flipped
      marker_errors += all_errors['flip' if flipped else 'plain']
      seen_plain += not flipped
      # Joint 5 is unannotated: after a flip it becomes joint perm[5] = 0.
      assert out_vis[perm[5] if flipped else 5] == 0
      for i in np.nonzero(out_vis == 0)[0]:
        source = perm[i] if flipped else i
        if vis[source] > 0:  # annotated but dropped: it must have left the crop.
          x, y = out_joints[i]
          assert not (0 <= x < w and 0 <= y < h)
          hidden_outside += 1
      checked += 1
  assert checked == 24 and seen_flip >= 4 and seen_plain >= 4
  # No systematic sub-pixel offset either (a half-pixel convention slip would show here).
  assert np.mean(marker_errors) < 0.3, np.mean(marker_errors)
  assert len(marker_errors) > 200


def test_eval_crop_matches_numpy_geometry(marker_dir):
  records_dir, (joints, vis, center, scale) = marker_dir
  config = data_config(records_dir, input_size=(192, 144))
  batch = next(pipeline.build_eval_dataset(config, MPII, split='valid',
                                           local_batch_size=2).as_numpy_iterator())
  assert batch['valid'].tolist() == [True, False]
  # COCO rule for a 144 / 192 input: widen nothing, heighten sh to sw / 0.75.
  np.testing.assert_allclose(batch['scale'][0], [1.3, 1.3 / 0.75], rtol=1e-6)
  matrix = geometry.affine_matrix(center, batch['scale'][0], 0.0, (192, 144))
  expected = geometry.apply_affine(joints, matrix)
  np.testing.assert_allclose(batch['joints'][0], expected, atol=1e-3)
  pixels = batch['image'][0].astype(np.float64)
  for i in range(16):
    x, y = expected[i]
    if batch['joints_vis'][0, i] and MARKER < x < 143 - MARKER and MARKER < y < 191 - MARKER:
      np.testing.assert_allclose(find_marker(pixels, COLOURS[i]), expected[i], atol=1.0)
  assert batch['image_id'][0] == 7 and batch['score'][0] == 1.0
  assert batch['image'].shape == (2, 192, 144, 3) and batch['box'].shape == (2, 4)
  assert np.all(batch['image'][1] == 0) and batch['person_index'].dtype == np.int64


def test_train_is_deterministic_given_the_seed(mpii_dir):
  config = data_config(mpii_dir, input_size=(64, 64))

  def first_batches(seed):
    ds = pipeline.build_train_dataset(config, MPII, local_batch_size=4, seed=seed)
    return list(ds.take(2).as_numpy_iterator())

  a, b, c = first_batches(0), first_batches(0), first_batches(1)
  for x, y in zip(a, b):
    for key in x:
      np.testing.assert_array_equal(x[key], y[key])
  assert not np.allclose(a[0]['joints'], c[0]['joints'])
  assert a[0]['image'].shape == (4, 64, 64, 3) and a[0]['joints'].dtype == np.float32
  assert a[0]['image'].dtype == np.uint8  # normalised on the device, not here.
  assert a[0]['image'].max() > 100  # pixels, not normalised values.


def test_a_dropped_stream_stops_at_once(mpii_dir):
  """tf.data's autotuning thread, which a dropped iterator waits for (seconds, growing with the
  iterator's age), is off in both pipelines; a train stream dropped after a few seconds of
  batches is gone in well under one."""
  import time  # pylint: disable=g-import-not-at-top
  config = data_config(mpii_dir, input_size=(64, 64))
  train = pipeline.build_train_dataset(config, MPII, local_batch_size=4, seed=0)
  evaluation = pipeline.build_eval_dataset(config, MPII, split='valid', local_batch_size=4)
  assert train.options().autotune.enabled is False
  assert evaluation.options().autotune.enabled is False
  iterator = iter(train)
  started = time.monotonic()
  while time.monotonic() - started < 3:
    next(iterator)
  started = time.monotonic()
  del iterator
  assert time.monotonic() - started < 0.5


def test_eval_crops_are_the_crop_ops_normalised_on_the_device(mpii_dir):
  """The host sends crop.crop_image's uint8 crop; the device normalises it with ImageNet's
  statistics (float32 rounding only)."""
  from okdhp_jax.data import normalization
  config = data_config(mpii_dir, input_size=(64, 64))
  batch = next(pipeline.build_eval_dataset(config, MPII, split='valid',
                                           local_batch_size=4).as_numpy_iterator())
  files = records.split_files(mpii_dir, 'valid')
  parsed = [records.parse(s, 16) for s in tf.data.TFRecordDataset(files).take(4)]
  on_device = np.asarray(normalization.normalize(batch['image']))
  for i, example in enumerate(parsed):
    matrix = augment.affine_matrix(tf.constant(batch['center'][i]),
                                   tf.constant(batch['scale'][i]), 0.0, (64, 64))
    crop_op = crop.crop_image(example['image/encoded'], example['image/height'],
                              example['image/width'], matrix, (64, 64)).numpy()
    np.testing.assert_array_equal(batch['image'][i], crop_op)
    expected = (crop_op / 255.0 - np.array(normalization.IMAGENET_MEAN)) / np.array(
        normalization.IMAGENET_STD)
    np.testing.assert_allclose(on_device[i], expected, atol=1e-5)


def test_a_resumed_stream_is_the_uninterrupted_one_across_epochs(mpii_dir):
  """5 records, batch 2: the stream crosses an epoch every 2.5 batches. Resumed at steps 4
  (epoch 1, 3 records in) and 7 (epoch 2, 4 in), it equals the uninterrupted stream there, and
  each epoch has its own order."""
  config = data_config(mpii_dir, input_size=(32, 32))

  def batches(start_step, count):
    ds = pipeline.build_train_dataset(config, MPII, local_batch_size=2, seed=5,
                                      start_step=start_step)
    return list(ds.take(count).as_numpy_iterator())

  straight = batches(0, 10)
  for start in (4, 7):
    for a, b in zip(straight[start:], batches(start, 3)):
      for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=f'{key} at step {start}')
  # Without augmentation a person's crop is the same in every epoch, so its joints name it.
  config.update(scale_factor=0.0, rotation_prob=0.0, flip=False)
  people = np.concatenate([b['joints'][:, 0, 0] for b in batches(0, 10)]).reshape(4, 5)
  assert all(sorted(epoch) == sorted(people[0]) for epoch in people)
  assert len({tuple(epoch) for epoch in people}) > 1, people


@pytest.mark.parametrize('process_count', [2, 4])
def test_eval_shards_by_process_and_pads(mpii_dir, process_count):
  config = data_config(mpii_dir, input_size=(64, 64))
  seen, lengths = [], []
  for p in range(process_count):
    batches = list(pipeline.build_eval_dataset(
        config, MPII, split='valid', local_batch_size=2, process_index=p,
        process_count=process_count).as_numpy_iterator())
    lengths.append(len(batches))
    for batch in batches:
      assert batch['valid'].shape == (2,)
      seen += batch['person_index'][batch['valid']].tolist()
      assert np.all(batch['image'][~batch['valid']] == 0)
  assert sorted(seen) == [0, 1, 2, 3, 4]  # disjoint and complete.
  assert len(set(lengths)) == 1  # every process runs the same number of steps.
  # 3 shards over 2 processes: files (0, 2) -> 3 people -> 2 batches; 4 processes: records.
  assert lengths[0] == 2 if process_count == 2 else lengths[0] == 1


def test_eval_padding_mask_single_process(mpii_dir):
  config = data_config(mpii_dir, input_size=(64, 64))
  batches = list(pipeline.build_eval_dataset(config, MPII, split='valid',
                                             local_batch_size=4).as_numpy_iterator())
  assert [b['valid'].tolist() for b in batches] == [[True] * 4, [True, False, False, False]]
  assert [b['person_index'][0] for b in batches] == [0, 4]
  assert pipeline.count_examples(config, 'valid') == 5


def test_missing_records_name_the_folder_and_command(tmp_path):
  config = data_config(tmp_path / 'nothing')
  with pytest.raises(FileNotFoundError, match=r'nothing.*data_prep'):
    pipeline.count_examples(config, 'train')


def test_wrong_dataset_is_named(mpii_dir):
  with pytest.raises(ValueError, match=r"'mpii' records.*'coco'"):
    pipeline.build_train_dataset(data_config(mpii_dir), meta_lib.COCO, local_batch_size=2,
                                 seed=0)


def test_half_body_selects_the_visible_half():
  joints = np.array([[10.0 * i, 100.0 + 5 * i] for i in range(16)], np.float32)
  vis = np.zeros(16, np.float32)
  vis[[0, 1, 2, 3]] = 1  # lower body only: upper has too few joints, so lower is chosen.
  center, scale, ok = augment.half_body(joints, vis, MPII.upper_body, 16, 1.0,
                                        tf.constant([1, 2], tf.int64))
  assert bool(ok)
  np.testing.assert_allclose(center.numpy(), joints[[0, 1, 2, 3]].mean(0))
  side = 30.0  # x spans 0..30, y spans 15 -> square 30 px box
  np.testing.assert_allclose(scale.numpy(), [side / 200 * 1.5] * 2, rtol=1e-6)


def test_global_batches_on_a_mesh(mpii_dir):
  config = data_config(mpii_dir, input_size=(64, 64))
  mesh = jax.make_mesh((jax.device_count(),), ('data',))
  ds = pipeline.build_eval_dataset(config, MPII, split='valid',
                                   local_batch_size=jax.device_count() * 2)
  batches = list(pipeline.global_batches(ds, mesh, prefetch=2))
  assert len(batches) == -(-5 // (jax.device_count() * 2))
  first = batches[0]
  assert isinstance(first['image'], jax.Array)
  assert first['image'].sharding.spec == jax.sharding.PartitionSpec('data')
  assert first['joints'].shape == (jax.device_count() * 2, 16, 2)
