"""Synthetic figures and the bundled quick-start records."""

from __future__ import annotations

import io
import json
import os
import time

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image
from scipy.io import loadmat

from configs import default
from data_prep import bundled
from data_prep import synthetic
from okdhp_jax.data import meta as meta_lib
from okdhp_jax.data import pipeline
from okdhp_jax.data import checks
from okdhp_jax.data import records

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_figures_are_deterministic_and_joints_exact():
  a, head_a = synthetic.figure_example(0, 3, 128)
  b, head_b = synthetic.figure_example(0, 3, 128)
  c, _ = synthetic.figure_example(0, 4, 128)
  assert a.image_bytes == b.image_bytes and np.array_equal(head_a, head_b)
  assert a.image_bytes != c.image_bytes
  for i in range(40):
    example, headbox = synthetic.figure_example(1, i, 96)
    joints, vis = example.joints, example.joints_vis
    inside = np.all((joints >= 0) & (joints <= 95), axis=1)
    assert np.all(vis[~inside] == 0)  # out-of-frame joints are never visible.
    # Plausible proportions: a thigh is about twice the head length (joints carry noise).
    head = np.linalg.norm(joints[9] - joints[8])
    thigh = np.linalg.norm(joints[2] - joints[1])
    assert 1.2 * head < thigh < 3.2 * head
    assert np.all(headbox[1] > headbox[0])


def test_limb_colours_sit_between_their_joints():
  """The figure is drawn where the joints say: right thigh pixels near its midpoint are red."""
  hits = 0
  for i in range(30):
    example, _ = synthetic.figure_example(2, i, 128)
    j, vis = example.joints, example.joints_vis
    if not (vis[2] and vis[1]):
      continue
    mid = ((j[2] + j[1]) / 2).round().astype(int)
    image = np.asarray(Image.open(io.BytesIO(example.image_bytes)).convert('RGB'), float)
    if not (0 <= mid[0] < 128 and 0 <= mid[1] < 128):
      continue
    colour = image[mid[1], mid[0]]
    hits += np.linalg.norm(colour - synthetic.LIMBS[0][3]) < 90
  # Other limbs or an occluder may cover the thigh, but mostly it is visible where expected.
  assert hits >= 12


def test_generate_writes_records_and_gt_valid(tmp_path):
  start = time.perf_counter()
  info = synthetic.generate(str(tmp_path), 60, 6, size=96, seed=5, show_progress=False)
  assert time.perf_counter() - start < 15
  assert info['splits'] == {'train': 60, 'valid': 6} and info['dataset'] == 'mpii'
  gt = loadmat(os.path.join(tmp_path, 'gt_valid.mat'))
  assert gt['pos_gt_src'].shape == (16, 2, 6)
  assert gt['jnt_missing'].shape == (16, 6) and gt['headboxes_src'].shape == (2, 2, 6)
  valid = [records.parse(s, 16) for s in
           tf.data.TFRecordDataset(records.split_files(str(tmp_path), 'valid'))]
  for n, example in enumerate(valid):
    column = int(example['person/index'])
    assert column == n
    np.testing.assert_allclose(gt['pos_gt_src'][:, :, column] - 1,
                               example['person/joints'].numpy(), atol=1e-4)
    np.testing.assert_array_equal(gt['jnt_missing'][:, column],
                                  1 - example['person/joints_vis'].numpy())


def test_bundled_is_idempotent_and_feeds_the_pipeline(tmp_path):
  out = str(tmp_path / 'bundled')
  start = time.perf_counter()
  bundled.prepare_bundled(out, num_synthetic_train=16, num_synthetic_valid=3)
  assert time.perf_counter() - start < 30
  info = records.read_dataset_info(out)
  assert info['splits'] == {'train': 21, 'valid': 8}
  assert info[records.SIDES_BY_COLOUR] is True  # the figures among the real people.
  # Held-out figures (columns 5..7) rank the branches; the real people are scored apart.
  assert info[records.EVAL_GROUPS] == [
      {'name': 'held-out generated figures', 'person_index': [5, 8], 'in_training_set': False},
      {'name': 'real MPII people', 'person_index': [0, 5], 'in_training_set': True}]
  assert info[records.DESCRIPTION].startswith(
      'Data: 5 real MPII people + 16 generated figures to train on; PCKh on 3 held-out')
  stamp = os.path.getmtime(os.path.join(out, records.DATASET_INFO))
  bundled.prepare_bundled(out, num_synthetic_train=16, num_synthetic_valid=3)
  assert os.path.getmtime(os.path.join(out, records.DATASET_INFO)) == stamp
  gt = loadmat(os.path.join(out, 'gt_valid.mat'))
  first5 = loadmat(os.path.join(REPO, 'data_prep', 'samples', 'mpii', 'gt_valid_first5.mat'))
  assert gt['pos_gt_src'].shape == (16, 2, 8)
  np.testing.assert_array_equal(gt['pos_gt_src'][:, :, :5], first5['pos_gt_src'])
  config = default.get_config('runlocal').data
  config.records_dir = out
  assert pipeline.count_examples(config, 'train') == 21
  batches = list(pipeline.build_eval_dataset(config, meta_lib.MPII, split='valid',
                                             local_batch_size=4).as_numpy_iterator())
  indices = np.concatenate([b['person_index'][b['valid']] for b in batches])
  assert sorted(indices.tolist()) == list(range(8))
  train = next(pipeline.build_train_dataset(config, meta_lib.MPII, local_batch_size=8,
                                            seed=0).as_numpy_iterator())
  assert train['image'].shape == (8, 64, 64, 3)


def test_bundled_coco(tmp_path):
  out = bundled.prepare_bundled_coco(str(tmp_path / 'coco'))
  info = records.read_dataset_info(out)
  assert info['splits'] == {'train': 12, 'valid': 12, 'valid_det': 118}
  assert os.path.exists(os.path.join(out, 'annotations_valid.json'))
  config = default.get_config('runlocal').data
  config.update(records_dir=out, dataset='coco', input_size=(64, 48), half_body_prob=1.0,
                detections='person_detection_results.json', det_score_threshold=0.5)
  batches = list(pipeline.build_eval_dataset(config, meta_lib.COCO, split='valid',
                                             local_batch_size=32).as_numpy_iterator())
  scores = np.concatenate([b['score'][b['valid']] for b in batches])
  assert len(batches) == 4 and 0 < len(scores) < 118 and scores.min() >= 0.5
  assert batches[0]['scale'].shape == (32, 2)
  scale = batches[0]['scale'][batches[0]['valid']]
  np.testing.assert_allclose(scale[:, 0] / scale[:, 1], 0.75, rtol=1e-5)
  train = next(pipeline.build_train_dataset(config, meta_lib.COCO, local_batch_size=8,
                                            seed=0).as_numpy_iterator())
  assert train['image'].shape == (8, 64, 48, 3) and train['joints'].shape == (8, 17, 2)
  assert np.all(np.isfinite(train['joints']))


def test_plain_figures_keep_the_pose_and_drop_clutter():
  rng_args = (7, 2, 128)
  busy, _ = synthetic.figure_example(*rng_args)
  plain, _ = synthetic.figure_example(*rng_args, clutter=False)
  np.testing.assert_array_equal(busy.joints, plain.joints)
  image = np.asarray(Image.open(io.BytesIO(plain.image_bytes)).convert('RGB'), float)
  # A plain background is one colour (up to JPEG noise): the image corner shows it.
  corner = image[:6, :6].reshape(-1, 3)
  assert np.abs(corner - corner.mean(0)).max() < 12
  assert plain.joints_vis[(plain.joints >= 0).all(1) & (plain.joints <= 127).all(1)].all()


def test_flips_are_refused_on_figures_told_apart_by_colour(tmp_path):
  out = bundled.prepare_synthetic(str(tmp_path / 'synthetic'), num_train=8, num_valid=2,
                                  image_size=64, clutter=False)
  assert records.read_dataset_info(out)[records.SIDES_BY_COLOUR] is True
  stamp = os.path.getmtime(os.path.join(out, records.DATASET_INFO))
  bundled.prepare_synthetic(out, num_train=8, num_valid=2, image_size=64, clutter=False)
  assert os.path.getmtime(os.path.join(out, records.DATASET_INFO)) == stamp  # already there.
  config = default.get_config()
  config.data.records_dir = out
  for key in ('data.flip', 'eval.flip_test'):
    config.data.flip, config.eval.flip_test = key == 'data.flip', key == 'eval.flip_test'
    with pytest.raises(ValueError, match=rf'config\.{key}=True.*Set config\.{key}=False'):
      checks.check_flips(config)
  config.data.flip = config.eval.flip_test = False
  checks.check_flips(config)


def test_flips_stay_allowed_on_real_people(tmp_path):
  config = default.get_config()
  config.data.records_dir = bundled.prepare_bundled_coco(str(tmp_path / 'coco'),
                                                         with_detections=False)
  assert config.data.flip and config.eval.flip_test
  checks.check_flips(config)


def test_overwrite_replaces_records_of_another_dataset(tmp_path, capsys):
  """The refusal to mix datasets in one folder offers --overwrite, and the tool has it."""
  out = str(tmp_path)
  assert synthetic.main(['--out', out, '--num', '4', '--num-valid', '2', '--size', '64']) == 0
  info_path = os.path.join(out, records.DATASET_INFO)
  with open(info_path) as f:
    other = json.load(f)
  with open(info_path, 'w') as f:
    json.dump(dict(other, dataset='coco', num_joints=17), f)
  command = ['--out', out, '--num', '4', '--num-valid', '2', '--size', '64']
  assert synthetic.main(command) == 1
  assert '--overwrite' in capsys.readouterr().err
  assert synthetic.main(command + ['--overwrite']) == 0
  assert records.read_dataset_info(out)['dataset'] == 'mpii'
