r"""Size and batch-1 latency of a student's deployment files: float32, float16 and int8.

  python -m okdhp_jax.tools.bench_deploy                     # HG4 and MobilePose students
  python -m okdhp_jax.tools.bench_deploy --config configs/hg4.py --formats tflite,tflite_int8
  python -m okdhp_jax.tools.bench_deploy --export WORKDIR/export   # an export's own files

With --config, the student an export of that config deploys (one branch: a plain 4-stack
hourglass for configs/hg4.py, a one-decoder ResNet18 MobilePose for
configs/mobilepose_resnet18.py) with random weights: size and speed do not depend on their
values, accuracy does, so none is given. The int8 files calibrate on crops of the config's
training records when they exist (config.export.calibration_crops of them), else on seeded
noise crops. A 'tflite, batch 1' row (float32, static batch) separates what the quantised
files' batch-1 graph gains from what quantisation gains (export/deploy_tflite.py says why).

With --export, the files an export holds, with the accuracy its model.json records
(experiment/deploy_report.py scored them on the evaluation split at export time).

Latency: median of --runs batch-1 calls after 5 untimed ones, on --threads threads (the TFLite
interpreter with its default XNNPACK delegate, an onnxruntime CPU session).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

import numpy as np

DEFAULT_CONFIGS = ('configs/hg4.py', 'configs/mobilepose_resnet18.py')
DEFAULT_FORMATS = 'tflite,tflite_fp16,tflite_int8,onnx,onnx_int8'
BATCH1 = 'tflite, batch 1'
BATCH1_FILE = 'model_batch1.tflite'
COLUMNS = ('student', 'format', 'precision', 'bytes', 'vs float32', 'batch-1 ms', 'speed-up',
           'accuracy')


def student_export(config_spec: str, folder: str, formats: str, calibration_crops: int | None
                   ) -> tuple[str, dict]:
  """Writes the config's random-weight student, its deployment files and a float32 batch-1
  TFLite file (BATCH1_FILE) into `folder`; (the student's name, model.json's deployment)."""
  import jax
  import ml_collections

  from okdhp_jax.data.meta import get_meta
  from okdhp_jax.export import deploy, deploy_graph, deploy_tflite, store
  from okdhp_jax.models import build_model, deployed_model_config, get_spec
  from okdhp_jax.models.initializers import init_variables
  from okdhp_jax.tools.config_file import load_config

  config = load_config(config_spec)
  meta = get_meta(config.data.dataset)
  model_config = deployed_model_config(config.model, 0)
  name = f'{get_spec(model_config["name"]).describe(model_config)} student'
  input_size = tuple(int(s) for s in config.data.input_size)
  heatmap_size = tuple(int(s) for s in config.data.heatmap_size)
  model = build_model(ml_collections.ConfigDict(model_config), meta.num_joints, input_size)
  variables = init_variables(model, jax.random.key(0), (1, *input_size, 3))
  store.save_exported(folder, variables, {
      'model': model_config, 'num_joints': meta.num_joints, 'dataset': meta.name,
      'input_size': list(input_size), 'heatmap_size': list(heatmap_size)})
  count = calibration_crops or int(config.export.calibration_crops)
  calibration = None
  if deploy.needs_calibration(formats):
    calibration = crops_for(config, meta, count, input_size)
  deployment = deploy.write_deployment(folder, formats, calibration=calibration)
  infer = deploy_graph.deployed_function(model_config, meta.num_joints, input_size,
                                         heatmap_size)
  with open(os.path.join(folder, BATCH1_FILE), 'wb') as f:
    f.write(deploy_tflite.to_tflite(infer, variables, input_size, batch=1))
  return name, deployment


def crops_for(config, meta, count: int, input_size) -> np.ndarray:
  """Calibration crops of the config's training records, else seeded noise (said on stderr)."""
  from okdhp_jax.export import deploy_calibration
  try:
    return deploy_calibration.calibration_crops(config.data, meta, count)
  except (FileNotFoundError, ValueError) as error:
    print(f'bench_deploy: calibrating on {count} noise crops ({error})', file=sys.stderr)
    return np.random.default_rng(0).integers(0, 256, (count, *input_size, 3), np.uint8)


def measure(name: str, folder: str, deployment: dict, *, runs: int, threads: int,
            headline: str | None, extra: dict | None = None) -> list[dict]:
  """One row per file of `deployment` (plus `extra`: format -> file), float32 TFLite first."""
  from okdhp_jax.export import deploy_run

  files = {fmt: entry['file'] for fmt, entry in deployment.items()}
  files.update(extra or {})
  order = ('tflite', BATCH1, 'tflite_fp16', 'tflite_int8', 'onnx', 'onnx_int8')
  crop = np.random.default_rng(0).integers(0, 256, (1, *_input_size(folder), 3), np.uint8)
  rows = []
  for fmt in sorted(files, key=lambda f: order.index(f) if f in order else len(order)):
    path = os.path.join(folder, files[fmt])
    runner = deploy_run.FileRunner(path, threads)
    entry = deployment.get(fmt, {})
    accuracy = entry.get('metrics', {}).get(headline) if headline else None
    rows.append({'student': name, 'format': fmt, 'file': files[fmt],
                 'precision': entry.get('precision', 'float32'),
                 'bytes': os.path.getsize(path),
                 'ms': deploy_run.latency_ms(runner, crop, runs=runs),
                 'accuracy': '-' if accuracy is None else f'{accuracy:.2f}'})
  return rows


def _input_size(folder: str) -> tuple[int, int]:
  with open(os.path.join(folder, 'model.json')) as f:
    return tuple(int(s) for s in json.load(f)['input_size'])


def format_rows(rows: list[dict]) -> str:
  """Markdown table; sizes and speed-ups against the same student's float32 TFLite file."""
  base = {row['student']: row for row in rows if row['format'] == 'tflite'}
  lines = ['| ' + ' | '.join(COLUMNS) + ' |', '|' + '---|' * len(COLUMNS)]
  for row in rows:
    ref = base.get(row['student'])
    cells = {**row, 'bytes': f'{row["bytes"]:,}',
             'batch-1 ms': f'{row["ms"]:.2f}' if row['ms'] < 10 else f'{row["ms"]:.1f}',
             'vs float32': f'{row["bytes"] / ref["bytes"]:.2f}x' if ref else '-',
             'speed-up': f'{ref["ms"] / row["ms"]:.2f}x' if ref else '-'}
    lines.append('| ' + ' | '.join(str(cells[c]) for c in COLUMNS) + ' |')
  return '\n'.join(lines)


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--config', action='append', default=[],
                      help=f'training config whose student to convert and time (repeatable; '
                           f'default: {", ".join(DEFAULT_CONFIGS)})')
  parser.add_argument('--export', default=None,
                      help='an export folder whose deployment files to time instead')
  parser.add_argument('--formats', default=DEFAULT_FORMATS,
                      help=f'deployment formats to write with --config (default {DEFAULT_FORMATS})')
  parser.add_argument('--runs', type=int, default=50, help='timed batch-1 calls per file')
  parser.add_argument('--threads', type=int, default=1, help='interpreter / session threads')
  parser.add_argument('--calibration-crops', '--calibration_crops', type=int, default=None,
                      help='int8 calibration crops (default: config.export.calibration_crops)')
  parser.add_argument('--out', default=None,
                      help='keep each student\'s files in OUT/<config name> (default: a '
                           'temporary folder, removed)')
  args = parser.parse_args(argv)
  if args.export and args.config:
    parser.error('give --config (random-weight students) or --export (an export), not both')
  for spec in args.config:
    if not os.path.exists(spec.partition(':')[0]):
      parser.error(f'--config file {spec.partition(":")[0]} does not exist')
  try:
    rows = run(args)
  except (FileNotFoundError, ValueError) as error:
    print(f'bench_deploy: error: {error}', file=sys.stderr)
    sys.exit(1)
  from okdhp_jax.experiment.deploy_report import host_description
  print(f'{host_description()}, {args.threads} thread(s); median of {args.runs} batch-1 calls '
        'after 5')
  print(format_rows(rows), flush=True)


def run(args) -> list[dict]:
  from okdhp_jax.export import deploy
  if args.export:
    return _export_rows(args)
  deploy.parse_formats(args.formats)
  rows = []
  for spec in args.config or DEFAULT_CONFIGS:
    with tempfile.TemporaryDirectory() as tmp:
      stem = os.path.splitext(os.path.basename(spec.partition(':')[0]))[0]
      folder = os.path.join(args.out, stem) if args.out else os.path.join(tmp, stem)
      print(f'{spec}: converting ...', file=sys.stderr, flush=True)
      name, deployment = student_export(spec, folder, args.formats, args.calibration_crops)
      for fmt, entry in deployment.items():
        print(f'  {entry["file"]}: {entry["seconds"]:.0f} s to convert', file=sys.stderr)
      print(f'{spec}: timing ...', file=sys.stderr, flush=True)
      rows += measure(name, folder, deployment, runs=args.runs, threads=args.threads,
                      headline=None, extra={BATCH1: BATCH1_FILE})
  return rows


def _export_rows(args) -> list[dict]:
  from okdhp_jax.data.meta import get_meta
  from okdhp_jax.evaluation.metrics import headline_metric
  from okdhp_jax.export import store

  _, description = store.load_exported(args.export)
  deployment = description.get('deployment', {})
  if not deployment:
    raise ValueError(f'{args.export} has no deployment files: export with '
                     '--config.export.formats=orbax,tflite,tflite_int8,...')
  headline = headline_metric(get_meta(description['dataset'])) if 'dataset' in description \
      else None
  name = os.path.basename(os.path.normpath(args.export))
  return measure(name, args.export, deployment, runs=args.runs, threads=args.threads,
                 headline=headline)


if __name__ == '__main__':
  main()
