r"""Deployment files beside an export: model.tflite and model.onnx, recorded in model.json.

  python -m okdhp_jax.main --config ... --workdir DIR --mode export \
      --config.export.formats=orbax,onnx,tflite

Both files hold deploy_graph's function: uint8 crops [B, H, W, 3] in (any batch), heatmaps
[B, h, w, J], keypoints [B, J, 2] in crop pixels and scores [B, J] out, float32, no flip test.
TFLite comes from jax2tf and the TFLite converter (deploy_tflite.py), ONNX from that flat
buffer through tf2onnx (deploy_onnx.py, which says why).
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from typing import Any, Sequence

from okdhp_jax import paths
from okdhp_jax.export import store

FORMATS = ('orbax', 'onnx', 'tflite')
FILES = {'onnx': 'model.onnx', 'tflite': 'model.tflite'}
DEPLOYMENT_KEY = 'deployment'


def parse_formats(value: str | Sequence[str]) -> tuple[str, ...]:
  """config.export.formats ('orbax,onnx' or a sequence) -> formats in FORMATS order.

  'orbax' is always included: the deployment files are made from the Orbax export.
  """
  names = value.split(',') if isinstance(value, str) else list(value)
  names = {n.strip().lower() for n in names if n.strip()}
  unknown = sorted(names - set(FORMATS))
  if unknown:
    raise ValueError(f'config.export.formats has unknown formats {unknown}; choose from '
                     f'{FORMATS} (comma-separated, e.g. "orbax,onnx,tflite")')
  return tuple(f for f in FORMATS if f in names | {'orbax'})


def write_deployment(export_dir: str, formats: str | Sequence[str]) -> dict[str, Any]:
  """Writes the deployment files `formats` asks for into an export folder.

  Files of other formats that model.json does not record (left by an older export) are
  removed, so the folder holds what model.json says.

  Args:
    export_dir: a folder written by store.save_exported (a plain one-branch network); local or
      a bucket (the conversion itself runs in a local temporary folder).
    formats: see parse_formats; 'orbax' needs nothing more.

  Returns:
    model.json's 'deployment' entry, also written there: per format its file, the converter,
    the seconds it took, and the graph's input and outputs.
  """
  wanted = [f for f in parse_formats(formats) if f in FILES]
  path = paths.resolve(export_dir)
  description_path = path / store.DESCRIPTION_FILE
  if not description_path.exists():
    store.load_exported(str(path))  # raises the error that says how to write an export.
  deployment = dict(json.loads(description_path.read_text()).get(DEPLOYMENT_KEY, {}))
  if wanted:
    deployment.update(_convert(path, wanted))
    _record(path, deployment)
  for name, file in FILES.items():
    if name not in deployment and (path / file).exists():
      (path / file).unlink()
  return deployment


def _convert(path, wanted: list[str]) -> dict[str, Any]:
  """Converts the export at `path`; writes FILES[f] for f in `wanted`; their descriptions."""
  from okdhp_jax.export import deploy_graph, deploy_tflite

  variables, description = store.load_exported(str(path))
  input_size = tuple(int(s) for s in description['input_size'])
  infer = deploy_graph.deployed_function(
      description['model'], int(description['num_joints']), input_size,
      tuple(int(s) for s in description['heatmap_size']))
  variables = {'params': variables['params'], 'batch_stats': variables.get('batch_stats', {})}
  graph = _graph_description(description)
  start = time.perf_counter()
  flat_buffer = deploy_tflite.to_tflite(infer, variables, input_size)
  tflite_seconds = time.perf_counter() - start
  written = {}
  with tempfile.TemporaryDirectory() as tmp:
    tflite_path = os.path.join(tmp, FILES['tflite'])
    with open(tflite_path, 'wb') as f:
      f.write(flat_buffer)
    if 'tflite' in wanted:
      _publish(tflite_path, path / FILES['tflite'])
      written['tflite'] = dict(graph, file=FILES['tflite'], seconds=round(tflite_seconds, 2),
                               converter='jax2tf + tf.lite.TFLiteConverter')
    if 'onnx' in wanted:  # converted from the flat buffer, which lands only if asked for.
      from okdhp_jax.export import deploy_onnx
      start = time.perf_counter()
      onnx_path = os.path.join(tmp, FILES['onnx'])
      deploy_onnx.tflite_to_onnx(tflite_path, onnx_path)
      _publish(onnx_path, path / FILES['onnx'])
      written['onnx'] = dict(
          graph, file=FILES['onnx'], opset=deploy_onnx.OPSET,
          seconds=round(tflite_seconds + time.perf_counter() - start, 2),
          converter='jax2tf + tf.lite.TFLiteConverter, then tf2onnx.convert.from_tflite')
  for name, entry in written.items():
    logging.info('Wrote %s (%s, %.1f s)', path / entry['file'], entry['converter'],
                 entry['seconds'])
  return written


def _graph_description(description: dict[str, Any]) -> dict[str, Any]:
  height, width = (int(s) for s in description['input_size'])
  heat_h, heat_w = (int(s) for s in description['heatmap_size'])
  joints = int(description['num_joints'])
  return {
      'inputs': {'images': f'uint8 [batch, {height}, {width}, 3] RGB crops, 0..255 '
                           '(ImageNet normalisation is inside the graph)'},
      'outputs': {
          'heatmaps': f'float32 [batch, {heat_h}, {heat_w}, {joints}]',
          'keypoints': f'float32 [batch, {joints}, 2] (x, y) in crop pixels',
          'scores': f'float32 [batch, {joints}] heatmap maxima',
      },
      'flip_test': False,
  }


def _publish(local_file: str, target) -> None:
  """Copies a local file to `target` (an epath) through a temporary name, then renames."""
  tmp = target.parent / (target.name + '.tmp')
  with open(local_file, 'rb') as f:
    tmp.write_bytes(f.read())
  tmp.replace(target)


def _record(path, deployment: dict[str, Any]) -> None:
  """Adds `deployment` to model.json, via a temporary name as store.save_exported does."""
  description_path = path / store.DESCRIPTION_FILE
  description = json.loads(description_path.read_text())
  description[DEPLOYMENT_KEY] = deployment
  tmp = path / (store.DESCRIPTION_FILE + '.tmp')
  tmp.write_text(json.dumps(description, indent=2, sort_keys=True))
  tmp.replace(description_path)  # epath rename refuses to overwrite.
