"""MPII and COCO converters on the real samples, and every kind of bad input."""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from scipy.io import loadmat

from data_prep import coco
from data_prep import common
from data_prep import mpii
from okdhp_jax.data import records
import sample_data

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLES = os.path.join(REPO, 'data_prep', 'samples')
MPII_SAMPLES = os.path.join(SAMPLES, 'mpii')
COCO_SAMPLES = os.path.join(SAMPLES, 'coco')


def read_split(out_dir, split, num_joints):
  files = records.split_files(out_dir, split)
  return [{k: v.numpy() for k, v in records.parse(s, num_joints).items()}
          for s in tf.data.TFRecordDataset(files)]


def mpii_annotations(tmp_path, people=None):
  """An HRNet-style annotations folder made from the sample json (train = valid)."""
  return sample_data.mpii_annotations(tmp_path / 'annotations', train=people, valid=people)


def test_mpii_samples_convert_with_the_paper_rules(tmp_path):
  out = str(tmp_path / 'records')
  info, report = mpii.convert(mpii_annotations(tmp_path), MPII_SAMPLES, out,
                              show_progress=False)
  assert info['splits'] == {'train': 5, 'valid': 5}
  assert info['dataset'] == 'mpii' and info['num_joints'] == 16
  assert sum(sum(c.values()) for c in report.skipped.values()) == 0
  assert sorted(os.listdir(out)) == ['dataset_info.json', 'gt_valid.mat',
                                     'train-00000-of-00001.tfrecord',
                                     'valid-00000-of-00001.tfrecord']
  gt = loadmat(os.path.join(out, 'gt_valid.mat'))
  assert gt['pos_gt_src'].shape == (16, 2, 5)
  valid = read_split(out, 'valid', 16)
  assert [r['person/index'] for r in valid] == [0, 1, 2, 3, 4]
  first = valid[0]
  # Person 0 of test_mpii.json: centre (966, 340), scale 4.718488, 1-based MATLAB coordinates.
  np.testing.assert_allclose(first['person/center'],
                             [966 - 1, 340 + 15 * 4.718488 - 1], rtol=1e-6)
  np.testing.assert_allclose(first['person/scale'], [4.718488 * 1.25] * 2, rtol=1e-6)
  np.testing.assert_allclose(first['person/joints'][0], [803, 710])
  np.testing.assert_allclose(first['person/joints'][9], [961.2409, 79.0306], rtol=1e-6)
  assert first['image/filename'] == b'005808361.jpg'
  assert first['image/id'] == 5808361
  # MPII's photos are progressive: stored as baseline rewrites (tests/test_data_jpeg_baseline.py
  # holds their pixels to the originals').
  with open(os.path.join(MPII_SAMPLES, '005808361.jpg'), 'rb') as f:
    assert first['image/encoded'] != f.read()
  assert info[records.BASELINE_REWRITES] == {'train': 5, 'valid': 5}
  assert '5 progressive JPEGs stored as baseline' in report.summary()
  assert (first['image/height'], first['image/width']) == (720, 1280)


def test_rerun_is_safe_and_replaces_stale_shards(tmp_path):
  annotations = mpii_annotations(tmp_path)
  out = str(tmp_path / 'records')
  mpii.convert(annotations, MPII_SAMPLES, out, show_progress=False)
  mpii.convert(annotations, MPII_SAMPLES, out, show_progress=False, examples_per_shard=2)
  files = sorted(os.listdir(out))
  assert files == ['dataset_info.json', 'gt_valid.mat'] + [
      f'{s}-{i:05d}-of-00003.tfrecord' for s in ('train', 'valid') for i in range(3)]
  info = records.read_dataset_info(out)
  assert info['shard_lengths'] == {'train': [2, 2, 1], 'valid': [2, 2, 1]}
  assert [r['person/index'] for r in read_split(out, 'valid', 16)] == [0, 1, 2, 3, 4]


@pytest.fixture
def bad_mpii(tmp_path):
  """Samples plus one person per kind of bad input (indices 5..8 of train.json)."""
  with open(os.path.join(MPII_SAMPLES, 'test_mpii.json')) as f:
    people = json.load(f)
  images = tmp_path / 'images'
  shutil.copytree(MPII_SAMPLES, images)
  with open(images / '005808361.jpg', 'rb') as f:
    (images / 'corrupt.jpg').write_bytes(f.read()[:3000])  # truncated JPEG
  missing = dict(people[0], image='missing.jpg')
  corrupt = dict(people[0], image='corrupt.jpg')
  malformed = dict(people[0], joints=people[0]['joints'][:15])
  invisible = dict(people[0], joints_vis=[0] * 16)
  return mpii_annotations(tmp_path, people + [missing, corrupt, malformed, invisible]), str(images)


def test_bad_inputs_are_skipped_counted_and_named(bad_mpii, tmp_path):
  annotations, images = bad_mpii
  out = str(tmp_path / 'records')
  info, report = mpii.convert(annotations, images, out, show_progress=False)
  assert info['splits'] == {'train': 5, 'valid': 5}
  assert dict(report.skipped['train']) == {
      'missing image': 1, 'corrupt image': 1, 'malformed annotation': 1, 'no visible joints': 1}
  messages = '\n'.join(m for m in report.messages if 'train.json' in m)
  assert 'train.json[5]' in messages and 'missing.jpg' in messages
  assert 'train.json[6]' in messages and 'corrupt.jpg' in messages
  assert 'train.json[7]' in messages
  assert 'train.json[8]' in messages and 'no visible joints' in messages
  summary = report.summary()
  assert 'written 5, skipped 4' in summary and 'corrupt image' in summary


def test_loading_images_on_threads_writes_the_same_records(bad_mpii, tmp_path):
  annotations, images = bad_mpii
  outputs = []
  for workers in (1, 4):
    out = str(tmp_path / f'records_{workers}')
    info, report = mpii.convert(annotations, images, out, show_progress=False, workers=workers)
    shards = {name: open(os.path.join(out, name), 'rb').read()
              for name in sorted(os.listdir(out)) if name.endswith('.tfrecord')}
    outputs.append((shards, info, report.messages, report.summary()))
  assert outputs[0] == outputs[1]


def test_records_hold_their_features_in_sorted_order_so_reconversions_match_bytewise():
  # Protobuf's default map order changes from process to process; a record written in it
  # would differ in bytes (and checksum) from the same record written by another conversion.
  example = records.PersonExample(
      image_bytes=b'\xff\xd8 not decoded here', image_filename='a.jpg', image_id=3,
      image_height=64, image_width=48, person_index=1, center=np.array([24.0, 32.0]),
      scale=np.array([0.24, 0.32]), joints=np.zeros((16, 2)), joints_vis=np.ones(16),
      box=np.array([0.0, 0.0, 48.0, 64.0]), score=0.5, area=12.0)
  data = records.serialize(example)
  assert data == tf.train.Example.FromString(data).SerializeToString(deterministic=True)


def test_strict_stops_at_the_first_bad_input(bad_mpii, tmp_path):
  annotations, images = bad_mpii
  out = str(tmp_path / 'records')
  with pytest.raises(common.ConversionError, match=r'train.json\[5\].*missing.jpg'):
    mpii.convert(annotations, images, out, strict=True, show_progress=False)
  assert not os.path.exists(os.path.join(out, records.DATASET_INFO))
  assert not glob.glob(os.path.join(out, '*.tfrecord'))
  assert not glob.glob(os.path.join(out, '.incomplete-*'))


@pytest.mark.slow
def test_cli_strict_exits_nonzero_with_the_file_name(bad_mpii, tmp_path):
  annotations, images = bad_mpii
  result = subprocess.run(
      [sys.executable, '-m', 'data_prep.mpii', '--annotations', annotations, '--images',
       images, '--out', str(tmp_path / 'records'), '--strict'],
      cwd=REPO, capture_output=True, text=True, timeout=120)
  assert result.returncode == 1
  assert 'missing.jpg' in result.stderr and '--strict' in result.stderr


def test_coco_samples_with_gt_boxes_and_detections(tmp_path):
  out = str(tmp_path / 'coco')
  info, report = coco.convert(
      [os.path.join(COCO_SAMPLES, 'test_coco.json')], COCO_SAMPLES, out, split='valid',
      detections=os.path.join(COCO_SAMPLES, 'test_coco_det_AP_H_56.json'), show_progress=False)
  assert info['splits'] == {'valid': 12, 'valid_det': 118}
  assert dict(report.skipped['valid']) == {'no visible joints': 2}
  assert os.path.exists(os.path.join(out, 'annotations_valid.json'))
  assert os.path.exists(os.path.join(out, 'person_detection_results.json'))
  valid = {r['person/index']: r for r in read_split(out, 'valid', 17)}
  person = valid[442619]  # image 785, bbox [280.79, 44.73, 218.7, 346.68] in a 640x425 image.
  # HRNet cleaning: w = 218.7 - 1, h = 346.68 - 1; then aspect 0.75 widens w to 0.75 h.
  w, h = 217.7, 345.68
  np.testing.assert_allclose(person['person/center'], [280.79 + w / 2, 44.73 + h / 2],
                             rtol=1e-6)
  np.testing.assert_allclose(person['person/scale'], [0.75 * h / 200 * 1.25, h / 200 * 1.25],
                             rtol=1e-5)
  np.testing.assert_allclose(person['person/joints'][0], [367, 81])
  assert person['image/id'] == 785 and person['person/joints_vis'].sum() == 17
  # A baseline JPEG is stored with restart markers, its pixels unchanged and indexed
  # (tests/test_data_jpeg_restart.py tests the rewrite).
  with open(os.path.join(COCO_SAMPLES, '000000000785.jpg'), 'rb') as f:
    np.testing.assert_array_equal(tf.io.decode_jpeg(person['image/encoded']).numpy(),
                                  tf.io.decode_jpeg(f.read()).numpy())
  assert person['image/restart_layout'][0] == 8 and len(person['image/restart_offsets']) > 1
  assert info[records.BASELINE_REWRITES] == {'valid': 0, 'valid_det': 0}
  assert info[records.RESTART_MARKERS] == {'valid': 4, 'valid_det': 4}
  assert '4 photos stored with restart markers' in report.summary()
  assert all(np.all(r['person/score'] == 1.0) for r in valid.values())  # GT boxes score 1.
  dets = read_split(out, 'valid_det', 17)
  # Every test-time box, GT or detection, gets the input's aspect ratio 192 / 256.
  scales = np.array([r['person/scale'] for r in [*valid.values(), *dets]]).reshape(-1, 2)
  np.testing.assert_allclose(scales[:, 0] / scales[:, 1], 0.75, rtol=1e-5)
  assert sorted({int(d['image/id']) for d in dets}) == [785, 40083, 196141, 197388]
  first = [d for d in dets if d['person/index'] == 0][0]
  np.testing.assert_allclose(first['person/score'], 0.9999731779098511, rtol=1e-6)
  np.testing.assert_allclose(first['person/box'][:2], [277.1183158543966, 45.699667786163765],
                             rtol=1e-6)


def test_no_restart_markers_keeps_a_baseline_jpeg_byte_for_byte(tmp_path, capsys):
  out = str(tmp_path / 'records')
  assert coco.main(['--annotations', os.path.join(COCO_SAMPLES, 'test_coco.json'), '--images',
                    COCO_SAMPLES, '--out', out, '--split', 'valid', '--no-restart-markers']) == 0
  assert 'restart markers' not in capsys.readouterr().out
  person = {r['person/index']: r for r in read_split(out, 'valid', 17)}[442619]
  with open(os.path.join(COCO_SAMPLES, '000000000785.jpg'), 'rb') as f:
    assert person['image/encoded'] == f.read()
  assert not person['image/restart_layout'].any() and person['image/restart_offsets'].size == 0
  assert records.read_dataset_info(out)[records.RESTART_MARKERS] == {'valid': 0}


def test_coco_detection_threshold_and_malformed_keypoints(tmp_path):
  with open(os.path.join(COCO_SAMPLES, 'test_coco.json')) as f:
    data = json.load(f)
  data['annotations'][0]['keypoints'] = data['annotations'][0]['keypoints'][:50]
  bad_id = data['annotations'][0]['id']
  data['annotations'][1]['iscrowd'] = 1  # HRNet leaves crowds out; they are not bad input.
  data['annotations'][2]['area'] = 0     # HRNet drops people with a zero segment area.
  zero_area_id = data['annotations'][2]['id']
  path = tmp_path / 'person_keypoints_val2017.json'
  path.write_text(json.dumps(data))
  out = str(tmp_path / 'coco')
  info, report = coco.convert(
      [str(path)], COCO_SAMPLES, out,
      detections=os.path.join(COCO_SAMPLES, 'test_coco_det_AP_H_56.json'),
      det_score_threshold=0.5, show_progress=False)
  assert info['splits']['valid'] == 9
  assert dict(report.skipped['valid']) == {
      'malformed annotation': 1, 'empty box': 1, 'no visible joints': 2}
  assert any(f'id={bad_id}' in m for m in report.messages)
  assert any(f'id={zero_area_id}' in m and 'area 0' in m for m in report.messages)
  with open(os.path.join(COCO_SAMPLES, 'test_coco_det_AP_H_56.json')) as f:
    expected = sum(d['score'] >= 0.5 and d['category_id'] == 1 for d in json.load(f))
  assert info['splits']['valid_det'] == expected < 118
  assert min(float(d['person/score']) for d in read_split(out, 'valid_det', 17)) >= 0.5


def test_coco_clean_box_is_hrnets():
  # HRNet: x2 = min(W - 1, x1 + max(0, w - 1)), the same for y; the box keeps the clipped size.
  np.testing.assert_allclose(coco.clean_box([-5.0, 10.0, 20.0, 500.0], 100, 200, 'a.json id=1'),
                             [0.0, 10.0, 19.0, 189.0])
  with pytest.raises(common.BadInput, match=r'^empty box: a.json id=2: bbox \[150'):
    coco.clean_box([150.0, 10.0, 20.0, 20.0], 100, 200, 'a.json id=2')  # right of the image
  with pytest.raises(common.BadInput, match='^empty box: a.json id=3: area 0'):
    coco.clean_box([1, 1, 20, 20], 100, 200, 'a.json id=3', area=0)
  with pytest.raises(common.BadInput, match='^malformed annotation: a.json id=4: bbox'):
    coco.clean_box([1, 1, 20], 100, 200, 'a.json id=4')
