r"""Deployment files beside an export: TFLite and ONNX, float32 or quantised, in model.json.

  python -m okdhp_jax.main --config ... --workdir DIR --mode export \
      --config.export.formats=orbax,onnx,tflite,tflite_fp16,tflite_int8,onnx_int8

Every file holds deploy_graph's function: uint8 crops [B, H, W, 3] in, heatmaps [B, h, w, J],
keypoints [B, J, 2] in crop pixels and scores [B, J] out, float32, no flip test. model.tflite
comes from jax2tf and the TFLite converter (deploy_tflite.py), model.onnx from that flat buffer
through tf2onnx (deploy_onnx.py, which says why); both take any batch. The quantised files
(deploy_quantize.py: model_fp16.tflite, model_int8.tflite, model_int8.onnx) are made after
training, the int8 ones calibrated on crops of training records (deploy_calibration.py).
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from typing import Any, Callable, Sequence

import numpy as np

from okdhp_jax import paths
from okdhp_jax.export import store

FORMATS = ('orbax', 'onnx', 'tflite', 'tflite_fp16', 'tflite_int8', 'onnx_int8')
FILES = {'onnx': 'model.onnx', 'tflite': 'model.tflite', 'tflite_fp16': 'model_fp16.tflite',
         'tflite_int8': 'model_int8.tflite', 'onnx_int8': 'model_int8.onnx'}
# The formats whose conversion needs calibration crops.
CALIBRATED = ('tflite_int8', 'onnx_int8')
DEPLOYMENT_KEY = 'deployment'
# What the files were measured against (experiment/deploy_report.py).
REPORT_KEY = 'deployment_report'
_TFLITE = 'jax2tf + tf.lite.TFLiteConverter'
_ONNX = f'{_TFLITE}, then tf2onnx.convert.from_tflite'
CONVERTERS = {
    'tflite': _TFLITE,
    'onnx': _ONNX,
    'tflite_fp16': f'{_TFLITE} (optimizations=[DEFAULT], supported_types=[float16])',
    'tflite_int8': f'{_TFLITE} (optimizations=[DEFAULT], representative_dataset, '
                   'TFLITE_BUILTINS_INT8, inference_input_type=uint8)',
    'onnx_int8': f'{_ONNX}, then onnxruntime.quantization.quantize_static (QDQ, QInt8, '
                 'per channel, MinMax)',
}
PRECISION = {  # deploy_quantize.py says what each quantised file holds.
    'tflite': 'float32', 'onnx': 'float32', 'tflite_fp16': 'float16 weights',
    'tflite_int8': 'int8', 'onnx_int8': 'int8 (QDQ)',
}


def parse_formats(value: str | Sequence[str]) -> tuple[str, ...]:
  """config.export.formats ('orbax,onnx' or a sequence) -> formats in FORMATS order.

  'orbax' is always included: the deployment files are made from the Orbax export.
  """
  names = value.split(',') if isinstance(value, str) else list(value)
  names = {n.strip().lower() for n in names if n.strip()}
  unknown = sorted(names - set(FORMATS))
  if unknown:
    raise ValueError(f'config.export.formats has unknown formats {unknown}; choose from '
                     f'{FORMATS} (comma-separated, e.g. "orbax,onnx,tflite,tflite_int8")')
  return tuple(f for f in FORMATS if f in names | {'orbax'})


def needs_calibration(formats: str | Sequence[str]) -> bool:
  """Whether `formats` (see parse_formats) asks for a file calibrated on training crops."""
  return any(f in CALIBRATED for f in parse_formats(formats))


def write_deployment(export_dir: str, formats: str | Sequence[str], *,
                     calibration: np.ndarray | None = None) -> dict[str, Any]:
  """Writes the deployment files `formats` asks for into an export folder.

  Files of other formats that model.json does not record (left by an older export) are
  removed, so the folder holds what model.json says.

  Args:
    export_dir: a folder written by store.save_exported (a plain one-branch network); local or
      a bucket (the conversion itself runs in a local temporary folder).
    formats: see parse_formats; 'orbax' needs nothing more.
    calibration: uint8 [N, H, W, 3] crops (deploy_calibration.calibration_crops); needed by
      the CALIBRATED formats, else unused.

  Returns:
    model.json's 'deployment' entry, also written there: per format its file, the converter,
    its precision, the seconds it took, and the graph's input and outputs.
  """
  wanted = [f for f in parse_formats(formats) if f in FILES]
  path = paths.resolve(export_dir)
  description_path = path / store.DESCRIPTION_FILE
  if not description_path.exists():
    store.load_exported(str(path))  # raises the error that says how to write an export.
  description = json.loads(description_path.read_text())
  if any(f in CALIBRATED for f in wanted):
    from okdhp_jax.export import deploy_quantize  # fails before any conversion starts.
    deploy_quantize.check_calibration(calibration, description['input_size'])
  deployment = dict(description.get(DEPLOYMENT_KEY, {}))
  if wanted:
    deployment.update(_convert(path, wanted, calibration))
    record(str(path), deployment)
  for name, file in FILES.items():
    if name not in deployment and (path / file).exists():
      (path / file).unlink()
  return deployment


def _convert(path, wanted: list[str], calibration: np.ndarray | None) -> dict[str, Any]:
  """Converts the export at `path`; writes FILES[f] for f in `wanted`; their descriptions."""
  from okdhp_jax.export import deploy_graph, deploy_quantize, deploy_tflite

  variables, description = store.load_exported(str(path))
  input_size = tuple(int(s) for s in description['input_size'])
  infer = deploy_graph.deployed_function(
      description['model'], int(description['num_joints']), input_size,
      tuple(int(s) for s in description['heatmap_size']))
  variables = {'params': variables['params'], 'batch_stats': variables.get('batch_stats', {})}
  written, seconds = {}, {}
  with tempfile.TemporaryDirectory() as tmp:
    local = {name: os.path.join(tmp, file) for name, file in FILES.items()}

    def make(name: str, fn: Callable[[], None], after: str | None = None) -> None:
      """Runs fn (which writes local[name]); its seconds include those of the file it
      converts, `after`."""
      start = time.perf_counter()
      fn()
      seconds[name] = time.perf_counter() - start + (seconds[after] if after else 0.0)

    # model.onnx is converted from model.tflite, model_int8.onnx from model.onnx: each is made
    # when a file asked for needs it, and lands only if asked for.
    needs_onnx = bool({'onnx', 'onnx_int8'} & set(wanted))
    if 'tflite' in wanted or needs_onnx:
      make('tflite', lambda: _write(local['tflite'],
                                    deploy_tflite.to_tflite(infer, variables, input_size)))
    if 'tflite_fp16' in wanted:
      make('tflite_fp16', lambda: _write(
          local['tflite_fp16'], deploy_quantize.to_tflite_fp16(infer, variables, input_size)))
    if 'tflite_int8' in wanted:
      make('tflite_int8', lambda: _write(local['tflite_int8'], deploy_quantize.to_tflite_int8(
          infer, variables, input_size, calibration)))
    if needs_onnx:
      from okdhp_jax.export import deploy_onnx
      make('onnx', lambda: deploy_onnx.tflite_to_onnx(local['tflite'], local['onnx']),
           after='tflite')
    if 'onnx_int8' in wanted:
      make('onnx_int8', lambda: deploy_quantize.onnx_to_int8(
          local['onnx'], local['onnx_int8'], calibration, input_size), after='onnx')
    for name in wanted:
      _publish(local[name], path / FILES[name])
      written[name] = _entry(name, description, seconds[name], calibration)
  for name, entry in written.items():
    logging.info('Wrote %s (%s, %.1f s)', path / entry['file'], entry['converter'],
                 entry['seconds'])
  return written


def _write(file: str, flat_buffer: bytes) -> None:
  with open(file, 'wb') as f:
    f.write(flat_buffer)


def _entry(name: str, description: dict[str, Any], seconds: float,
           calibration: np.ndarray | None) -> dict[str, Any]:
  """model.json's description of the file of format `name`."""
  from okdhp_jax.export.deploy_quantize import QUANTISED_BATCH
  batch = QUANTISED_BATCH if name in ('tflite_fp16', 'tflite_int8') else None
  entry = dict(_graph_description(description, batch), file=FILES[name],
               converter=CONVERTERS[name], precision=PRECISION[name], seconds=round(seconds, 2))
  if name == 'onnx':
    from okdhp_jax.export.deploy_onnx import OPSET
    entry['opset'] = OPSET
  if name in CALIBRATED:
    entry['calibration_crops'] = int(len(calibration))
  return entry


def _graph_description(description: dict[str, Any], batch: int | None) -> dict[str, Any]:
  height, width = (int(s) for s in description['input_size'])
  heat_h, heat_w = (int(s) for s in description['heatmap_size'])
  joints = int(description['num_joints'])
  b = 'batch' if batch is None else str(batch)
  return {
      'inputs': {'images': f'uint8 [{b}, {height}, {width}, 3] RGB crops, 0..255 '
                           '(ImageNet normalisation is inside the graph)'},
      'outputs': {
          'heatmaps': f'float32 [{b}, {heat_h}, {heat_w}, {joints}]',
          'keypoints': f'float32 [{b}, {joints}, 2] (x, y) in crop pixels',
          'scores': f'float32 [{b}, {joints}] heatmap maxima',
      },
      'flip_test': False,
  }


def _publish(local_file: str, target) -> None:
  """Copies a local file to `target` (an epath) through a temporary name, then renames."""
  tmp = target.parent / (target.name + '.tmp')
  with open(local_file, 'rb') as f:
    tmp.write_bytes(f.read())
  tmp.replace(target)


def record(export_dir: str, deployment: dict[str, Any], *,
           report: dict[str, Any] | None = None) -> None:
  """Sets model.json's 'deployment' entry and its 'deployment_report' (dropped when None: new
  files outdate it), via a temporary name as store.save_exported does."""
  path = paths.resolve(export_dir)
  description_path = path / store.DESCRIPTION_FILE
  description = json.loads(description_path.read_text())
  description[DEPLOYMENT_KEY] = deployment
  description.pop(REPORT_KEY, None)
  if report is not None:
    description[REPORT_KEY] = report
  tmp = path / (store.DESCRIPTION_FILE + '.tmp')
  tmp.write_text(json.dumps(description, indent=2, sort_keys=True))
  tmp.replace(description_path)  # epath rename refuses to overwrite.
