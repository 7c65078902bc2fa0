"""One evaluation pass of a (multi-branch) model: every branch and the ensemble at once.

Runs the flip-test predict step over the evaluation split, decodes each branch's heatmaps and
the ensemble's to image coordinates, and scores them with PCKh (MPII) or COCO AP. Returns the
per-branch table the paper prints and the best branch, plus a few drawn samples.
"""

from __future__ import annotations

import dataclasses
import io
import logging
import time
from typing import Any, Callable

import jax
import ml_collections
import numpy as np
from jax.experimental import multihost_utils
from PIL import Image

from okdhp_jax import exported
from okdhp_jax.data import meta as meta_lib
from okdhp_jax.data import augment, pipeline
from okdhp_jax.evaluation import decode, pckh, report, visualize
from okdhp_jax.evaluation.coco_eval import CocoKeypointEvaluator

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
    images: a few uint8 [H, W, 3] crops with predicted (ensemble) and GT skeletons drawn.
  """

  metrics: dict[str, dict[str, float]]
  metric_key: str
  table: str
  best_branch: int
  best_metric: float
  predictions: dict[str, np.ndarray]
  person_index: np.ndarray
  images: list[np.ndarray]


def branch_names(num_branches: int) -> list[str]:
  return [f'branch_{b}' for b in range(num_branches)]


def evaluate(config: ml_collections.ConfigDict, variables: dict[str, Any],
             predict_step: Callable, mesh: jax.sharding.Mesh, *,
             num_images_to_draw: int = 0) -> EvalResult:
  """Evaluates `variables` on `config.data.eval_split`; see EvalResult."""
  meta = meta_lib.get_meta(config.data.dataset)
  local_batch = config.eval.batch_size // jax.process_count()
  dataset = pipeline.build_eval_dataset(
      config.data, meta, split=config.data.eval_split, local_batch_size=local_batch,
      process_index=jax.process_index(), process_count=jax.process_count())
  coords, scores, info = {}, {}, {k: [] for k in ('center', 'scale', 'image_id',
                                                   'person_index', 'score', 'area')}
  drawn: list[np.ndarray] = []
  start, seen = time.time(), 0
  for batch in dataset.as_numpy_iterator():
    valid = batch['valid'].astype(bool)
    out = predict_step(variables, pipeline.make_global_batch({'image': batch['image']}, mesh)['image'])
    out = jax.tree.map(_local_rows, out)
    heatmaps = {name: out['branches'][b] for b, name in enumerate(
        branch_names(out['branches'].shape[0]))}
    heatmaps[ENSEMBLE] = out['ensemble']
    for name, maps in heatmaps.items():
      xy, conf = decode.heatmaps_to_image_coords(maps[valid], batch['center'][valid],
                                                 batch['scale'][valid])
      coords.setdefault(name, []).append(xy)
      scores.setdefault(name, []).append(conf)
    for key in info:
      info[key].append(batch[key][valid])
    if len(drawn) < num_images_to_draw:
      drawn += _draw_samples(batch, heatmaps[ENSEMBLE], valid, meta, config,
                             num_images_to_draw - len(drawn))
    seen += int(valid.sum())
    logging.info('eval: %d examples, %.1f img/s', seen, seen / max(time.time() - start, 1e-6))

  # Each process scored its own shard; every process needs the whole split.
  coords, scores, info = _gather_rows(jax.tree.map(
      np.concatenate, (coords, scores, info), is_leaf=lambda x: isinstance(x, list)))
  names = [n for n in coords if n != ENSEMBLE] + [ENSEMBLE]

  if meta.name == 'coco':
    metric_key = 'AP'
    evaluator = CocoKeypointEvaluator(
        config.data.eval_annotations, meta, oks_nms_threshold=config.eval.oks_nms_threshold,
        soft_nms=config.eval.soft_nms,
        keypoint_score_threshold=config.eval.keypoint_score_threshold)
    metrics = {name: evaluator.evaluate(coords[name], scores[name], info['image_id'],
                                        info['score'], info['area'])
               for name in names}
  else:
    metric_key = 'Mean'
    gt = pckh.load_mpii_gt(config.data.eval_annotations)
    threshold_0_1 = (pckh.HRNET_MEAN_AT_0_1_THRESHOLD if config.eval.hrnet_mean_at_0_11
                     else 0.1)
    metrics = {}
    for name in names:
      result = pckh.compute_pckh(coords[name], gt, threshold=config.eval.pckh_threshold,
                                 mean_at_0_1_threshold=threshold_0_1,
                                 person_indices=info['person_index'])
      metrics[name] = dict(result.table)
  table, best_name = report.branch_report(metrics, metric_key)
  best_branch = int(best_name.split('_')[-1])
  return EvalResult(metrics=metrics, metric_key=metric_key, table=table,
                    best_branch=best_branch, best_metric=float(metrics[best_name][metric_key]),
                    predictions=coords, person_index=info['person_index'], images=drawn)


def _local_rows(array: jax.Array) -> np.ndarray:
  """The rows of a batch-sharded global array that belong to this process."""
  if jax.process_count() == 1:
    return np.asarray(jax.device_get(array))
  shards = sorted(array.addressable_shards, key=lambda s: s.index[0].start or 0)
  return np.concatenate([np.asarray(s.data) for s in shards], axis=0)


def _gather_rows(local):
  """Every process's rows of each array of a pytree, in process order.

  All arrays of one process have the same number of rows, but processes may have different
  numbers (the split's shards differ by a record or more). The collective needs equal shapes,
  so rows are padded to the largest count and cut back afterwards. Rows travel as raw bytes:
  without 64-bit JAX, float64 coordinates and int64 ids would arrive as 32-bit values.
  """
  if jax.process_count() == 1:
    return local
  count = len(jax.tree.leaves(local)[0])
  counts = np.asarray(multihost_utils.process_allgather(np.array([count]))).reshape(-1)
  most = int(counts.max())

  def to_padded_bytes(a):
    rows = np.ascontiguousarray(a).reshape(len(a), -1).view(np.uint8)
    return np.concatenate([rows, np.zeros((most - len(a), rows.shape[1]), np.uint8)])

  def from_bytes(gathered, like):
    rows = np.concatenate([np.asarray(gathered[p])[:n] for p, n in enumerate(counts)])
    return rows.view(like.dtype).reshape((len(rows),) + like.shape[1:])

  # [processes, most, bytes per row] per leaf.
  gathered = multihost_utils.process_allgather(jax.tree.map(to_padded_bytes, local),
                                               tiled=False)
  return jax.tree.map(from_bytes, gathered, local)


def _draw_samples(batch, ensemble_heatmaps, valid, meta, config, count) -> list[np.ndarray]:
  """Draws predicted and GT skeletons on the network-input crops (no image re-reading)."""
  in_h, in_w = config.data.input_size
  hm_h, hm_w = ensemble_heatmaps.shape[1:3]
  xy, conf = decode.decode_heatmaps(ensemble_heatmaps)
  xy = xy * np.array([in_w / hm_w, in_h / hm_h])
  images = []
  for i in np.flatnonzero(valid)[:count]:
    crop = np.clip(augment.denormalize(batch['image'][i]), 0, 255).astype(np.uint8)
    images.append(visualize.draw_prediction_and_gt(
        crop, xy[i], batch['joints'][i], batch['joints_vis'][i], meta, conf[i]))
  return images


def write_samples(directory: str, images: list[np.ndarray], prefix: str) -> list[str]:
  """Writes drawn samples as PNG files (local or gs://); returns their paths."""
  path = exported.resolve(directory)
  path.mkdir(parents=True, exist_ok=True)
  written = []
  for i, image in enumerate(images):
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format='PNG')
    target = path / f'{prefix}_{i:02d}.png'
    target.write_bytes(buffer.getvalue())
    written.append(str(target))
  return written
