"""The evaluation pass of a (multi-branch) model: every branch and the ensemble at once.

Runs the flip-test predict step over the evaluation split, decodes each branch's heatmaps and
the ensemble's to image coordinates with the heatmap codec, gathers every process's rows, and
scores them with PCKh (MPII) or COCO AP. Returns the per-branch table the paper prints and the
best branch, plus a few drawn samples. `write_eval_files` saves what `--mode eval` leaves behind.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import tempfile
import time
from typing import Any, Callable

import jax
import ml_collections
import numpy as np
from etils import epath

from okdhp_jax import paths, progress, sharding
from okdhp_jax.codecs.heatmap import HeatmapCodec
from okdhp_jax.data import meta as meta_lib
from okdhp_jax.data import pipeline, records
from okdhp_jax.evaluation import coco_eval, pckh, report, visualize

ENSEMBLE = 'ensemble'


@dataclasses.dataclass
class EvalResult:
  """Scores of one evaluation pass.

  Attributes:
    metrics: {'branch_0': {...}, ..., 'ensemble': {...}} metric name -> value.
    metric_key: the headline metric ('Mean' PCKh@0.5 or 'AP').
    table: the printed per-branch table.
    best_branch: index of the branch with the highest headline metric.
    best_metric: its value.
    predictions: name -> image-coordinate predictions [N, J, 2] in evaluation order.
    person_index: [N] record person indices (columns of gt_valid.mat for MPII).
    images: a few enlarged crops (uint8 [H, W, 3]) with the ensemble's prediction and the GT.
    scored_on: what `metrics` were scored on when the records name evaluation groups (the
      first group, records.EVAL_GROUPS), else ''.
    subsets: the other groups' scores, {label: {'branch_0': {...}, ..., 'ensemble': {...}}}.
    fau_weights: [branches][joints] FAU weight averaged over every evaluated person (the
      flip-test average of each), or None for a network without an FAU.
  """

  metrics: dict[str, dict[str, float]]
  metric_key: str
  table: str
  best_branch: int
  best_metric: float
  predictions: dict[str, np.ndarray]
  person_index: np.ndarray
  images: list[np.ndarray]
  scored_on: str = ''
  subsets: dict[str, dict[str, dict[str, float]]] = dataclasses.field(default_factory=dict)
  fau_weights: list[list[float]] | None = None


def branch_names(num_branches: int) -> list[str]:
  return [f'branch_{b}' for b in range(num_branches)]


def uses_oks(meta: meta_lib.DatasetMeta) -> bool:
  """COCO-style datasets (COCO, CrowdPose: OKS sigmas in their meta) are scored by OKS AP."""
  return meta.oks_sigmas is not None


def headline_metric(dataset: str) -> str:
  """The metric that ranks branches: 'AP' for COCO, PCKh@0.5 'Mean' for MPII."""
  return 'AP' if uses_oks(meta_lib.get_meta(dataset)) else 'Mean'


def eval_local_batch_size(batch_size: int, mesh: jax.sharding.Mesh) -> int:
  """This process's eval batch: config.eval.batch_size split over the processes and rounded
  UP to a multiple of the local devices, so any batch size shards evenly (the pipeline pads
  the extra rows and masks them out with 'valid', as it pads the last batch)."""
  local_devices = max(mesh.devices.size // jax.process_count(), 1)
  per_process = max(-(-int(batch_size) // jax.process_count()), 1)
  return -(-per_process // local_devices) * local_devices


def evaluate(config: ml_collections.ConfigDict, variables: dict[str, Any],
             predict_step: Callable, mesh: jax.sharding.Mesh, *,
             num_images_to_draw: int = 0) -> EvalResult:
  """Evaluates `variables` on `config.data.eval_split`; see EvalResult."""
  meta = meta_lib.get_meta(config.data.dataset)
  codec = HeatmapCodec.from_config(config.data)
  local_batch = eval_local_batch_size(config.eval.batch_size, mesh)
  dataset = pipeline.build_eval_dataset(
      config.data, meta, split=config.data.eval_split, local_batch_size=local_batch,
      process_index=jax.process_index(), process_count=jax.process_count())
  coords, scores, info = {}, {}, {k: [] for k in ('center', 'scale', 'image_id',
                                                   'person_index', 'score')}
  drawn: list[np.ndarray] = []
  fau_rows: list[np.ndarray] = []  # [valid, branches, joints] per batch, when there is an FAU.
  # This process's share (detections below the score threshold make it an upper bound).
  total = -(-pipeline.count_examples(config.data, config.data.eval_split) // jax.process_count())
  line = progress.ProgressLine(total, images_per_unit=1, label='eval')
  seen, last_log = 0, time.time()
  for batch in pipeline.numpy_batches(
      dataset, split=config.data.eval_split,
      files=pipeline.split_files(config.data, config.data.eval_split)):
    valid = batch['valid'].astype(bool)
    images = pipeline.make_global_batch({'image': batch['image']}, mesh)['image']
    out = predict_step(variables, images)
    out = jax.tree.map(sharding.local_rows, out)
    heatmaps = {name: out['branches'][b] for b, name in enumerate(
        branch_names(out['branches'].shape[0]))}
    heatmaps[ENSEMBLE] = out['ensemble']
    for name, maps in heatmaps.items():
      xy, conf = codec.decode(maps[valid], batch['center'][valid], batch['scale'][valid])
      coords.setdefault(name, []).append(xy)
      scores.setdefault(name, []).append(conf)
    for key in info:
      info[key].append(batch[key][valid])
    if 'fau_weights' in out:
      fau_rows.append(np.asarray(out['fau_weights'])[valid])
    if len(drawn) < num_images_to_draw:
      drawn += visualize.draw_crops(batch, *codec.decode_to_input(heatmaps[ENSEMBLE]),
                                    valid, meta, num_images_to_draw - len(drawn))
    seen += int(valid.sum())
    if time.time() - last_log > 30:  # a line every 30 s, and one at the end.
      logging.info('%s', line(seen))
      last_log = time.time()
  logging.info('%s', line(seen))

  # Each process scored its own shard; every process needs the whole split.
  coords, scores, info, fau = sharding.gather_rows(jax.tree.map(
      np.concatenate, (coords, scores, info, {'weights': fau_rows} if fau_rows else {}),
      is_leaf=lambda x: isinstance(x, list)))
  names = [n for n in coords if n != ENSEMBLE] + [ENSEMBLE]

  metric_key = headline_metric(meta.name)
  scored_on, subsets = '', {}
  if uses_oks(meta):
    evaluator = coco_eval.CocoKeypointEvaluator(
        config.data.eval_annotations, meta, oks_nms_threshold=config.eval.oks_nms_threshold,
        soft_nms=config.eval.soft_nms,
        keypoint_score_threshold=config.eval.keypoint_score_threshold)
    # HRNet's OKS-NMS area is that of the padded crop box, not the annotation's segment area.
    areas = coco_eval.area_from_scale(info['scale'])
    metrics = {name: evaluator.evaluate(coords[name], scores[name], info['image_id'],
                                        info['score'], areas)
               for name in names}
  else:
    gt = pckh.load_mpii_gt(config.data.eval_annotations)
    threshold_0_1 = (pckh.HRNET_MEAN_AT_0_1_THRESHOLD if config.eval.hrnet_mean_at_0_11
                     else 0.1)

    def score(rows: np.ndarray) -> dict[str, dict[str, float]]:
      return {name: dict(pckh.compute_pckh(
          coords[name][rows], gt, threshold=config.eval.pckh_threshold,
          mean_at_0_1_threshold=threshold_0_1, person_indices=info['person_index'][rows]).table)
              for name in names}

    scored = {label: score(rows)
              for label, rows in _group_rows(config.data, info['person_index']).items()}
    if scored:
      scored_on = next(iter(scored))
      metrics = scored.pop(scored_on)
      subsets = scored
    else:
      metrics = score(np.ones(len(info['person_index']), bool))
  table, best_name = report.branch_report(metrics, metric_key, scored_on=scored_on,
                                          subsets=subsets)
  best_branch = int(best_name.split('_')[-1])
  fau_weights = np.mean(fau['weights'], axis=0).tolist() if fau else None
  return EvalResult(metrics=metrics, metric_key=metric_key, table=table,
                    best_branch=best_branch, best_metric=float(metrics[best_name][metric_key]),
                    predictions=coords, person_index=info['person_index'], images=drawn,
                    scored_on=scored_on, subsets=subsets, fau_weights=fau_weights)


def _group_rows(data_config, person_index: np.ndarray) -> dict[str, np.ndarray]:
  """{label: boolean rows} of the evaluation groups the records name and the split holds.

  Empty when the records name none (records.EVAL_GROUPS). A label says how many people the
  group has and whether they were trained on, e.g. 'held-out generated figures (32, not
  trained on)'; the first label is the group that ranks the branches.
  """
  groups = records.read_dataset_info(data_config.records_dir).get(records.EVAL_GROUPS, [])
  found = {}
  for group in groups:
    first, stop = group['person_index']
    rows = (person_index >= first) & (person_index < stop)
    if rows.any():
      seen = ('also in the training set: a smoke test' if group['in_training_set']
              else 'not trained on')
      found[f'{group["name"]} ({int(rows.sum())}, {seen})'] = rows
  return found


def write_eval_files(result: EvalResult, meta: meta_lib.DatasetMeta, out_dir: str) -> str:
  """What `--mode eval` leaves: metrics.json, MPII's pred.mat (best branch), predictions.png."""
  path = paths.resolve(out_dir)
  path.mkdir(parents=True, exist_ok=True)
  if meta.name == 'mpii':
    best = result.predictions[f'branch_{result.best_branch}']
    # The official MATLAB tool expects rows in gt_valid.mat column order.
    in_gt_order = np.asarray(best)[np.argsort(result.person_index)]
    # scipy writes .mat files locally; the copy also reaches gs:// workdirs.
    with tempfile.TemporaryDirectory() as tmp:
      local = os.path.join(tmp, 'pred.mat')
      pckh.save_pred_mat(local, in_gt_order)
      epath.Path(local).copy(path / 'pred.mat', overwrite=True)
  (path / 'metrics.json').write_text(
      json.dumps({'metrics': result.metrics, 'best_branch': result.best_branch,
                  'scored_on': result.scored_on, 'subsets': result.subsets}, indent=2))
  if result.images:
    visualize.save_png(str(path / 'predictions.png'), visualize.grid(result.images))
  return str(path)
