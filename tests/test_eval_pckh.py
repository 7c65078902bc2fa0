"""MPII PCKh: known answers of the sample data, hand-computed thresholds, pred.mat layouts, the
metric object (groups, pred.mat), bad input."""

from __future__ import annotations

import dataclasses
import json
import os

import types

import ml_collections
import numpy as np
import pytest
import scipy.io
from etils import epath

from okdhp_jax.data.meta import MPII
from okdhp_jax.evaluation import metrics, pckh, report
from okdhp_jax.tools import eval_mpii

SAMPLES = os.path.join(os.path.dirname(__file__), '..', 'data_prep', 'samples', 'mpii')
GT_FILE = os.path.join(SAMPLES, 'gt_valid_first5.mat')
TOMPSON = {'Head': 100.0, 'Shoulder': 90.0, 'Elbow': 90.0, 'Wrist': 100.0, 'Hip': 90.0,
           'Knee': 100.0, 'Ankle': 66.6667, 'Mean': 92.4242}


@pytest.fixture(scope='module')
def gt():
  return pckh.load_mpii_gt(GT_FILE)


@pytest.fixture(scope='module')
def tompson_0_based():
  return scipy.io.loadmat(GT_FILE)['pos_pred_src'].transpose(2, 0, 1) - 1.0


def test_gt_is_converted_to_0_based(gt):
  raw = scipy.io.loadmat(GT_FILE)
  assert gt.num_people == 5
  np.testing.assert_allclose(gt.pos_gt[0, 0], raw['pos_gt_src'][0, :, 0] - 1.0)
  assert gt.jnt_visible[2, 0] == (raw['jnt_missing'][0, 2] == 0) == False  # noqa: E712


def test_gt_as_prediction_is_100(gt):
  result = pckh.compute_pckh(gt.pos_gt, gt)
  assert all(v == pytest.approx(100.0) for v in result.table.values())


def test_tompson_known_answers(gt, tompson_0_based):
  result = pckh.compute_pckh(tompson_0_based, gt)
  for key, value in TOMPSON.items():
    assert result.table[key] == pytest.approx(value, abs=1e-4), key
  assert result.table['Mean@0.1'] == pytest.approx(45.4545, abs=1e-4)
  hrnet = pckh.compute_pckh(tompson_0_based, gt,
                            mean_at_0_1_threshold=pckh.HRNET_MEAN_AT_0_1_THRESHOLD)
  assert hrnet.table['Mean@0.1'] == pytest.approx(48.4848, abs=1e-4)
  assert hrnet.table['Mean'] == pytest.approx(TOMPSON['Mean'], abs=1e-4)


def test_format_table_like_the_paper(gt):
  text = report.format_table({None: pckh.compute_pckh(gt.pos_gt, gt).table}, pckh.TABLE_KEYS)
  assert text.splitlines()[0] == '| Head | Sho | Elb | Wri | Hip | Knee | Ank | Mean | Mean@0.1 |'
  assert '| 100.00 |' in text


def _write_gt(path, pos_1_based, missing, headboxes_1_based, drop=None):
  mat = {'pos_gt_src': pos_1_based.transpose(1, 2, 0), 'jnt_missing': missing.T.astype(np.uint8),
         'headboxes_src': headboxes_1_based.transpose(1, 2, 0)}
  if drop:
    del mat[drop]
  scipy.io.savemat(path, mat)


def test_threshold_is_inclusive_and_hand_computed(tmp_path):
  # One person, head box (10, 10)-(40, 50): diagonal 50, head size 0.6 * 50 = 30 px, so
  # PCKh@0.5 accepts errors <= 15 px and the 0.1 column errors <= 3 px.
  pos = np.full((1, 16, 2), 100.0)
  missing = np.zeros((1, 16))
  missing[0, 5] = 1  # l_ankle never visible: its PCKh, and so Ankle (the L/R mean), is NaN.
  heads = np.array([[[10.0, 10.0], [40.0, 50.0]]])
  path = str(tmp_path / 'gt.mat')
  _write_gt(path, pos, missing, heads)
  gt = pckh.load_mpii_gt(path)
  errors = np.zeros(16)
  errors[9] = 15.0     # head: exactly the threshold -> correct
  errors[13] = 15.01   # l_shoulder: just over -> wrong
  errors[12] = 3.0     # r_shoulder: correct at 0.5 and exactly at 0.1
  errors[10] = 3.01    # r_wrist: correct at 0.5, wrong at 0.1
  errors[6] = 1000.0   # pelvis: not in the table
  preds = gt.pos_gt.copy()
  preds[0, :, 0] += errors
  result = pckh.compute_pckh(preds, gt)
  assert result.table['Head'] == 100.0
  assert result.table['Shoulder'] == 50.0
  assert result.per_joint[6] == 0.0
  assert result.joint_counts[5] == 0 and np.isnan(result.per_joint[5])
  assert np.isnan(result.table['Ankle'])
  # 14 joints in the mean minus the missing l_ankle = 13 visible; 12 correct at 0.5.
  assert result.table['Mean'] == pytest.approx(100 * 12 / 13)
  # At 0.1 (3 px): head (15) and l_sho (15.01) and r_wri (3.01) fail: 10 of 13.
  assert result.table['Mean@0.1'] == pytest.approx(100 * 10 / 13)


def test_person_indices_subset(gt, tompson_0_based):
  order = np.array([4, 0])
  assert pckh.compute_pckh(gt.pos_gt[order], gt, person_indices=order).table['Mean'] == 100.0
  swapped = pckh.compute_pckh(gt.pos_gt[order], gt, person_indices=order[::-1])
  assert swapped.table['Mean'] < 10.0
  permutation = np.array([3, 1, 4, 0, 2])
  permuted = pckh.compute_pckh(tompson_0_based[permutation], gt, person_indices=permutation)
  assert permuted.table['Mean'] == pytest.approx(TOMPSON['Mean'], abs=1e-4)
  with pytest.raises(ValueError, match='person_indices'):
    pckh.compute_pckh(gt.pos_gt[:1], gt, person_indices=[7])


def test_pred_mat_layouts(tmp_path, gt, tompson_0_based):
  path = str(tmp_path / 'out' / 'pred.mat')
  pckh.save_pred_mat(path, tompson_0_based)
  raw = scipy.io.loadmat(path)['preds']
  assert raw.shape == (5, 16, 2)  # HRNet's layout, 1-based:
  np.testing.assert_allclose(raw, scipy.io.loadmat(GT_FILE)['pos_pred_src'].transpose(2, 0, 1))
  np.testing.assert_allclose(pckh.load_pred_mat(path), tompson_0_based)
  matlab = str(tmp_path / 'matlab.mat')
  scipy.io.savemat(matlab, {'preds': raw.transpose(1, 2, 0)})  # 16 x 2 x N
  np.testing.assert_allclose(pckh.load_pred_mat(matlab), tompson_0_based)
  np.testing.assert_allclose(pckh.load_pred_mat(GT_FILE, key='pos_pred_src'), tompson_0_based)


def test_metric_scores_each_group_apart_and_writes_the_best_branchs_pred_mat(
    tmp_path, gt, tompson_0_based):
  config = ml_collections.ConfigDict({'data': {'eval_annotations': GT_FILE},
                                      'eval': {'pckh_threshold': 0.5,
                                               'hrnet_mean_at_0_11': False}})
  metric = metrics.create(config, MPII)
  order = np.array([3, 1, 4, 0, 2])  # evaluation order is not gt_valid.mat's.
  joints = {'branch_0': tompson_0_based[order], 'branch_1': gt.pos_gt[order],
            'ensemble': gt.pos_gt[order]}
  predictions = metrics.Predictions(joints, {}, {'person_index': order})
  everyone = metric.score(predictions)
  assert everyone.scored_on == '' and everyone.subsets == {}
  assert everyone.metrics['branch_0']['Mean'] == pytest.approx(TOMPSON['Mean'], abs=1e-4)
  groups = [{'name': 'held out', 'person_index': [3, 5], 'in_training_set': False},
            {'name': 'seen', 'person_index': [0, 3], 'in_training_set': True},
            {'name': 'absent', 'person_index': [7, 9], 'in_training_set': False}]
  grouped = metric.score(dataclasses.replace(predictions, eval_groups=groups))
  assert grouped.scored_on == 'held out (2, not trained on)'
  assert list(grouped.subsets) == ['seen (3, also in the training set: a smoke test)']
  held_out = order >= 3
  assert grouped.metrics['branch_0'] == pckh.compute_pckh(
      tompson_0_based[order][held_out], gt, person_indices=order[held_out]).table

  result = types.SimpleNamespace(predictions=joints, best_branch=0, person_index=order)
  type(metric).write_files(result, epath.Path(tmp_path))
  np.testing.assert_allclose(pckh.load_pred_mat(str(tmp_path / 'pred.mat')), tompson_0_based)


def test_cli_json(tmp_path, capsys, tompson_0_based):
  path = str(tmp_path / 'pred.mat')
  pckh.save_pred_mat(path, tompson_0_based)
  assert eval_mpii.main(['--predictions', path, '--gt', GT_FILE, '--json']) == 0
  out = json.loads(capsys.readouterr().out)
  assert out['table']['Mean'] == pytest.approx(TOMPSON['Mean'], abs=1e-4)
  assert out['table']['Mean@0.1'] == pytest.approx(45.4545, abs=1e-4)
  assert eval_mpii.main(['--predictions', path, '--gt', GT_FILE, '--hrnet-mean-at-0-11']) == 0
  text = capsys.readouterr().out
  assert '| 100.00 | 90.00 | 90.00 | 100.00 | 90.00 | 100.00 | 66.67 | 92.42 | 48.48 |' in text


def test_bad_predictions(gt):
  with pytest.raises(ValueError, match=r'\[people, 16, 2\].*\(5, 14, 2\)'):
    pckh.compute_pckh(np.zeros((5, 14, 2)), gt)
  with pytest.raises(ValueError, match='4 people but the ground truth has 5'):
    pckh.compute_pckh(np.zeros((4, 16, 2)), gt)
  preds = gt.pos_gt.copy()
  preds[3, 2, 1] = np.nan
  with pytest.raises(ValueError, match=r'NaN.*\[3\]'):
    pckh.compute_pckh(preds, gt)


def test_bad_files(tmp_path, capsys):
  path = str(tmp_path / 'no_heads.mat')
  _write_gt(path, np.zeros((2, 16, 2)), np.zeros((2, 16)), np.zeros((2, 2, 2)),
            drop='headboxes_src')
  with pytest.raises(ValueError, match="no_heads.mat.*'headboxes_src'"):
    pckh.load_mpii_gt(path)
  wrong = str(tmp_path / 'wrong_shape.mat')
  scipy.io.savemat(wrong, {'pos_gt_src': np.zeros((14, 2, 3)), 'jnt_missing': np.zeros((16, 3)),
                           'headboxes_src': np.zeros((2, 2, 3))})
  with pytest.raises(ValueError, match=r"wrong_shape.mat.*'pos_gt_src' must be 16 x 2 x N"):
    pckh.load_mpii_gt(wrong)
  with pytest.raises(FileNotFoundError, match='missing.mat'):
    pckh.load_mpii_gt(str(tmp_path / 'missing.mat'))
  bad_layout = str(tmp_path / 'bad_layout.mat')
  scipy.io.savemat(bad_layout, {'preds': np.zeros((5, 2, 16))})
  with pytest.raises(ValueError, match="bad_layout.mat.*'preds'.*N x 16 x 2"):
    pckh.load_pred_mat(bad_layout)
  # The CLI turns these into one-line errors and exit status 1, not tracebacks.
  assert eval_mpii.main(['--predictions', bad_layout, '--gt', GT_FILE]) == 1
  err = capsys.readouterr().err
  assert err.startswith('eval_mpii: error:') and 'Traceback' not in err
  few = str(tmp_path / 'few.mat')
  scipy.io.savemat(few, {'preds': np.ones((3, 16, 2))})
  assert eval_mpii.main(['--predictions', few, '--gt', GT_FILE]) == 1
  assert '3 people' in capsys.readouterr().err
