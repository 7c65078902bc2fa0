"""What each deployment file of an export costs and scores: bytes, batch-1 latency, accuracy.

export_trained calls `score_files` once the files are written (config.export.score_files). Per
file of model.json's 'deployment':
  size_bytes   the file's size.
  latency_ms   median of 50 batch-1 calls after 5, on one thread of this host
               (export/deploy_run.py; the TFLite interpreter or an onnxruntime session).
  metrics      the dataset's metric (evaluation/metrics.py: PCKh for MPII and the figures, AP
               for COCO) on config.data.eval_split: the file's heatmaps taken to image pixels
               as the evaluation takes them (evaluator.image_joints), with the flip test when
               config.eval.flip_test (the mirrored crop through the same file, flipped back).
  graph_keypoints_metrics  the same metric of the keypoints the file decodes itself (no flip
               test): what the int8 files' in-graph decode costs on top.
model.json's 'deployment_report' holds the reference those are read against, the float32 JAX
student (deploy_graph's function on the Orbax variables) scored the same way, which repeats
the exported branch's own evaluation when that ran in float32.
"""

from __future__ import annotations

import collections
import os
import platform
import tempfile
from typing import Any, Callable

import jax
import ml_collections
import numpy as np

from okdhp_jax import paths
from okdhp_jax.codecs import heatmap as heatmap_codec
from okdhp_jax.data import geometry, pipeline, records
from okdhp_jax.data import meta as meta_lib
from okdhp_jax.evaluation import evaluator
from okdhp_jax.evaluation import metrics as metrics_lib
from okdhp_jax.export import deploy, deploy_graph, deploy_run, store

REFERENCE = 'jax float32'
_GRAPH = ':graph_keypoints'


def score_files(config: ml_collections.ConfigDict, export_dir: str
                ) -> tuple[dict[str, Any], dict[str, Any], str]:
  """Measures and scores every deployment file of the export; records it in model.json.

  Returns:
    model.json's 'deployment' (each file's entry with the measurements added), its
    'deployment_report', and the table of both (format_table) for the caller to print.
  """
  variables, description = store.load_exported(export_dir)
  deployment = description.get(deploy.DEPLOYMENT_KEY, {})
  with tempfile.TemporaryDirectory() as tmp:
    files = {name: _local(export_dir, entry['file'], tmp) for name, entry in deployment.items()}
    runners = {name: deploy_run.FileRunner(file) for name, file in files.items()}
    runners[REFERENCE] = _jax_runner(description, variables)
    scores, scored_on, first_crop = _score(config, runners)
    for name, file in files.items():
      deployment[name].update(
          size_bytes=os.path.getsize(file),
          latency_ms=round(deploy_run.latency_ms(
              deploy_run.FileRunner(file, deploy_run.LATENCY_THREADS), first_crop), 3),
          metrics=scores[name], graph_keypoints_metrics=scores[name + _GRAPH])
  report = {
      'reference': {'name': REFERENCE, 'metrics': scores[REFERENCE]},
      'split': config.data.eval_split, 'scored_on': scored_on,
      'flip_test': bool(config.eval.flip_test),
      'latency': (f'median of {deploy_run.LATENCY_RUNS} batch-1 calls after '
                  f'{deploy_run.LATENCY_WARMUP}, {deploy_run.LATENCY_THREADS} thread, '
                  f'{host_description()}'),
  }
  deploy.record(export_dir, deployment, report=report)
  headline = metrics_lib.headline_metric(meta_lib.get_meta(config.data.dataset))
  return deployment, report, format_table(deployment, report, headline)


def _local(export_dir: str, file: str, tmp: str) -> str:
  """A local path of the export's `file` (a copy in `tmp` when the export is in a bucket)."""
  source = paths.resolve(export_dir) / file
  if os.path.exists(str(source)):
    return str(source)
  local = os.path.join(tmp, file)
  with open(local, 'wb') as f:
    f.write(source.read_bytes())
  return local


def _jax_runner(description: dict[str, Any], variables: dict[str, Any]) -> Callable:
  infer = jax.jit(deploy_graph.deployed_function(
      description['model'], int(description['num_joints']),
      tuple(description['input_size']), tuple(description['heatmap_size'])))
  variables = {'params': variables['params'], 'batch_stats': variables.get('batch_stats', {})}
  return lambda images: dict(zip(deploy_graph.OUTPUT_NAMES,
                                 (np.asarray(a) for a in infer(variables, images))))


def _score(config: ml_collections.ConfigDict, runners: dict[str, Callable]
           ) -> tuple[dict[str, dict[str, float]], str, np.ndarray]:
  """Every runner's metrics (and its graph keypoints' as NAME:graph_keypoints) on the eval
  split, what they were scored on, and the split's first crop uint8 [1, H, W, 3]."""
  meta = meta_lib.get_meta(config.data.dataset)
  input_size = tuple(int(s) for s in config.data.input_size)
  flip_perm = meta.flip_permutation()
  joints, confidences = collections.defaultdict(list), collections.defaultdict(list)
  rows = {key: [] for key in evaluator.ROW_FIELDS}
  first_crop = None
  for batch in _eval_batches(config, meta):
    valid = batch['valid'].astype(bool)
    if not valid.any():
      continue
    images, center, scale = batch['image'][valid], batch['center'][valid], batch['scale'][valid]
    first_crop = images[:1] if first_crop is None else first_crop
    for name, run in runners.items():
      heatmaps, keypoints, graph_scores = _predict(run, images, config, flip_perm)
      xy, conf = evaluator.image_joints(heatmaps, center, scale, input_size)
      joints[name].append(xy)
      confidences[name].append(conf)
      joints[name + _GRAPH].append(geometry.input_to_image(keypoints, center, scale, input_size))
      confidences[name + _GRAPH].append(graph_scores)
    for key in rows:
      rows[key].append(batch[key][valid])
  if first_crop is None:
    raise ValueError(f'config.data.eval_split={config.data.eval_split!r} has no records to '
                     'score the deployment files on (set config.export.score_files=False)')

  def stacked(parts):
    return {key: np.concatenate(value) for key, value in parts.items()}

  groups = records.read_dataset_info(config.data.records_dir).get(records.EVAL_GROUPS, [])
  scores = metrics_lib.create(config, meta).score(metrics_lib.Predictions(
      stacked(joints), stacked(confidences), stacked(rows), groups))
  return scores.metrics, scores.scored_on, first_crop


def _predict(run: Callable, images: np.ndarray, config: ml_collections.ConfigDict,
             flip_perm: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """A file's heatmaps [n, h, w, J] (with the flip test when config.eval.flip_test, as the
  evaluation's predict step) and its own keypoints [n, J, 2] and scores [n, J] (no flip)."""
  out = run(images)
  heatmaps = out['heatmaps']
  if config.eval.flip_test:
    mirrored = run(np.ascontiguousarray(images[:, :, ::-1]))['heatmaps']
    heatmaps = 0.5 * (heatmaps + np.asarray(heatmap_codec.flip_back(
        mirrored, flip_perm, shift=bool(config.eval.shift_heatmap))))
  return heatmaps, out['keypoints'].astype(np.float64), out['scores']


def _eval_batches(config: ml_collections.ConfigDict, meta: meta_lib.DatasetMeta):
  """The eval split's batches (numpy), read by this process alone."""
  dataset = pipeline.build_eval_dataset(
      config.data, meta, split=config.data.eval_split,
      local_batch_size=int(config.eval.batch_size), process_index=0, process_count=1)
  return pipeline.numpy_batches(dataset, split=config.data.eval_split,
                                files=pipeline.split_files(config.data, config.data.eval_split))


def host_description() -> str:
  """'<CPU model>, N cores' (the model from /proc/cpuinfo where there is one)."""
  model = platform.processor() or platform.machine()
  try:
    with open('/proc/cpuinfo') as f:
      model = next(line.split(':', 1)[1].strip() for line in f if line.startswith('model name'))
  except (OSError, StopIteration):
    pass
  return f'{model}, {os.cpu_count()} cores'


def format_table(deployment: dict[str, Any], report: dict[str, Any], headline: str) -> str:
  """A Markdown table: per file its format, precision, bytes, batch-1 ms and `headline`."""
  header = ('format', 'file', 'precision', 'bytes', 'batch-1 ms', headline,
            f'{headline}, graph keypoints')
  reference = report['reference']['metrics'].get(headline)
  lines = [f'Deployment files scored on {report["scored_on"] or report["split"]} '
           f'(flip test {"on" if report["flip_test"] else "off"}); latency: {report["latency"]}',
           '| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header),
           f'| {REFERENCE} (reference) | variables/ | float32 | - | - | {_number(reference)} '
           '| - |']
  for name in sorted(deployment, key=_format_order):
    entry = deployment[name]
    lines.append('| ' + ' | '.join([
        name, entry['file'], entry.get('precision', 'float32'),
        f'{entry.get("size_bytes", 0):,}', _number(entry.get('latency_ms')),
        _number(entry.get('metrics', {}).get(headline)),
        _number(entry.get('graph_keypoints_metrics', {}).get(headline))]) + ' |')
  return '\n'.join(lines)


def _format_order(name: str) -> int:
  """TFLite files, then ONNX files, each float32 first."""
  order = ('tflite', 'tflite_fp16', 'tflite_int8', 'onnx', 'onnx_int8')
  return order.index(name) if name in order else len(order)


def _number(value) -> str:
  return '-' if value is None else f'{value:.2f}'
