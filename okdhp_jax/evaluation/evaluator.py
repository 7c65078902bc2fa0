"""The evaluation pass of a (multi-branch) model: every branch and the ensemble at once.

`evaluate` is a prediction pass plus scoring. The pass runs the flip-test predict step over the
evaluation split, decodes each branch's heatmaps and the ensemble's to input pixels with the
heatmap codec, takes them back to image pixels through the crop (data/geometry.py) and gathers
every process's rows. The metric the dataset's meta names (metrics.py: PCKh, COCO AP) scores
them; the result holds the per-branch table the paper prints and the best branch, plus a few
drawn samples. `write_eval_files` saves what `--mode eval` leaves behind.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from typing import Any, Callable, Iterator

import jax
import ml_collections
import numpy as np

from okdhp_jax import paths, progress, sharding
from okdhp_jax.codecs import heatmap as heatmap_codec
from okdhp_jax.codecs.heatmap import HeatmapCodec
from okdhp_jax.data import geometry
from okdhp_jax.data import meta as meta_lib
from okdhp_jax.data import pipeline, records
from okdhp_jax.evaluation import metrics as metrics_lib
from okdhp_jax.evaluation import report, visualize

ENSEMBLE = 'ensemble'
# The records' fields of each evaluated person that metrics read (metrics.Predictions.rows).
ROW_FIELDS = ('center', 'scale', 'image_id', 'person_index', 'score')


@dataclasses.dataclass
class EvalResult:
  """Scores of one evaluation pass.

  Attributes:
    metrics: {'branch_0': {...}, ..., 'ensemble': {...}} metric name -> value.
    metric_key: the headline metric ('Mean' PCKh@0.5 or 'AP').
    table: the printed per-branch table.
    best_branch: index of the branch with the highest headline metric.
    best_metric: its value.
    predictions: name -> predictions [N, J, 2] in image pixels, in evaluation order.
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
  """Evaluates `variables` on `config.data.eval_split` with its dataset's metric; see EvalResult."""
  meta = meta_lib.get_meta(config.data.dataset)
  metric = metrics_lib.create(config, meta)
  predictions, drawn, fau = _prediction_pass(config, variables, predict_step, mesh, meta,
                                             num_images_to_draw)
  scores = metric.score(predictions)
  table, best_name = report.branch_report(scores.metrics, metric.headline,
                                          scored_on=scores.scored_on, subsets=scores.subsets)
  return EvalResult(
      metrics=scores.metrics, metric_key=metric.headline, table=table,
      best_branch=int(best_name.split('_')[-1]),
      best_metric=float(scores.metrics[best_name][metric.headline]),
      predictions=predictions.joints, person_index=predictions.rows['person_index'],
      images=drawn, scored_on=scores.scored_on, subsets=scores.subsets,
      fau_weights=None if fau is None else np.mean(fau, axis=0).tolist())


def _prediction_pass(config: ml_collections.ConfigDict, variables: dict[str, Any],
                     predict_step: Callable, mesh: jax.sharding.Mesh,
                     meta: meta_lib.DatasetMeta, num_images_to_draw: int
                     ) -> tuple[metrics_lib.Predictions, list[np.ndarray], np.ndarray | None]:
  """Every branch's and the ensemble's joints on the split, gathered from every process.

  Returns:
    the predictions, up to `num_images_to_draw` drawn crops (this process's), and the FAU
    weights [N, branches, joints] (None for a network without an FAU).
  """
  codec = HeatmapCodec.from_config(config.data)
  joints, scores, rows = {}, {}, {key: [] for key in ROW_FIELDS}
  fau_rows, drawn = [], []
  for batch in _eval_batches(config, meta, mesh):
    valid = batch['valid'].astype(bool)
    images = pipeline.make_global_batch({'image': batch['image']}, mesh)['image']
    out = jax.tree.map(sharding.local_rows, predict_step(variables, images))
    for name, heatmaps in _named_heatmaps(out).items():
      xy, conf = image_joints(heatmaps[valid], batch['center'][valid], batch['scale'][valid],
                              codec.input_size)
      joints.setdefault(name, []).append(xy)
      scores.setdefault(name, []).append(conf)
    for key in rows:
      rows[key].append(batch[key][valid])
    if 'fau_weights' in out:
      fau_rows.append(np.asarray(out['fau_weights'])[valid])
    if len(drawn) < num_images_to_draw:
      drawn += visualize.draw_crops(batch, *codec.decode(out['ensemble']), valid, meta,
                                    num_images_to_draw - len(drawn))
  # Each process predicted its own shard; every process scores the whole split.
  joints, scores, rows, fau = sharding.gather_rows(jax.tree.map(
      np.concatenate, (joints, scores, rows, {'weights': fau_rows} if fau_rows else {}),
      is_leaf=lambda x: isinstance(x, list)))
  groups = records.read_dataset_info(config.data.records_dir).get(records.EVAL_GROUPS, [])
  return metrics_lib.Predictions(joints, scores, rows, groups), drawn, fau.get('weights')


def _eval_batches(config: ml_collections.ConfigDict, meta: meta_lib.DatasetMeta,
                  mesh: jax.sharding.Mesh) -> Iterator[dict[str, np.ndarray]]:
  """This process's eval batches (numpy), with a progress line every 30 s and at the end."""
  local_batch = eval_local_batch_size(config.eval.batch_size, mesh)
  dataset = pipeline.build_eval_dataset(
      config.data, meta, split=config.data.eval_split, local_batch_size=local_batch,
      process_index=jax.process_index(), process_count=jax.process_count())
  # This process's share (detections below the score threshold make it an upper bound).
  total = -(-pipeline.count_examples(config.data, config.data.eval_split) // jax.process_count())
  line = progress.ProgressLine(total, images_per_unit=1, label='eval')
  seen, last_log = 0, time.time()
  for batch in pipeline.numpy_batches(
      dataset, split=config.data.eval_split,
      files=pipeline.split_files(config.data, config.data.eval_split)):
    yield batch
    seen += int(batch['valid'].sum())
    if time.time() - last_log > 30:
      logging.info('%s', line(seen))
      last_log = time.time()
  logging.info('%s', line(seen))


def _named_heatmaps(out: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """{'branch_0': ..., 'ensemble': ...} heatmaps [B, h, w, J] of a predict step's output."""
  heatmaps = {name: out['branches'][b]
              for b, name in enumerate(branch_names(out['branches'].shape[0]))}
  heatmaps[ENSEMBLE] = out['ensemble']
  return heatmaps


def image_joints(heatmaps: np.ndarray, center: np.ndarray, scale: np.ndarray,
                 input_size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
  """Joints float64 [n, J, 2] in image pixels and scores float32 [n, J] of heatmaps
  [n, h, w, J] predicted on `input_size` crops of boxes with centres [n, 2] and scales [n, 2]:
  the codec's decode, then back through each crop's inverse affine (the evaluation's rule,
  which PosePredictor follows too)."""
  xy, conf = heatmap_codec.heatmaps_to_input_coords(heatmaps, input_size)
  return geometry.input_to_image(xy, center, scale, input_size), conf


def write_eval_files(result: EvalResult, meta: meta_lib.DatasetMeta, out_dir: str) -> str:
  """What `--mode eval` leaves: metrics.json, predictions.png and the metric's own files
  (MPII: the best branch's pred.mat)."""
  path = paths.resolve(out_dir)
  path.mkdir(parents=True, exist_ok=True)
  metrics_lib.metric_class(meta).write_files(result, path)
  (path / 'metrics.json').write_text(
      json.dumps({'metrics': result.metrics, 'best_branch': result.best_branch,
                  'scored_on': result.scored_on, 'subsets': result.subsets}, indent=2))
  if result.images:
    visualize.save_png(str(path / 'predictions.png'), visualize.grid(result.images))
  return str(path)
