"""Skeleton drawings (pixel colours) and the per-branch report (one table, best branch)."""

from __future__ import annotations

import os

import numpy as np
import pytest
import scipy.io
from PIL import Image

from okdhp_jax.data.meta import MPII
from okdhp_jax.evaluation import pckh, report, visualize


def _pose(offset_x: float) -> np.ndarray:
  """A vertical MPII-shaped pose (all joints on one line) at x = offset_x."""
  joints = np.zeros((16, 2))
  joints[:, 0] = offset_x
  joints[:, 1] = np.linspace(10, 90, 16)
  return joints


def _has_color(region: np.ndarray, color) -> bool:
  return bool(np.any(np.all(region == np.array(color, np.uint8), axis=-1)))


def test_draw_pose_colours_limbs_and_skips_low_scores():
  image = np.zeros((100, 100, 3), np.uint8)
  joints = np.full((16, 2), np.nan)
  joints[7] = (20, 20)   # thorax
  joints[12] = (80, 20)  # r_shoulder: limb (7, 12) along y = 20
  joints[13] = (50, 80)  # l_shoulder: limb (7, 13), but scored below the threshold
  scores = np.ones(16)
  scores[13] = 0.1
  drawn = visualize.draw_pose(image, joints, MPII, scores=scores, color=(10, 200, 30))
  assert drawn.dtype == np.uint8 and drawn.shape == image.shape
  assert np.array_equal(image, np.zeros_like(image))  # the input is left untouched
  assert tuple(drawn[20, 50]) == (10, 200, 30)       # middle of the limb
  assert not drawn[70:90, 40:60].any()               # the skipped joint and its limb
  coloured = np.argwhere(drawn.any(axis=-1))
  assert coloured[:, 0].min() >= 17 and coloured[:, 0].max() <= 23


def test_prediction_in_side_colours_over_thin_white_gt(tmp_path):
  image = np.full((100, 100, 3), 128, np.uint8)
  drawn = visualize.draw_prediction_and_gt(image, _pose(30), _pose(70), np.ones(16), MPII,
                                           np.ones(16))
  centre, gt = visualize.SIDE_COLORS['centre'], visualize.GT_COLOR
  # A vertical pose puts every joint on one line: the centre limbs (pelvis, thorax, neck) show.
  assert _has_color(drawn[:, 25:35], centre) and not _has_color(drawn[:, 25:35], gt)
  assert _has_color(drawn[:, 65:75], gt) and not _has_color(drawn[:, 65:75], centre)
  # Between two joints (rows 10 and 15.3), the GT line is thinner than the prediction's.
  gt_width = (drawn[13, 60:80] == gt).all(-1).sum()
  pred_width = (drawn[13, 20:40] != 128).any(-1).sum()
  assert 1 <= gt_width < pred_width
  invisible_gt = visualize.draw_prediction_and_gt(image, _pose(30), _pose(70), np.zeros(16),
                                                  MPII, np.ones(16))
  assert not _has_color(invisible_gt, gt)
  path = str(tmp_path / 'pictures' / 'sample_0.png')
  visualize.save_png(path, drawn)
  assert np.array_equal(np.asarray(Image.open(path).convert('RGB')), drawn)


def test_left_and_right_limbs_differ_in_colour():
  """MPII's right forearm (r_elbow-r_wrist) and left forearm, drawn apart horizontally."""
  joints = np.full((16, 2), np.nan)
  index = MPII.joint_names.index
  joints[index('r_elbow')], joints[index('r_wrist')] = (10, 50), (40, 50)
  joints[index('l_elbow')], joints[index('l_wrist')] = (60, 50), (90, 50)
  drawn = visualize.draw_pose(np.zeros((100, 100, 3), np.uint8), joints, MPII)
  assert tuple(drawn[50, 25]) == visualize.SIDE_COLORS['right']
  assert tuple(drawn[50, 75]) == visualize.SIDE_COLORS['left']
  assert MPII.joint_sides[index('thorax')] == 'centre'


def test_draw_crops_enlarges_skips_padding_and_grids_with_a_legend(tmp_path):
  """Eval-batch crops (normalised) come back enlarged to >= 256 px, padding rows left out."""
  grey = np.full((3, 64, 48, 3), 128, np.uint8)
  poses = np.stack([_pose(20) * [1, 0.6]] * 3)
  batch = {'image': grey, 'joints': poses, 'joints_vis': np.ones((3, 16))}
  valid = np.array([False, True, True])
  drawn = visualize.draw_crops(batch, poses + [10, 0], np.ones((3, 16)), valid, MPII, count=5)
  # 48 px wide -> factor 6 -> 288 x 384.
  assert len(drawn) == 2 and all(d.shape == (384, 288, 3) and d.dtype == np.uint8 for d in drawn)
  assert tuple(drawn[0][0, 0]) == (128, 128, 128)  # the crop itself, denormalised.
  # x = 30 -> (30 + 0.5) * 6 - 0.5 = 182.5 (prediction); x = 20 -> 122.5 (GT).
  assert _has_color(drawn[0][:, 178:188], visualize.SIDE_COLORS['centre'])
  assert _has_color(drawn[0][:, 120:126], visualize.GT_COLOR)
  picture = visualize.grid(drawn, columns=4)
  assert picture.shape == (4 + 384 + 4 + visualize.LEGEND_HEIGHT, 4 + 2 * (288 + 4), 3)
  legend = picture[-visualize.LEGEND_HEIGHT:]
  for color in (*visualize.SIDE_COLORS.values(), visualize.GT_COLOR):
    assert _has_color(legend, color)
  path = visualize.save_png(str(tmp_path / 'samples' / 'step0000010.png'), picture)
  assert np.array_equal(np.asarray(Image.open(path).convert('RGB')), picture)


def test_draw_bad_inputs():
  with pytest.raises(ValueError, match='uint8'):
    visualize.draw_pose(np.zeros((10, 10, 3), np.float32), _pose(5), MPII)
  with pytest.raises(ValueError, match=r'\[16, 2\]'):
    visualize.draw_pose(np.zeros((10, 10, 3), np.uint8), np.zeros((17, 2)), MPII)


def test_branch_report_picks_best_branch_not_ensemble():
  results = {
      'ensemble': {'Head': 97.5, 'Shoulder': 96.0, 'Mean': 91.0},
      'branch_1': {'Head': 96.0, 'Shoulder': 95.0, 'Mean': 90.2},
      'branch_0': {'Head': 97.0, 'Shoulder': 96.5, 'Mean': 90.0},
  }
  text, best = report.branch_report(results, 'Mean')
  assert best == 'branch_1'
  lines = text.splitlines()
  assert lines[0] == '| model | Head | Sho | Mean |'
  assert lines[2] == '| branch_0 | 97.00 | 96.50 | 90.00 |'
  assert lines[3] == '| branch_1 * | 96.00 | 95.00 | 90.20 |'
  assert lines[4] == '| ensemble | 97.50 | 96.00 | 91.00 |'
  assert 'best branch by Mean: branch_1' in text


def test_branch_report_scores_other_groups_on_their_own_lines():
  held_out = {'branch_0': {'Mean': 70.0}, 'branch_1': {'Mean': 72.5}, 'ensemble': {'Mean': 74.0}}
  real = {'branch_0': {'Mean': 40.0}, 'branch_1': {'Mean': 20.0}, 'ensemble': {'Mean': 30.0}}
  text, best = report.branch_report(held_out, 'Mean', scored_on='held-out figures (8)',
                                    subsets={'real people (5, trained on)': real})
  assert best == 'branch_1'  # ranked on the held-out group only.
  lines = text.splitlines()
  assert lines[0] == 'Scored on held-out figures (8):'
  assert lines[-1] == ('Mean on real people (5, trained on): branch_0 40.00, branch_1 20.00, '
                       'ensemble 30.00')


def test_branch_report_coco_and_errors():
  results = {f'branch_{i}': {'AP': ap, 'AR': 0.8} for i, ap in enumerate([0.70, 0.74, 0.72])}
  results['branch_10'] = {'AP': 0.71, 'AR': 0.8}
  text, best = report.branch_report(results, 'AP')
  assert best == 'branch_1'
  assert [line.split(' |')[0] for line in text.splitlines()[2:6]] == [
      '| branch_0', '| branch_1 *', '| branch_2', '| branch_10']
  with pytest.raises(ValueError, match='no branch results'):
    report.branch_report({'ensemble': {'AP': 1.0}}, 'AP')
  with pytest.raises(ValueError, match="metric 'Mean' is missing"):
    report.branch_report(results, 'Mean')


def test_mpii_branches_in_one_table():
  gt_file = os.path.join(os.path.dirname(__file__), '..', 'data_prep', 'samples', 'mpii',
                         'gt_valid_first5.mat')
  gt = pckh.load_mpii_gt(gt_file)
  tompson = scipy.io.loadmat(gt_file)['pos_pred_src'].transpose(2, 0, 1) - 1.0
  results = {name: pckh.compute_pckh(preds, gt).table for name, preds in
             (('branch_0', tompson), ('branch_1', gt.pos_gt), ('ensemble', gt.pos_gt))}
  text, best = report.branch_report(results, 'Mean')
  assert best == 'branch_1'
  assert '| model | Head | Sho | Elb | Wri | Hip | Knee | Ank | Mean | Mean@0.1 |' in text
  assert '| branch_0 | 100.00 | 90.00 | 90.00 | 100.00 | 90.00 | 100.00 | 66.67 | 92.42 | 45.45 |' \
      in text
