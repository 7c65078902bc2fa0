"""COCO AP known answers, rescoring, OKS-NMS, NMS areas, the metric object and bad input."""

from __future__ import annotations

import dataclasses
import json
import os

import ml_collections
import numpy as np
import pytest

from okdhp_jax.data.meta import COCO
from okdhp_jax.evaluation import coco_eval, metrics, nms
from okdhp_jax.tools import eval_coco

SAMPLES = os.path.join(os.path.dirname(__file__), '..', 'data_prep', 'samples', 'coco')
ANNOTATIONS = os.path.join(SAMPLES, 'test_coco.json')
DETECTIONS = os.path.join(SAMPLES, 'test_coco_det_AP_H_56.json')


@pytest.fixture(scope='module')
def annotations():
  with open(ANNOTATIONS) as f:
    return json.load(f)['annotations']


@pytest.fixture(scope='module')
def labelled(annotations):
  """GT people with keypoints as arrays: keypoints [N, 17, 2], image_ids [N], areas [N]."""
  people = [a for a in annotations if a['num_keypoints'] > 0]
  keypoints = np.array([a['keypoints'] for a in people], np.float64).reshape(-1, 17, 3)[..., :2]
  return keypoints, np.array([a['image_id'] for a in people]), np.array([a['area'] for a in people])


def _as_results(anns):
  return [{'image_id': a['image_id'], 'category_id': 1, 'keypoints': a['keypoints'], 'score': 1.0}
          for a in anns]


def _cli_json(capsys, results_file):
  assert eval_coco.main(['--results', results_file, '--annotations', ANNOTATIONS, '--json']) == 0
  return json.loads(capsys.readouterr().out)


def test_gt_results_known_answers(tmp_path, capsys, annotations):
  with_empty = str(tmp_path / 'all.json')
  without_empty = str(tmp_path / 'labelled.json')
  with open(with_empty, 'w') as f:
    json.dump(_as_results(annotations), f)
  with open(without_empty, 'w') as f:
    json.dump(_as_results([a for a in annotations if a['num_keypoints'] > 0]), f)
  assert _cli_json(capsys, without_empty)['AP'] == pytest.approx(1.0)
  assert _cli_json(capsys, with_empty)['AP'] == pytest.approx(0.894, abs=1e-3)
  assert eval_coco.main(['--results', without_empty, '--annotations', ANNOTATIONS]) == 0
  table = capsys.readouterr().out
  assert '| AP | AP50 | AP75 | AP(M) | AP(L) | AR |' in table
  assert '| 1.000 | 1.000 | 1.000 |' in table


def test_evaluator_on_gt_with_duplicates(tmp_path, capsys, labelled):
  keypoints, image_ids, areas = labelled
  n = len(image_ids)
  # Each person twice: a copy shifted by 1 px with a lower box score (OKS ~ 1 > 0.9).
  preds = np.concatenate([keypoints, keypoints + 1.0])
  box_scores = np.concatenate([np.ones(n), np.full(n, 0.5)])
  evaluator = coco_eval.CocoKeypointEvaluator(ANNOTATIONS, COCO)
  results = evaluator.results(preds, np.ones((2 * n, 17)), np.tile(image_ids, 2), box_scores,
                              np.tile(areas, 2))
  assert len(results) == n and all(r['score'] == 1.0 for r in results)
  result_file = str(tmp_path / 'results.json')
  metrics = evaluator.evaluate(preds, np.ones((2 * n, 17)), np.tile(image_ids, 2), box_scores,
                               np.tile(areas, 2), result_file=result_file)
  assert metrics['AP'] == pytest.approx(1.0)
  assert _cli_json(capsys, result_file)['AP'] == pytest.approx(1.0)
  # With NMS off (threshold above any OKS) both copies survive.
  loose = coco_eval.CocoKeypointEvaluator(ANNOTATIONS, COCO, oks_nms_threshold=1.01)
  assert len(loose.results(preds, np.ones((2 * n, 17)), np.tile(image_ids, 2), box_scores,
                           np.tile(areas, 2))) == 2 * n


def test_nms_reads_sigmas_from_meta(labelled):
  keypoints, image_ids, areas = labelled
  person = slice(0, 1)
  preds = np.concatenate([keypoints[person], keypoints[person] + 30.0])
  args = (np.ones((2, 17)), np.repeat(image_ids[person], 2), [1.0, 0.9],
          np.repeat(areas[person], 2))
  coco = coco_eval.CocoKeypointEvaluator(ANNOTATIONS, COCO)
  assert len(coco.results(preds, *args)) == 2  # 30 px apart: distinct people for COCO sigmas
  wide = dataclasses.replace(COCO, oks_sigmas=(10.0,) * 17)
  assert len(coco_eval.CocoKeypointEvaluator(ANNOTATIONS, wide).results(preds, *args)) == 1


def test_rescoring():
  scores = coco_eval.rescore([0.5, 0.8], [[0.1, 0.3, 0.5], [0.2, 0.1, 0.0]])
  np.testing.assert_allclose(scores, [0.5 * 0.4, 0.0])  # 0.2 itself is not "above 0.2"


def test_oks_overlap_hand_computed():
  sigmas = np.array([0.1, 0.2])
  reference = np.zeros((2, 2))
  other = np.array([[[3.0, 4.0], [0.0, 0.0]]])  # joint 0 off by 5 px
  # e = d^2 / (2 sigma)^2 / mean_area / 2 = 25 / 0.04 / 100 / 2 = 3.125 for joint 0, 0 for joint 1.
  np.testing.assert_allclose(nms.oks_overlap(reference, other, 100.0, [100.0], sigmas),
                             [(np.exp(-3.125) + 1.0) / 2], rtol=1e-9)


def test_oks_nms_and_soft_nms_on_duplicates():
  sigmas = np.array(COCO.oks_sigmas)
  rng = np.random.default_rng(0)
  a = rng.uniform(0, 100, (17, 2))
  b = a + 200.0
  poses = np.stack([b, a, a + 0.5])  # B, A, A's duplicate
  scores = np.array([0.7, 0.9, 0.8])
  areas = np.full(3, 10000.0)
  np.testing.assert_array_equal(nms.oks_nms(poses, scores, areas, sigmas, 0.9), [1, 0])
  # Soft NMS keeps everything but demotes the duplicate below B.
  np.testing.assert_array_equal(nms.soft_oks_nms(poses, scores, areas, sigmas, 0.9), [1, 0, 2])
  assert nms.soft_oks_nms(poses, scores, areas, sigmas, 0.9, max_dets=2).tolist() == [1, 0]
  soft = coco_eval.CocoKeypointEvaluator(ANNOTATIONS, COCO, soft_nms=True)
  assert soft.soft_nms


def test_area_from_scale_is_the_padded_box():
  # HRNet's OKS-NMS area: the product of the padded box sides, scale in units of 200 px.
  scales = np.array([[0.75, 1.0], [1.5, 2.0]])
  np.testing.assert_allclose(coco_eval.area_from_scale(scales), [150.0 * 200.0, 300.0 * 400.0])


def test_metric_scores_every_branch_with_the_crop_boxes_as_nms_areas(labelled):
  keypoints, image_ids, areas = labelled
  config = ml_collections.ConfigDict({
      'data': {'eval_annotations': ANNOTATIONS},
      'eval': {'oks_nms_threshold': 0.9, 'soft_nms': False, 'keypoint_score_threshold': 0.2}})
  metric = metrics.create(config, COCO)
  n = len(image_ids)
  side = np.sqrt(areas)[:, None] / 200.0
  rows = {'image_id': image_ids, 'score': np.ones(n), 'scale': np.concatenate([side, side], 1)}
  far = keypoints + 300.0
  scored = metric.score(metrics.Predictions(
      {'branch_0': keypoints, 'branch_1': far, 'ensemble': keypoints},
      {name: np.ones((n, 17), np.float32) for name in ('branch_0', 'branch_1', 'ensemble')},
      rows))
  assert scored.scored_on == '' and scored.subsets == {}
  assert scored.metrics['branch_0'] == scored.metrics['ensemble']
  assert scored.metrics['branch_0']['AP'] == pytest.approx(1.0)
  assert scored.metrics['branch_1']['AP'] < 0.1
  assert set(scored.metrics['branch_0']) == set(coco_eval.METRIC_NAMES)


def test_bad_inputs(tmp_path, capsys, labelled):
  keypoints, image_ids, areas = labelled
  evaluator = coco_eval.CocoKeypointEvaluator(ANNOTATIONS, COCO)
  ones = np.ones((len(image_ids), 17))
  with pytest.raises(ValueError, match=r'\[N, 17, 2\]'):
    evaluator.evaluate(keypoints[:, :16], ones[:, :16], image_ids, ones[:, 0], areas)
  with pytest.raises(ValueError, match=r'image_ids must be \[N=12\]'):
    evaluator.evaluate(keypoints, ones, image_ids[:5], ones[:, 0], areas)
  nan = keypoints.copy()
  nan[2, 3, 0] = np.nan
  with pytest.raises(ValueError, match=r'NaN.*\[2\]'):
    evaluator.evaluate(nan, ones, image_ids, ones[:, 0], areas)
  with pytest.raises(ValueError, match=r'image_ids \[12345\] are not in the annotation file'):
    evaluator.evaluate(keypoints, ones, np.full(len(image_ids), 12345), ones[:, 0], areas)
  with pytest.raises(FileNotFoundError, match='nothing.json'):
    coco_eval.CocoKeypointEvaluator(str(tmp_path / 'nothing.json'), COCO)
  with open(ANNOTATIONS) as f:
    no_categories = json.load(f)
  del no_categories['categories']
  broken = str(tmp_path / 'no_categories.json')
  with open(broken, 'w') as f:
    json.dump(no_categories, f)
  with pytest.raises(ValueError, match="no_categories.json.*no key 'categories'"):
    coco_eval.CocoKeypointEvaluator(broken, COCO)
  not_a_list = str(tmp_path / 'dict.json')
  with open(not_a_list, 'w') as f:
    json.dump({'annotations': []}, f)
  assert eval_coco.main(['--results', not_a_list, '--annotations', ANNOTATIONS]) == 1
  err = capsys.readouterr().err
  assert 'dict.json' in err and 'json list' in err and 'Traceback' not in err
  assert eval_coco.main(['--results', DETECTIONS, '--annotations', ANNOTATIONS]) == 1
  assert "lacks ['keypoints']" in capsys.readouterr().err


def test_malformed_results_and_foreign_annotations_are_named(tmp_path, capsys, annotations):
  def score(results, annotation_file=ANNOTATIONS):
    path = str(tmp_path / 'results.json')
    with open(path, 'w') as f:
      json.dump(results, f)
    code = eval_coco.main(['--results', path, '--annotations', annotation_file])
    err = capsys.readouterr().err
    assert code == 1 and 'Traceback' not in err and len(err.strip().splitlines()) == 1, err
    return err

  good = _as_results(a for a in annotations if a['num_keypoints'] > 0)
  no_id = [dict(good[0])] + good[1:]
  del no_id[0]['image_id']
  assert "result 0 lacks ['image_id']" in score(no_id)
  assert 'result 1 is a list, not an object' in score([good[0], [1, 2, 3]])
  words = [dict(good[0], keypoints=['a'] * 51)]
  assert 'result 0 has keypoints or a score that are not numbers' in score(words)

  # A 14-keypoint dataset in COCO layout (CrowdPose, AI Challenger) scored with COCO's sigmas.
  with open(ANNOTATIONS) as f:
    foreign = json.load(f)
  foreign['categories'][0]['keypoints'] = foreign['categories'][0]['keypoints'][:14]
  for a in foreign['annotations']:
    a['keypoints'] = a['keypoints'][:42]
  path = str(tmp_path / 'crowdpose_like.json')
  with open(path, 'w') as f:
    json.dump(foreign, f)
  err = score([dict(good[0], keypoints=good[0]['keypoints'][:42])], path)
  assert 'has 14 keypoints per person' in err and 'sigmas given are for 17' in err
