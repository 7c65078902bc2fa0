"""COCO keypoint AP: top-down results -> rescoring -> OKS-NMS -> results json -> COCOeval.

The protocol is HRNet's: each person box gets score
box_score * mean(keypoint scores above 0.2) (0 when none is above), people of one image go
through OKS-NMS at 0.9 (soft OKS-NMS as a switch), and pycocotools' COCOeval with iouType
'keypoints' computes AP. Boxes at test time are the GT boxes or person detections above a score
threshold, as data_prep/coco.py writes them to the records.

`CocoAPMetric` is the evaluation's metric object for datasets whose meta says metric='coco_ap'
(COCO, CrowdPose; evaluation/metrics.py).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os

import ml_collections
import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from okdhp_jax.data import geometry
from okdhp_jax.data.meta import DatasetMeta
from okdhp_jax.evaluation import metrics, nms

# COCOeval.stats order for keypoints.
METRIC_NAMES = ('AP', 'AP50', 'AP75', 'AP_M', 'AP_L', 'AR', 'AR50', 'AR75', 'AR_M', 'AR_L')
# The columns of HRNet's printed AP table (report.format_table).
TABLE_METRICS = ('AP', 'AP50', 'AP75', 'AP_M', 'AP_L', 'AR')
SHORT_HEADERS = {'AP_M': 'AP(M)', 'AP_L': 'AP(L)', 'AR_M': 'AR(M)', 'AR_L': 'AR(L)'}
PERSON_CATEGORY_ID = 1


@contextlib.contextmanager
def _quiet(what: str):
  """pycocotools prints progress to stdout; keep it in the log instead of the console."""
  buffer = io.StringIO()
  with contextlib.redirect_stdout(buffer):
    yield
  text = buffer.getvalue().strip()
  if text:
    logging.info('pycocotools (%s):\n%s', what, text)


def load_coco(annotation_file: str) -> COCO:
  """pycocotools COCO of a person_keypoints json, with errors that name the file."""
  if not os.path.exists(annotation_file):
    raise FileNotFoundError(f'COCO annotation file {annotation_file!r} does not exist')
  try:
    with _quiet('load annotations'):
      coco = COCO(annotation_file)
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise ValueError(f'{annotation_file!r} is not valid json: {e}') from e
  except (KeyError, TypeError, AssertionError) as e:
    raise ValueError(f'{annotation_file!r} is not a COCO annotation file '
                     f'(images/annotations/categories): {e!r}') from e
  for key in ('images', 'annotations', 'categories'):
    if key not in coco.dataset:
      raise ValueError(f'{annotation_file!r} has no key {key!r}; a COCO keypoint annotation '
                       'file needs images, annotations and categories')
  return coco


def run_cocoeval(coco_gt: COCO, results, sigmas=None, source: str = 'results') -> dict:
  """COCOeval (iouType 'keypoints') of a results list -> {metric name: value in [0, 1]}."""
  if not results:
    raise ValueError(f'{source}: no results to evaluate')
  num_joints = len(coco_gt.loadCats(PERSON_CATEGORY_ID)[0].get('keypoints', [])) or None
  if sigmas is not None and num_joints and num_joints != len(sigmas):
    raise ValueError(f'the annotation file has {num_joints} keypoints per person, but the '
                     f'OKS sigmas given are for {len(sigmas)} (COCO has 17): not a COCO '
                     'keypoint file, or a dataset with other joints')
  for i, r in enumerate(results):
    if not isinstance(r, dict):
      raise ValueError(f'{source}: result {i} is a {type(r).__name__}, not an object with '
                       'image_id, category_id, keypoints, score')
    missing = [k for k in ('image_id', 'category_id', 'keypoints', 'score') if k not in r]
    if missing:
      raise ValueError(f'{source}: result {i} lacks {missing} (COCO results format: image_id, '
                       'category_id, keypoints, score)')
    try:
      keypoints = np.asarray(r['keypoints'], np.float64).reshape(-1)
      score = float(r['score'])
    except (TypeError, ValueError):
      raise ValueError(f'{source}: result {i} has keypoints or a score that are not numbers') \
          from None
    if num_joints and keypoints.size != 3 * num_joints:
      raise ValueError(f'{source}: result {i} has {keypoints.size} keypoint values; '
                       f'expected {3 * num_joints} (x, y, score per joint)')
    if not np.all(np.isfinite(keypoints)) or not np.isfinite(score):
      raise ValueError(f'{source}: result {i} has NaN/inf keypoints or score')
  known = set(coco_gt.getImgIds())
  unknown = sorted({r['image_id'] for r in results} - known, key=str)
  if unknown:
    raise ValueError(f'{source}: image_ids {unknown[:10]} are not in the annotation file')
  with _quiet('evaluate'):
    coco_dt = coco_gt.loadRes(list(results))
    coco_eval = COCOeval(coco_gt, coco_dt, 'keypoints')
    coco_eval.params.useSegm = None
    if sigmas is not None:
      coco_eval.params.kpt_oks_sigmas = np.asarray(sigmas, np.float64)
    coco_eval.evaluate()
    coco_eval.accumulate()
    coco_eval.summarize()
  return {name: float(v) for name, v in zip(METRIC_NAMES, coco_eval.stats)}


def evaluate_results_file(results_file: str, annotation_file: str, sigmas=None) -> dict:
  """AP metrics of a COCO results json (as written by any top-down model)."""
  if not os.path.exists(results_file):
    raise FileNotFoundError(f'COCO results file {results_file!r} does not exist')
  try:
    with open(results_file) as f:
      results = json.load(f)
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise ValueError(f'{results_file!r} is not valid json: {e}') from e
  if not isinstance(results, list):
    raise ValueError(f'{results_file!r} must hold a json list of results; got '
                     f'{type(results).__name__}')
  return run_cocoeval(load_coco(annotation_file), results, sigmas, source=repr(results_file))


def area_from_scale(scale) -> np.ndarray:
  """[N, 2] box scales (units of 200 px) -> [N] areas, HRNet's OKS-NMS area (padded box)."""
  scale = np.asarray(scale, np.float64)
  return np.prod(scale * geometry.PIXEL_STD, axis=-1)


def rescore(box_scores, keypoint_scores, keypoint_score_threshold: float = 0.2) -> np.ndarray:
  """box_score * mean of the keypoint scores above the threshold (0 when none is): [N]."""
  keypoint_scores = np.asarray(keypoint_scores, np.float64)
  above = keypoint_scores > keypoint_score_threshold
  count = above.sum(axis=-1)
  mean = np.where(count > 0, (keypoint_scores * above).sum(axis=-1) / np.maximum(count, 1), 0.0)
  return np.asarray(box_scores, np.float64) * mean


class CocoKeypointEvaluator:
  """Scores top-down keypoint predictions on a COCO annotation file.

  Usage: `CocoKeypointEvaluator(path, COCO).evaluate(preds, kp_scores, image_ids, box_scores,
  areas)` -> {'AP': ..., 'AP50': ..., ...} (values in [0, 1]).
  """

  def __init__(self, annotation_file: str, meta: DatasetMeta, *, oks_nms_threshold: float = 0.9,
               soft_nms: bool = False, keypoint_score_threshold: float = 0.2):
    if meta.oks_sigmas is None:
      raise ValueError(f'dataset {meta.name!r} has no OKS sigmas; COCO AP needs them')
    self.annotation_file = annotation_file
    self.meta = meta
    self.oks_nms_threshold = oks_nms_threshold
    self.soft_nms = soft_nms
    self.keypoint_score_threshold = keypoint_score_threshold
    self.coco = load_coco(annotation_file)

  def results(self, preds, keypoint_scores, image_ids, box_scores, areas) -> list[dict]:
    """Rescored, NMS-filtered results in the COCO results format, image by image.

    Args:
      preds: [N, J, 2] keypoints in 0-based image pixels.
      keypoint_scores: [N, J] heatmap maxima.
      image_ids: [N] COCO image ids; box_scores: [N]; areas: [N] (`area_from_scale`).
    """
    preds = np.asarray(preds, np.float64)
    keypoint_scores = np.asarray(keypoint_scores, np.float64)
    image_ids = np.asarray(image_ids).reshape(-1)
    box_scores = np.asarray(box_scores, np.float64).reshape(-1)
    areas = np.asarray(areas, np.float64).reshape(-1)
    j = self.meta.num_joints
    n = preds.shape[0] if preds.ndim == 3 else -1
    if preds.shape != (n, j, 2) or keypoint_scores.shape != (n, j):
      raise ValueError(f'COCO predictions must be preds [N, {j}, 2] and keypoint_scores '
                       f'[N, {j}]; got {preds.shape} and {keypoint_scores.shape}')
    for name, value in (('image_ids', image_ids), ('box_scores', box_scores), ('areas', areas)):
      if value.shape != (n,):
        raise ValueError(f'{name} must be [N={n}]; got shape {value.shape}')
    bad = np.nonzero(~(np.isfinite(preds).all(axis=(1, 2)) & np.isfinite(keypoint_scores).all(1)))
    if bad[0].size:
      raise ValueError(f'COCO predictions contain NaN/inf for people {bad[0][:10]}')

    scores = rescore(box_scores, keypoint_scores, self.keypoint_score_threshold)
    suppress = nms.soft_oks_nms if self.soft_nms else nms.oks_nms
    results = []
    for image_id in np.unique(image_ids):
      rows = np.nonzero(image_ids == image_id)[0]
      keep = suppress(preds[rows], scores[rows], areas[rows], self.meta.oks_sigmas,
                      self.oks_nms_threshold)
      for r in rows[keep]:
        keypoints = np.concatenate([preds[r], keypoint_scores[r][:, None]], axis=-1)
        results.append({
            'image_id': int(image_id),
            'category_id': PERSON_CATEGORY_ID,
            'keypoints': [round(float(v), 3) for v in keypoints.reshape(-1)],
            'score': float(scores[r]),
        })
    return results

  def evaluate(self, preds, keypoint_scores, image_ids, box_scores, areas,
               result_file: str | None = None) -> dict:
    """Rescoring, per-image OKS-NMS, optional results json, COCOeval -> {metric: value}."""
    results = self.results(preds, keypoint_scores, image_ids, box_scores, areas)
    if result_file:
      os.makedirs(os.path.dirname(os.path.abspath(result_file)), exist_ok=True)
      with open(result_file, 'w') as f:
        json.dump(results, f)
    return run_cocoeval(self.coco, results, self.meta.oks_sigmas,
                        source=f'predictions for {self.annotation_file!r}')


@metrics.register('coco_ap')
class CocoAPMetric(metrics.Metric):
  """COCO keypoint AP of every branch and the ensemble against config.data.eval_annotations.

  HRNet's protocol with config.eval's oks_nms_threshold, soft_nms and keypoint_score_threshold.
  """

  headline = 'AP'

  def __init__(self, config: ml_collections.ConfigDict, meta: DatasetMeta):
    super().__init__(config, meta)
    self.evaluator = CocoKeypointEvaluator(
        config.data.eval_annotations, meta, oks_nms_threshold=config.eval.oks_nms_threshold,
        soft_nms=config.eval.soft_nms,
        keypoint_score_threshold=config.eval.keypoint_score_threshold)

  def score(self, predictions: metrics.Predictions) -> metrics.Scores:
    """{name: {'AP': ..., 'AP50': ..., ...}} (values in [0, 1])."""
    rows = predictions.rows
    # HRNet's OKS-NMS area is that of the padded crop box, not the annotation's segment area.
    areas = area_from_scale(rows['scale'])
    return metrics.Scores({
        name: self.evaluator.evaluate(xy, predictions.scores[name], rows['image_id'],
                                      rows['score'], areas)
        for name, xy in predictions.joints.items()})
