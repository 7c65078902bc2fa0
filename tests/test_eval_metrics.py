"""Metric objects: the dataset meta picks one, and a new one needs no change to the evaluator.

A toy dataset (MPII's joints under another name, records relabelled from the bundled samples)
scored by a toy metric registered here runs through the real `evaluator.evaluate`, with a
stand-in predict step whose heatmaps peak where the test says.
"""

from __future__ import annotations

import dataclasses
import json
import os

import ml_collections
import numpy as np
import pytest

from okdhp_jax import sharding
from okdhp_jax.data import geometry, records
from okdhp_jax.data import meta as meta_lib
from okdhp_jax.evaluation import coco_eval, evaluator, metrics, pckh

INPUT_SIZE, HEATMAP_SIZE = (64, 64), (16, 16)
# Heatmap pixel (x, y) of every joint's peak, per output of the stand-in predict step.
PEAKS = {'branch_0': (5, 6), 'branch_1': (9, 4), 'ensemble': (7, 7)}
TOY = dataclasses.replace(meta_lib.MPII, name='toy', metric='toy')


class ToyMetric(metrics.Metric):
  """Mean x of every branch's joints, in image pixels; writes the names it scored."""

  headline = 'mean_x'
  seen: list[metrics.Predictions] = []  # what score() was given, for the test to read.

  def score(self, predictions):
    ToyMetric.seen.append(predictions)
    return metrics.Scores({name: {'mean_x': float(xy[..., 0].mean())}
                           for name, xy in predictions.joints.items()})

  @classmethod
  def write_files(cls, result, out_dir):
    (out_dir / 'toy.json').write_text(json.dumps(sorted(result.metrics)))


@pytest.fixture
def toy_dataset(monkeypatch):
  """TOY and its metric registered for one test, as a new dataset's modules would."""
  monkeypatch.setattr(metrics._METRICS, '_classes', dict(metrics._METRICS._classes))
  metrics.register('toy')(ToyMetric)
  monkeypatch.setitem(meta_lib._REGISTRY, TOY.name, TOY)
  ToyMetric.seen.clear()
  return TOY


@pytest.fixture(scope='module')
def toy_records(tmp_path_factory):
  """The bundled MPII samples (5 real people, 3 generated figures) as records of 'toy'."""
  from data_prep import bundled  # pylint: disable=g-import-not-at-top
  folder = str(tmp_path_factory.mktemp('toy_records'))
  bundled.prepare_bundled(folder, num_synthetic_train=0, num_synthetic_valid=3, image_size=64)
  info = records.read_dataset_info(folder)
  info['dataset'] = TOY.name
  with open(os.path.join(folder, records.DATASET_INFO), 'w') as f:
    json.dump(info, f)
  return folder


def toy_config(records_dir: str) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict({
      'data': {'dataset': TOY.name, 'records_dir': records_dir, 'eval_split': 'valid',
               'input_size': INPUT_SIZE, 'heatmap_size': HEATMAP_SIZE, 'sigma': 1.0,
               'num_parallel_calls': 1, 'prefetch': 1},
      'eval': {'batch_size': 4}})


def stand_in_predict_step(variables, images):
  """Heatmaps [B, h, w, J] that peak at PEAKS for every person and joint."""
  del variables

  def peaked(x, y):
    maps = np.zeros((images.shape[0], *HEATMAP_SIZE, TOY.num_joints), np.float32)
    maps[:, y, x, :] = 1.0
    return maps

  branches = np.stack([peaked(*PEAKS[f'branch_{b}']) for b in range(2)])
  return {'branches': branches, 'ensemble': peaked(*PEAKS['ensemble'])}


def test_a_new_metric_is_chosen_from_the_meta(toy_dataset, toy_records, tmp_path):
  result = evaluator.evaluate(toy_config(toy_records), {}, stand_in_predict_step,
                              sharding.make_mesh(1))

  predictions, = ToyMetric.seen
  assert result.metric_key == 'mean_x' and metrics.headline_metric(TOY) == 'mean_x'
  assert list(result.metrics) == ['branch_0', 'branch_1', 'ensemble']
  assert result.best_branch == 1  # the larger x.
  # The metric sees image pixels: the peaks times the stride, back through each crop.
  center, scale = predictions.rows['center'], predictions.rows['scale']
  assert len(center) == 8 and set(predictions.rows) == set(evaluator.ROW_FIELDS)
  for name, (x, y) in PEAKS.items():
    crop_xy = np.broadcast_to(np.array([x, y], np.float64) * 4, (8, TOY.num_joints, 2))
    np.testing.assert_array_equal(predictions.joints[name],
                                  geometry.input_to_image(crop_xy, center, scale, INPUT_SIZE))
    np.testing.assert_array_equal(predictions.scores[name], 1.0)
  np.testing.assert_array_equal(result.predictions['branch_0'], predictions.joints['branch_0'])
  # The records' evaluation groups reach the metric, which may ignore them.
  assert [g['name'] for g in predictions.eval_groups] == [
      g['name'] for g in records.read_dataset_info(toy_records)[records.EVAL_GROUPS]]
  assert result.scored_on == '' and result.subsets == {}

  out = evaluator.write_eval_files(result, TOY, str(tmp_path / 'eval'))
  assert sorted(os.listdir(out)) == ['metrics.json', 'toy.json']
  with open(os.path.join(out, 'toy.json')) as f:
    assert json.load(f) == ['branch_0', 'branch_1', 'ensemble']


def test_the_built_in_datasets_name_the_built_in_metrics():
  assert metrics.metric_class(meta_lib.MPII) is pckh.PCKhMetric
  assert metrics.metric_class(meta_lib.COCO) is coco_eval.CocoAPMetric
  assert metrics.metric_class(meta_lib.CROWDPOSE) is coco_eval.CocoAPMetric
  assert [metrics.headline_metric(m) for m in (meta_lib.MPII, meta_lib.COCO)] == ['Mean', 'AP']


def test_an_unregistered_metric_or_a_second_registration_is_refused(toy_dataset):
  unknown = dataclasses.replace(toy_dataset, metric='nowhere')
  with pytest.raises(ValueError, match="'nowhere', which is not registered"):
    metrics.headline_metric(unknown)
  with pytest.raises(ValueError,
                     match=r"a metric named 'toy' is already registered \(ToyMetric\)"):
    metrics.register('toy')(type('OtherToy', (metrics.Metric,), {}))
