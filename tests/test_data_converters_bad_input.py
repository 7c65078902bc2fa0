"""Foreign and broken input the converters refuse (issue 16): never an exit 0 with wrong records.

Every broken file is built here from the bundled samples. Refusals of a whole file or folder
are one `error:` line and exit status 1; single people are skipped and counted in the report.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from configs import default
from data_prep import coco
from data_prep import common
from data_prep import mpii
from okdhp_jax.data import meta as meta_lib
from okdhp_jax.data import pipeline
from okdhp_jax.data import records
from sample_data import mpii_annotations, mpii_people

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLES = os.path.join(REPO, 'data_prep', 'samples')
MPII_SAMPLES = os.path.join(SAMPLES, 'mpii')
COCO_SAMPLES = os.path.join(SAMPLES, 'coco')
COCO_JSON = os.path.join(COCO_SAMPLES, 'test_coco.json')
COCO_DETS = os.path.join(COCO_SAMPLES, 'test_coco_det_AP_H_56.json')


def load(path):
  with open(path) as f:
    return json.load(f)


def dump(data, path) -> str:
  with open(path, 'w') as f:
    json.dump(data, f)
  return str(path)


def refusal(capsys, main, argv) -> str:
  """Runs a converter's main, expects exit 1 and returns its single stderr line."""
  capsys.readouterr()  # what earlier conversions in the test printed
  assert main(argv) == 1
  err = capsys.readouterr().err.strip()
  assert len(err.splitlines()) == 1 and err.startswith('error: ') and 'Traceback' not in err, err
  return err


def read_split(out_dir, split, num_joints):
  return [{k: v.numpy() for k, v in records.parse(s, num_joints).items()}
          for s in tf.data.TFRecordDataset(records.split_files(out_dir, split))]


# 1. Files that are not keypoint files.

@pytest.mark.parametrize('case', ['no annotations', 'a list', 'detections', 'no keypoints'])
def test_coco_refuses_a_file_that_is_not_a_keypoint_file(case, tmp_path, capsys):
  data = load(COCO_JSON)
  if case == 'no annotations':  # e.g. image_info_test-dev2017.json
    del data['annotations']
  elif case == 'a list':
    data = [data]
  elif case == 'no keypoints':  # an instances file
    for a in data['annotations']:
      del a['keypoints']
  path = COCO_DETS if case == 'detections' else dump(data, tmp_path / 'person_val.json')
  out = tmp_path / 'records'
  err = refusal(capsys, coco.main, ['--annotations', path, '--images', COCO_SAMPLES,
                                    '--out', str(out), '--split', 'valid'])
  assert path in err and 'is not a coco keypoint annotation file' in err
  assert {'no annotations': 'no "annotations" list', 'a list': 'holds a list',
          'detections': 'detections file?', 'no keypoints': 'has "keypoints"'}[case] in err
  assert not out.exists()


@pytest.mark.parametrize('case', ['annotation file', 'other split', 'no boxes'])
def test_coco_refuses_detections_that_are_not_boxes_on_these_images(case, tmp_path, capsys):
  dets = load(COCO_DETS)
  if case == 'annotation file':
    path = COCO_JSON
  else:
    if case == 'other split':
      dets = [dict(d, image_id=d['image_id'] + 1) for d in dets]
    else:
      dets = mpii_people()
    path = dump(dets, tmp_path / 'dets.json')
  err = refusal(capsys, coco.main, [
      '--annotations', COCO_JSON, '--images', COCO_SAMPLES, '--out', str(tmp_path / 'r'),
      '--split', 'valid', '--detections', path])
  assert path in err
  assert {'annotation file': 'holds a dict (an annotation file?)',
          'other split': 'none of its 118 boxes is on an image of',
          'no boxes': 'has "image_id" and "bbox"'}[case] in err


@pytest.mark.parametrize('case', ['coco file', 'detections', 'empty', '14 joints'])
def test_mpii_refuses_json_that_is_not_a_list_of_mpii_people(case, tmp_path, capsys):
  train = {'coco file': load(COCO_JSON), 'detections': load(COCO_DETS), 'empty': [],
           '14 joints': [dict(p, joints=p['joints'][:14], joints_vis=p['joints_vis'][:14])
                         for p in mpii_people()]}[case]
  annotations = mpii_annotations(tmp_path / 'annotations', train=train)
  err = refusal(capsys, mpii.main, ['--annotations', annotations, '--images', MPII_SAMPLES,
                                    '--out', str(tmp_path / 'records')])
  assert os.path.join(annotations, 'train.json') in err
  assert {'coco file': 'holds a dict with keys',
          'detections': "no entry has image, center, scale, joints (first entry has keys",
          'empty': '(it is empty)',
          '14 joints': 'people have 14 joints each; MPII has 16'}[case] in err


# 2. Two images with one id.

def test_coco_refuses_two_images_sharing_an_id(tmp_path, capsys):
  data = load(COCO_JSON)
  data['images'][2]['id'] = data['images'][0]['id']
  path = dump(data, tmp_path / 'person_keypoints_val2017.json')
  err = refusal(capsys, coco.main, ['--annotations', path, '--images', COCO_SAMPLES,
                                    '--out', str(tmp_path / 'records')])
  assert err == (f"error: {path}: images[0] and images[2] share id 785 ('000000000785.jpg' "
                 "and '000000196141.jpg'); image ids must be unique")


# 3. 14 keypoints per person in the COCO layout (CrowdPose).

def crowdpose_json(tmp_path, names=meta_lib.CROWDPOSE.joint_names) -> str:
  """test_coco.json remapped to CrowdPose's 14 joints: COCO's limbs, then head (nose), neck."""
  data = load(COCO_JSON)
  data['categories'][0]['keypoints'] = list(names)
  for a in data['annotations']:
    k = np.reshape(a['keypoints'], (17, 3))
    neck = np.r_[(k[5, :2] + k[6, :2]) / 2, min(k[5, 2], k[6, 2])]
    a['keypoints'] = np.concatenate([k[5:], k[:1], neck[None]]).reshape(-1).tolist()
  return dump(data, tmp_path / 'crowdpose_val.json')


def test_coco_refuses_14_keypoints_and_crowdpose_reads_them(tmp_path, capsys):
  path = crowdpose_json(tmp_path)
  out = str(tmp_path / 'records')
  err = refusal(capsys, coco.main, ['--annotations', path, '--images', COCO_SAMPLES,
                                    '--out', out, '--detections', COCO_DETS])
  assert err == (f'error: {path}: annotations have 14 keypoints per person (categories[0].'
                 'keypoints lists 14); coco has 17; for crowdpose files pass --dataset crowdpose')
  assert not os.path.exists(out)

  info, report = coco.convert([path], COCO_SAMPLES, out, dataset='crowdpose',
                              detections=COCO_DETS, det_score_threshold=0.9,
                              show_progress=False)
  assert (info['dataset'], info['num_joints']) == ('crowdpose', 14)
  assert info['splits']['valid'] == 12 and dict(report.skipped['valid']) == {
      'no visible joints': 2}
  person = {int(r['person/index']): r for r in read_split(out, 'valid', 14)}[442619]
  np.testing.assert_allclose(person['person/joints'][0], [399, 108])  # COCO's left shoulder
  np.testing.assert_allclose(person['person/joints'][12], [367, 81])  # the nose, as head
  assert read_split(out, 'valid_det', 14)[0]['person/joints'].shape == (14, 2)


def test_crowdpose_refuses_another_joint_order(tmp_path, capsys):
  names = list(meta_lib.CROWDPOSE.joint_names)
  names[0], names[1] = names[1], names[0]  # AI Challenger style: right side first
  path = crowdpose_json(tmp_path, names)
  err = refusal(capsys, coco.main, ['--annotations', path, '--images', COCO_SAMPLES,
                                    '--out', str(tmp_path / 'r'), '--dataset', 'crowdpose'])
  assert ("categories[0].keypoints[0] is 'right_shoulder' where crowdpose has "
          "'left_shoulder'") in err


def test_crowdpose_meta_is_consistent():
  meta = meta_lib.get_meta('crowdpose')
  assert meta.num_joints == len(meta.oks_sigmas) == 14
  for left, right in meta.flip_pairs:
    assert meta.joint_names[left].replace('left_', 'right_') == meta.joint_names[right]
  assert sorted(meta.upper_body + meta.lower_body) == list(range(14))
  np.testing.assert_allclose(meta.oks_sigmas, np.array(
      [.79, .79, .72, .72, .62, .62, 1.07, 1.07, .87, .87, .89, .89, .79, .79]) / 10)


# 4. An output folder that holds something else.

def test_out_with_another_datasets_records_is_refused_unless_overwrite(tmp_path, capsys):
  out = str(tmp_path / 'records')
  mpii.convert(mpii_annotations(tmp_path / 'annotations'), MPII_SAMPLES, out,
               show_progress=False)
  before = sorted(os.listdir(out))
  argv = ['--annotations', COCO_JSON, '--images', COCO_SAMPLES, '--out', out,
          '--split', 'valid']
  err = refusal(capsys, coco.main, argv)
  assert err == (f"error: --out {out} holds 'mpii' records (16 joints: dataset_info.json, "
                 'gt_valid.mat, train-00000-of-00001.tfrecord, valid-00000-of-00001.tfrecord), '
                 "not 'coco' (17 joints); pass --overwrite to replace them, or choose another "
                 '--out')
  assert sorted(os.listdir(out)) == before

  (tmp_path / 'records' / 'notes.txt').write_text('mine')
  err = refusal(capsys, coco.main, argv + ['--overwrite'])
  assert 'holds files no converter writes: notes.txt' in err
  assert sorted(os.listdir(out)) == sorted(before + ['notes.txt'])

  os.remove(os.path.join(out, 'notes.txt'))
  assert coco.main(argv + ['--overwrite']) == 0
  assert sorted(os.listdir(out)) == ['annotations_valid.json', 'dataset_info.json',
                                     'valid-00000-of-00001.tfrecord']
  info = records.read_dataset_info(out)
  assert (info['dataset'], info['splits']) == ('coco', {'valid': 12})


def test_same_dataset_splits_merge_but_unlisted_shards_are_refused(tmp_path, capsys):
  out = str(tmp_path / 'records')
  coco.convert([COCO_JSON], COCO_SAMPLES, out, split='train', show_progress=False)
  coco.convert([COCO_JSON], COCO_SAMPLES, out, split='valid', show_progress=False)
  assert records.read_dataset_info(out)['splits'] == {'train': 12, 'valid': 12}
  # As an interrupted install leaves it: shards, and no dataset_info.json to list them.
  os.remove(os.path.join(out, records.DATASET_INFO))
  argv = ['--annotations', COCO_JSON, '--images', COCO_SAMPLES, '--out', out,
          '--split', 'valid']
  err = refusal(capsys, coco.main, argv)
  assert err == (
      f'error: --out {out} holds converter files and no dataset_info.json (an earlier '
      'conversion did not finish): train-00000-of-00001.tfrecord; pass --overwrite to remove '
      'them, or choose another --out')
  assert coco.main(argv + ['--overwrite']) == 0
  assert records.read_dataset_info(out)['splits'] == {'valid': 12}
  assert not os.path.exists(os.path.join(out, 'train-00000-of-00001.tfrecord'))


# 5. Image paths that leave --images.

def test_image_paths_outside_images_are_skipped_unopened(tmp_path, monkeypatch):
  images = tmp_path / 'images'
  shutil.copytree(MPII_SAMPLES, images)
  outside = tmp_path / 'outside'
  outside.mkdir()
  shutil.copy(images / '005808361.jpg', outside / 'x.jpg')
  os.symlink(outside / 'x.jpg', images / 'link_out.jpg')
  os.symlink(images / '005808361.jpg', images / 'link_in.jpg')  # inside: fine
  people = mpii_people()
  bad = ['../outside/x.jpg', str(outside / 'x.jpg'), 'link_out.jpg', '../../etc/passwd',
         'sub/../../outside/x.jpg']
  train = people + [dict(people[0], image=name) for name in bad + ['link_in.jpg']]
  opened = []
  load_image = common.load_image
  monkeypatch.setattr(common, 'load_image',
                      lambda p, *args: opened.append(p) or load_image(p, *args))
  out = str(tmp_path / 'records')
  info, report = mpii.convert(mpii_annotations(tmp_path / 'annotations', train=train),
                              str(images), out, show_progress=False)
  assert info['splits'] == {'train': 6, 'valid': 5}
  assert dict(report.skipped['train']) == {'image path outside --images': 5}
  assert all(os.path.realpath(p).startswith(str(images.resolve()) + os.sep) for p in opened)
  messages = [m for m in report.messages if 'train.json' in m]
  assert messages[0] == (f"skipped: image path outside --images: train.json[5]: "
                         f"'../outside/x.jpg' is not a plain path inside {images} (not opened)")
  assert f"train.json[7]: 'link_out.jpg' is a link to {outside.resolve()}/x.jpg" in messages[2]


def test_coco_image_paths_outside_images_are_skipped(tmp_path, monkeypatch):
  data = load(COCO_JSON)
  data['images'][0]['file_name'] = '../outside/000000000785.jpg'
  data['images'][1]['file_name'] = '/etc/passwd'
  path = dump(data, tmp_path / 'person_keypoints_val2017.json')
  opened = []
  load_image = common.load_image
  monkeypatch.setattr(common, 'load_image',
                      lambda p, *args: opened.append(p) or load_image(p, *args))
  _, report = coco.convert([path], COCO_SAMPLES, str(tmp_path / 'records'),
                           detections=COCO_DETS, show_progress=False)
  images = {im['id'] for im in data['images'][:2]}
  people = sum(a['image_id'] in images for a in data['annotations'])
  boxes = sum(d['image_id'] in images for d in load(COCO_DETS))
  assert report.skipped['valid']['image path outside --images'] == people
  assert report.skipped['valid_det']['image path outside --images'] == boxes
  assert not [p for p in opened if 'passwd' in p or 'outside' in p]


# 6. Killed conversions: nothing half-written is read as whole.

class Killed(BaseException):
  """What a SIGKILL is to the folder: the code after it never runs (finally aside)."""


def data_config(out):
  config = default.get_config().data
  config.update(records_dir=out, input_size=(64, 64), shuffle_buffer=2)
  return config


def assert_refused_or_whole(out, expected_lengths):
  """The folder has no info (and the pipeline refuses it), or an info its shards match."""
  if not os.path.exists(os.path.join(out, records.DATASET_INFO)):
    with pytest.raises(FileNotFoundError, match='conversion did not finish'):
      pipeline.build_train_dataset(data_config(out), meta_lib.MPII, local_batch_size=2, seed=0)
    return False
  info = records.read_dataset_info(out)
  assert info['shard_lengths'] in expected_lengths
  for split in ('train', 'valid'):
    assert [r['person/index'] for r in read_split(out, split, 16)] == [0, 1, 2, 3, 4]
  return True


def test_install_killed_at_every_step_leaves_no_half_folder(tmp_path, monkeypatch):
  annotations = mpii_annotations(tmp_path / 'annotations')
  out = str(tmp_path / 'records')
  mpii.convert(annotations, MPII_SAMPLES, out, show_progress=False, examples_per_shard=2)
  old = {s: [2, 2, 1] for s in ('train', 'valid')}
  new = {s: [1] * 5 for s in ('train', 'valid')}
  replace = os.replace
  # 5 + 5 shards and gt_valid.mat, then dataset_info.json: kill before each of the 12 moves.
  for kill_at in range(12):
    calls = []

    def killing_replace(src, dst):
      calls.append(dst)
      if len(calls) > kill_at:
        raise Killed()
      replace(src, dst)
    monkeypatch.setattr(common.os, 'replace', killing_replace)
    with pytest.raises(Killed):
      mpii.convert(annotations, MPII_SAMPLES, out, show_progress=False, examples_per_shard=1)
    monkeypatch.setattr(common.os, 'replace', replace)
    assert not assert_refused_or_whole(out, [old, new]), kill_at
  mpii.convert(annotations, MPII_SAMPLES, out, show_progress=False, examples_per_shard=1)
  assert assert_refused_or_whole(out, [new])


KILLING_CONVERTER = r'''
import os, signal, sys
from data_prep import common, mpii
phase, after = sys.argv[1], int(sys.argv[2])
calls = []
def kill_after(original):
  def call(*args):
    calls.append(args)
    if len(calls) > after:
      os.kill(os.getpid(), signal.SIGKILL)
    return original(*args)
  return call
if phase == 'write':
  common.ShardWriter.write = kill_after(common.ShardWriter.write)
else:
  common.os.replace = kill_after(common.os.replace)
sys.exit(mpii.main(sys.argv[3:]))
'''


def run_killed(phase, after, annotations, out, *extra):
  result = subprocess.run(
      [sys.executable, '-c', KILLING_CONVERTER, phase, str(after), '--annotations', annotations,
       '--images', MPII_SAMPLES, '--out', out, *extra],
      cwd=REPO, capture_output=True, text=True, timeout=120)
  assert result.returncode == -signal.SIGKILL, result.stderr


def test_sigkill_while_writing_keeps_the_previous_records_whole(tmp_path):
  annotations = mpii_annotations(tmp_path / 'annotations')
  out = str(tmp_path / 'records')
  mpii.convert(annotations, MPII_SAMPLES, out, show_progress=False, examples_per_shard=2)
  run_killed('write', 7, annotations, out, '--examples-per-shard', '1')
  assert [n for n in os.listdir(out) if n.startswith('.incomplete-')]  # the dead run's
  assert assert_refused_or_whole(out, [{s: [2, 2, 1] for s in ('train', 'valid')}])


def test_sigkill_while_installing_is_refused_then_redone(tmp_path):
  annotations = mpii_annotations(tmp_path / 'annotations')
  out = str(tmp_path / 'records')
  mpii.convert(annotations, MPII_SAMPLES, out, show_progress=False, examples_per_shard=2)
  run_killed('install', 3, annotations, out, '--examples-per-shard', '1')
  assert not assert_refused_or_whole(out, [])
  # Re-running needs no --overwrite and clears what the killed run left.
  mpii.convert(annotations, MPII_SAMPLES, out, show_progress=False, examples_per_shard=1)
  assert assert_refused_or_whole(out, [{s: [1] * 5 for s in ('train', 'valid')}])
  assert not [n for n in os.listdir(out) if n.startswith('.incomplete-')]


@pytest.mark.slow
def test_sigkill_at_a_random_moment_of_a_long_conversion(tmp_path):
  people = mpii_people() * 400  # 2000 people: tens of seconds of decoding
  annotations = mpii_annotations(tmp_path / 'annotations', train=people)
  out = str(tmp_path / 'records')
  process = subprocess.Popen(
      [sys.executable, '-m', 'data_prep.mpii', '--annotations', annotations, '--images',
       MPII_SAMPLES, '--out', out, '--examples-per-shard', '50'],
      cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  deadline = time.time() + 60
  while time.time() < deadline:  # kill once some shards are written
    tmp = [os.path.join(out, n) for n in os.listdir(out)] if os.path.isdir(out) else []
    if any(len(os.listdir(t)) > 2 for t in tmp if os.path.isdir(t)):
      break
    time.sleep(0.2)
  process.send_signal(signal.SIGKILL)
  process.wait()
  assert not os.path.exists(os.path.join(out, records.DATASET_INFO))
  with pytest.raises(FileNotFoundError, match='conversion did not finish'):
    pipeline.build_train_dataset(data_config(out), meta_lib.MPII, local_batch_size=2, seed=0)
