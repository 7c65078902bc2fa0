"""The bundled quick-start data: the real samples (plus synthetic figures) as records.

`prepare_for_config` is what `python -m okdhp_jax.main` calls before it builds the trainer
when `config.data.bundled` is set. `prepare_bundled` is the `runlocal` default: the 5 real MPII
validation people (data_prep/samples/mpii) go into both splits, synthetic figures are added to
the train split (and optionally to valid), and gt_valid_first5.mat becomes gt_valid.mat. It
returns at once when the folder already holds the same conversion (dataset_info.json is
written last and remembers the parameters). `prepare_bundled_coco` does the same for the 14
COCO people, and `prepare_synthetic` for synthetic figures alone (configs/synthetic.py).
"""

from __future__ import annotations

import copy
import json
import os
import tempfile

import numpy as np
from scipy.io import loadmat, savemat

from data_prep import coco
from data_prep import common
from data_prep import mpii
from data_prep import synthetic
from okdhp_jax.data import records

SAMPLES_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'samples')
SYNTHETIC_SIZE = 128


def _is_current(out_dir: str, params: dict) -> bool:
  path = os.path.join(out_dir, records.DATASET_INFO)
  if not os.path.exists(path):
    return False
  with open(path) as f:
    return json.load(f).get('bundled') == params


def _difficulty_params(difficulty: synthetic.Difficulty) -> dict:
  """The knobs that differ from the defaults: records of default figures keep the parameters
  they were built with, and stay current."""
  changed = difficulty.changed()
  return {'difficulty': changed} if changed else {}


def _write_info(out_dir: str, info: dict) -> None:
  path = os.path.join(out_dir, records.DATASET_INFO)
  with open(path + '.tmp', 'w') as f:
    json.dump(info, f, indent=2)
  os.replace(path + '.tmp', path)


def _merge_gt(real_path: str, synthetic_pairs, out_path: str):
  """gt_valid.mat of the real people followed by the synthetic valid figures."""
  gt = loadmat(real_path)
  out = {k: gt[k] for k in ('pos_gt_src', 'jnt_missing', 'headboxes_src', 'dataset_joints')}
  if synthetic_pairs:
    joints = np.stack([e.joints for e, _ in synthetic_pairs])
    vis = np.stack([e.joints_vis for e, _ in synthetic_pairs])
    heads = np.stack([h for _, h in synthetic_pairs])
    out['pos_gt_src'] = np.concatenate(
        [out['pos_gt_src'], np.transpose(joints + 1.0, (1, 2, 0))], axis=2)
    out['jnt_missing'] = np.concatenate(
        [out['jnt_missing'], np.transpose(1 - vis, (1, 0)).astype(np.uint8)], axis=1)
    out['headboxes_src'] = np.concatenate(
        [out['headboxes_src'], np.transpose(heads + 1.0, (1, 2, 0))], axis=2)
  savemat(out_path, out)


def _eval_groups(num_real: int, num_synthetic_valid: int) -> list[dict]:
  """The valid split's parts, scored apart (records.EVAL_GROUPS); the first one ranks branches."""
  groups = [{'name': 'real MPII people', 'person_index': [0, num_real],
             'in_training_set': True}]
  if num_synthetic_valid:
    figures = {'name': 'held-out generated figures',
               'person_index': [num_real, num_real + num_synthetic_valid],
               'in_training_set': False}
    groups.insert(0, figures)
  return groups


def _description(num_real: int, num_train: int, num_valid: int) -> str:
  """The one line main prints about what the bundled data is and what its PCKh means."""
  train = f'{num_real} real MPII people + {num_train} generated figures'
  if not num_valid:
    return (f'Data: {train} to train on, scored on the same {num_real} people: PCKh shows '
            'that the pipeline runs, not how well the network generalises.')
  return (f'Data: {train} to train on; PCKh on {num_valid} held-out generated figures shows '
          f'the method learning (not comparable to MPII numbers), and on the {num_real} real '
          'people, also trained on, is a smoke test only.')


def prepare_bundled(out_dir: str, *, num_synthetic_train: int = 256,
                    num_synthetic_valid: int = 0, clutter: bool = True,
                    image_size: int = SYNTHETIC_SIZE, force: bool = False, seed: int = 0,
                    difficulty: synthetic.Difficulty = synthetic.DEFAULT_DIFFICULTY,
                    show_progress: bool = False) -> str:
  """Converts the bundled MPII samples (+ synthetic figures) into out_dir; returns out_dir.

  Train: 5 real people + `num_synthetic_train` figures. Valid: the 5 real people (person_index
  0..4 = gt_valid.mat columns) + `num_synthetic_valid` held-out figures (columns 5...), which
  dataset_info.json names as evaluation groups scored apart (records.EVAL_GROUPS).
  """
  params = {'kind': 'mpii', 'num_synthetic_train': num_synthetic_train,
            'num_synthetic_valid': num_synthetic_valid, 'seed': seed,
            'synthetic_size': image_size, 'clutter': clutter, **_difficulty_params(difficulty)}
  if not force and _is_current(out_dir, params):
    return out_dir
  samples = os.path.join(SAMPLES_DIR, 'mpii')
  people = mpii.load_json_list(os.path.join(samples, 'test_mpii.json'))
  num_real = len(people)
  train_synth = [synthetic.figure_example(seed, i, image_size, clutter, difficulty)[0]
                 for i in range(num_synthetic_train)]
  valid_pairs = []
  for i in range(num_synthetic_valid):
    example, headbox = synthetic.figure_example(seed + 1_000_003, i, image_size, clutter,
                                                difficulty)
    example.person_index = num_real + i
    valid_pairs.append((example, headbox))
  splits = {
      'train': (mpii.candidates(people, samples, 'test_mpii.json')
                + synthetic.candidates(train_synth, 'train')),
      'valid': (mpii.candidates(copy.deepcopy(people), samples, 'test_mpii.json')
                + synthetic.candidates([e for e, _ in valid_pairs], 'valid')),
  }
  info = {'dataset': 'mpii', 'num_joints': 16, 'source': 'bundled mpii samples + synthetic',
          'bundled': params,
          records.EVAL_GROUPS: _eval_groups(num_real, num_synthetic_valid),
          records.DESCRIPTION: _description(num_real, num_synthetic_train, num_synthetic_valid)}
  if num_synthetic_train or num_synthetic_valid:
    info[records.SIDES_BY_COLOUR] = True
  with tempfile.TemporaryDirectory() as tmp:
    gt_path = os.path.join(tmp, 'gt_valid.mat')
    _merge_gt(os.path.join(samples, 'gt_valid_first5.mat'), valid_pairs, gt_path)
    common.write_records(out_dir, splits, info, report=common.Report(strict=True),
                         extra_files={'gt_valid.mat': gt_path}, show_progress=show_progress)
  return out_dir


def prepare_synthetic(out_dir: str, *, num_train: int, num_valid: int, image_size: int,
                      clutter: bool, seed: int = 0, show_progress: bool = False,
                      **difficulty) -> str:
  """Generates synthetic figures (data_prep.synthetic) into out_dir unless already there.

  `difficulty`: fields of synthetic.Difficulty (config.data.synthetic's other keys).
  """
  knobs = synthetic.Difficulty.from_dict(difficulty)
  params = {'kind': 'synthetic', 'num_train': num_train, 'num_valid': num_valid,
            'image_size': image_size, 'clutter': clutter, 'seed': seed,
            **_difficulty_params(knobs)}
  if _is_current(out_dir, params):
    return out_dir
  # `generate` writes dataset_info.json last; rewrite it with the parameters that mark it current.
  info = synthetic.generate(out_dir, num_train, num_valid, size=image_size, seed=seed,
                            clutter=clutter, difficulty=knobs, show_progress=show_progress)
  info['bundled'] = params
  _write_info(out_dir, info)
  return out_dir


def prepare_bundled_coco(out_dir: str, *, force: bool = False, with_detections: bool = True,
                         show_progress: bool = False) -> str:
  """Converts the 14 bundled COCO people (test_coco.json as train and valid) into out_dir."""
  params = {'kind': 'coco', 'with_detections': with_detections}
  if not force and _is_current(out_dir, params):
    return out_dir
  samples = os.path.join(SAMPLES_DIR, 'coco')
  annotations = os.path.join(samples, 'test_coco.json')
  coco.convert([annotations], samples, out_dir, split='train', show_progress=show_progress)
  info, _ = coco.convert(
      [annotations], samples, out_dir, split='valid',
      detections=os.path.join(samples, 'test_coco_det_AP_H_56.json') if with_detections else '',
      show_progress=show_progress)
  info['bundled'] = params
  _write_info(out_dir, info)
  return out_dir


def prepare_for_config(data_config) -> str:
  """Builds the records `config.data.bundled` names into config.data.records_dir.

  With several processes, process 0 builds first: processes that share a filesystem then find
  the records current and return at once, instead of converting into the same folder at the
  same time; hosts with their own disks build their own copy after process 0.
  """
  import jax  # pylint: disable=g-import-not-at-top
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  synthetic_params = data_config.synthetic.to_dict()
  difficulty = {k: v for k, v in synthetic_params.items() if k in synthetic.DIFFICULTY_FIELDS}
  builders = {
      'mpii': lambda out_dir: prepare_bundled(
          out_dir, num_synthetic_train=synthetic_params['num_train'],
          num_synthetic_valid=synthetic_params['num_valid'],
          image_size=synthetic_params['image_size'], clutter=synthetic_params['clutter'],
          difficulty=synthetic.Difficulty.from_dict(difficulty)),
      'coco': prepare_bundled_coco,
      'synthetic': lambda out_dir: prepare_synthetic(out_dir, **synthetic_params),
  }
  if data_config.bundled not in builders:
    raise ValueError(f'config.data.bundled={data_config.bundled!r} must be one of '
                     f"{sorted(builders)} or '' (records converted with data_prep)")
  build = builders[data_config.bundled]
  out_dir = data_config.records_dir
  if jax.process_count() > 1 and jax.process_index() != 0:
    multihost_utils.sync_global_devices('okdhp: bundled records built by process 0')
    return build(out_dir)
  build(out_dir)
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices('okdhp: bundled records built by process 0')
  return out_dir
