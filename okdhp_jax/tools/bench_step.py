r"""The train step's throughput on the devices present: the table to quote, with MFU.

  python -m okdhp_jax.tools.bench_step --sweep --dtype float32 --dtype bfloat16 \
      --batch 16 --batch 32 --batch 64 --results sweep.jsonl
  python -m okdhp_jax.tools.bench_step --config configs/hg4.py --batch 32 --profile /tmp/prof
  python -m okdhp_jax.tools.bench_step --config configs/quickstart.py

One row per config x dtype x global batch: devices, img/s, ms per step, model TFLOP/s, MFU,
the first call's seconds (trace + compile + one step) and peak device memory. Training FLOPs
per image are the training network's own MAC count (the one model_stats prints) x 2 FLOPs per
MAC x 3 (forward + backward); MFU divides the achieved FLOP/s by the devices' dense peak for
the dtype (okdhp_jax/tools/peak_flops.py; n/a on a CPU). Timings exclude the first call and
warm-up steps and end on `block_until_ready`.

Batches are synthetic (random images and joints) on a `data` mesh over every device;
parameters are freshly initialised. A method's frozen state is loaded as training loads it
(FPD: the teacher export in the config's config.fpd.teacher_checkpoint).
With more than one row, each row runs in a fresh process, so compile times and peak memory are
its own. `--profile DIR` writes a jax.profiler trace of a few steps per row under DIR, which
TensorBoard's profile plugin opens (pip install tensorboard-plugin-profile), and prints under
the table where those steps' time went, by op kind (okdhp_jax/tools/profile_summary.py).
`--results FILE` keeps each row as it finishes: a sweep stopped by a time limit or Ctrl-C,
run again with the same FILE, measures only the rows it lacks.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

from okdhp_jax.tools import profile_summary

SWEEP = ('configs/hg4_baseline.py', 'configs/hg4.py', 'configs/hg4_unbalanced.py',
         'configs/mobilepose_resnet18.py', 'configs/coco_hg4.py')
DTYPES = ('auto', 'float32', 'bfloat16')
PROFILE_STEPS = 3
COLUMNS = (('config', 'config'), ('devices', 'devices'), ('dtype', 'dtype'),
           ('batch', 'global batch'), ('img_per_s', 'img/s'), ('step_ms', 'step ms'),
           ('tflops', 'TFLOP/s'), ('mfu', 'MFU'), ('first_call_s', 'first call s'),
           ('peak_gib', 'peak GiB'))


def synthetic_batch(config, batch_size: int, num_joints: int,
                    seed: int = 0) -> dict[str, np.ndarray]:
  """Random uint8 crops [B, H, W, 3] and joints [B, J, 2] in input pixels, all visible."""
  height, width = config.data.input_size
  rng = np.random.default_rng(seed)
  joints = rng.uniform(0, 1, (batch_size, num_joints, 2)) * np.array([width, height])
  return {'image': rng.integers(0, 256, (batch_size, height, width, 3), np.uint8),
          'joints': joints.astype(np.float32),
          'joints_vis': np.ones((batch_size, num_joints), np.float32)}


def peak_memory_gib() -> float | None:
  """Largest peak bytes in use over the local devices, where the backend reports it."""
  import jax
  peaks = [(d.memory_stats() or {}).get('peak_bytes_in_use') for d in jax.local_devices()]
  peaks = [p for p in peaks if p is not None]
  return max(peaks) / 2**30 if peaks else None


def measure(config_spec: str, dtype: str | None, batch_size: int | None, *, steps: int,
            warmup: int, profile_dir: str = '') -> dict:
  """Times one config's train step in this process; returns a table row (see COLUMNS)."""
  import jax
  from okdhp_jax import sharding
  from okdhp_jax.experiment import Experiment
  from okdhp_jax.models import resolve_compute_dtype
  from okdhp_jax.models.stats import model_stats
  from okdhp_jax.tools.config_file import load_config
  from okdhp_jax.tools.peak_flops import peak_tflops, train_flops_per_image
  from okdhp_jax.training import step as step_lib

  config = load_config(config_spec)
  if dtype:
    config.model.dtype = dtype
  if batch_size:
    config.train.batch_size = batch_size
  batch_size = config.train.batch_size
  compute_dtype = resolve_compute_dtype(config.model.dtype)
  sharding.check_batch_divisible(batch_size, sharding.make_mesh(),
                                 '--batch / config.train.batch_size')
  # 'rbg' keys: initialisers compile much faster than with threefry; init is not timed.
  experiment = Experiment(config, workdir=None, steps_per_epoch=1000,
                          rng=jax.random.key(config.seed, impl='unsafe_rbg'))
  mesh, num_joints = experiment.mesh, experiment.meta.num_joints
  input_size = tuple(config.data.input_size)
  flops_per_image = train_flops_per_image(model_stats(experiment.model, (*input_size, 3)).macs)
  state = experiment.state
  frozen = experiment.method.frozen_state(mesh)
  train_step = step_lib.make_train_step(config, experiment.model, experiment.method, mesh=mesh,
                                        steps_per_epoch=1000, num_joints=num_joints)
  batch = jax.device_put(synthetic_batch(config, batch_size, num_joints),
                         sharding.data_sharded(mesh))

  start = time.perf_counter()
  state, metrics = train_step(state, frozen, batch)
  jax.block_until_ready(metrics)
  first_call_s = time.perf_counter() - start
  for _ in range(warmup):
    state, metrics = train_step(state, frozen, batch)
  jax.block_until_ready((state, metrics))

  start = time.perf_counter()
  for _ in range(steps):
    state, metrics = train_step(state, frozen, batch)
  jax.block_until_ready((state, metrics))
  step_s = (time.perf_counter() - start) / steps

  profile = None
  if profile_dir:
    name = os.path.basename(config_spec).replace('.py', '').replace(':', '_')
    trace_dir = os.path.join(profile_dir, f'{name}_{compute_dtype}_b{batch_size}')
    with jax.profiler.trace(trace_dir):
      for _ in range(PROFILE_STEPS):
        state, metrics = train_step(state, frozen, batch)
      jax.block_until_ready((state, metrics))
    try:
      profile = profile_summary.summarize(trace_dir, PROFILE_STEPS)
    except Exception as error:  # pylint: disable=broad-except  (the row matters more)
      print(f'warning: the trace in {trace_dir} was written but could not be summarised: '
            f'{error}', file=sys.stderr, flush=True)

  devices = jax.devices()
  achieved = flops_per_image * batch_size / step_s / 1e12
  peak = peak_tflops(devices[0].device_kind, compute_dtype)
  return {
      'config': config_spec,
      'devices': f'{len(devices)} x {devices[0].device_kind}',
      'dtype': compute_dtype, 'batch': batch_size,
      'img_per_s': batch_size / step_s, 'step_ms': step_s * 1e3, 'tflops': achieved,
      'mfu': achieved / (peak * len(devices)) if peak else None,
      'first_call_s': first_call_s, 'peak_gib': peak_memory_gib(),
      'loss': float(metrics['loss']), 'profile': profile,
  }


def _cell(key: str, value) -> str:
  if value is None:
    return 'n/a'
  if isinstance(value, str):
    return value
  if key == 'tflops' and 0 < value < 0.001:
    return f'{value:.1g}'  # a tiny network on a loaded CPU, not 0.000
  formats = {'img_per_s': '{:.1f}', 'step_ms': '{:.1f}', 'tflops': '{:.3f}', 'mfu': '{:.1%}',
             'first_call_s': '{:.1f}', 'peak_gib': '{:.2f}', 'batch': '{:d}'}
  return formats.get(key, '{}').format(value)


def format_rows(rows: list[dict]) -> str:
  """Markdown table of measured rows (a failed row shows its error in the img/s column)."""
  lines = ['| ' + ' | '.join(header for _, header in COLUMNS) + ' |',
           '|' + '---|' * len(COLUMNS)]
  for row in rows:
    if 'error' in row:
      cells = [row['config'], '', row['dtype'], str(row['batch']), f'failed: {row["error"]}']
      cells += [''] * (len(COLUMNS) - len(cells))
    else:
      cells = [_cell(key, row.get(key)) for key, _ in COLUMNS]
    lines.append('| ' + ' | '.join(cells) + ' |')
  flagged = {}
  for number, row in enumerate(rows, 1):
    flags = (row.get('request') or {}).get('xla_flags')
    if flags:
      flagged.setdefault(flags, []).append(str(number))
  for flags, numbers in flagged.items():
    lines.append(f'\nRow{"s" if len(numbers) > 1 else ""} {", ".join(numbers)}: '
                 f'XLA_FLAGS={flags}')
  return '\n'.join(lines)


def measure_in_child(args, config_spec: str, dtype: str | None, batch: int | None) -> dict:
  """One row in a fresh process: its compile time and peak memory are its own."""
  command = [sys.executable, '-m', 'okdhp_jax.tools.bench_step', '--config', config_spec,
             '--steps', str(args.steps), '--warmup', str(args.warmup), '--row-json']
  command += ['--dtype', dtype] if dtype else []
  command += ['--batch', str(batch)] if batch else []
  command += ['--profile', args.profile] if args.profile else []
  result = subprocess.run(command, capture_output=True, text=True)
  for line in result.stderr.splitlines():
    if line.startswith('warning:'):  # the row's own warnings (not the frameworks' log lines)
      print(line, file=sys.stderr, flush=True)
  lines = result.stdout.strip().splitlines()
  if result.returncode == 0 and lines:
    return json.loads(lines[-1])
  last = (result.stderr.strip().splitlines() or ['no output'])[-1]
  return {'config': config_spec, 'dtype': dtype or 'config', 'batch': batch or 'config',
          'error': f'exit {result.returncode}: {last[-120:]}'}


def request(args, config_spec: str, dtype: str | None, batch: int | None) -> dict:
  """What a row was asked for and how it is measured (None: the config's own dtype or batch).
  A --results row is reused only for the same request, XLA_FLAGS included: a sweep that tries
  compiler flags keeps each variant's rows apart."""
  return {'config': config_spec, 'dtype': dtype, 'batch': batch, 'steps': args.steps,
          'warmup': args.warmup, 'profile': bool(args.profile),
          'xla_flags': os.environ.get('XLA_FLAGS', '').strip()}


def request_key(asked: dict) -> tuple:
  return tuple(sorted(asked.items()))


def load_results(path: str) -> dict[tuple, dict]:
  """Rows already measured into `path` (--results), by request (failed rows are never written
  there, so they are measured again)."""
  rows = {}
  if not os.path.exists(path):
    return rows
  try:
    with open(path, encoding='utf-8') as f:
      lines = f.readlines()
  except (OSError, UnicodeDecodeError) as error:
    raise SystemExit(f'error: --results {path} cannot be read: {error}') from None
  for number, line in enumerate(lines, 1):
    if not line.strip():
      continue
    try:
      row = json.loads(line)
      rows[request_key(row['request'])] = row
    except (ValueError, KeyError, TypeError, AttributeError) as error:
      if number == len(lines) and not line.endswith('\n'):
        continue  # a write cut off by a kill: append_result drops it, and the row is measured.
      raise SystemExit(f'error: --results {path}, line {number} is not a bench_step row '
                       f'({error}); give another file or remove that line') from None
  return rows


def append_result(path: str, row: dict) -> None:
  """Adds one measured row to `path` at once, so an interrupted sweep keeps what it measured.
  A last line cut off by a kill while writing is dropped first."""
  with open(path, 'ab+') as f:
    f.seek(0)
    content = f.read()
    complete = content.rfind(b'\n') + 1
    if complete < len(content):
      f.truncate(complete)
    f.write(json.dumps(row).encode() + b'\n')
    f.flush()
    os.fsync(f.fileno())


def check_results_file(path: str) -> str | None:
  """Why `path` cannot take --results rows (None if it can): checked before measuring, so that
  no measured row is lost to a bad path."""
  if os.path.isdir(path):
    return 'is a folder'
  if not os.path.isdir(os.path.dirname(os.path.abspath(path))):
    return 'its folder does not exist'
  try:
    with open(path, 'ab'):
      pass
  except OSError as error:
    return f'cannot be written ({error.strerror})'
  return None


def brief(row: dict) -> str:
  """'812.3 img/s, 39.4 ms/step, MFU 31.2%, first call 48.1 s' (or the failure)."""
  if 'error' in row:
    return f'failed: {row["error"]}'
  mfu = f', MFU {row["mfu"]:.1%}' if row.get('mfu') is not None else ''
  return (f'{row["img_per_s"]:.1f} img/s, {row["step_ms"]:.1f} ms/step{mfu}, first call '
          f'{row["first_call_s"]:.1f} s')


def print_report(rows: list[dict]) -> None:
  """The table, then the profile summary of each row that has one."""
  print(format_rows(rows), flush=True)
  for row in rows:
    if row.get('profile'):
      print(f'\nWhere the time goes: {row["config"]}, {row["dtype"]}, global batch '
            f'{row["batch"]}. {profile_summary.format_summary(row["profile"], row["step_ms"])}',
            flush=True)


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--config', action='append', default=[],
                      help='config file, optionally with :arg (repeat for several)')
  parser.add_argument('--sweep', action='store_true',
                      help=f'add the standard configs: {", ".join(SWEEP)}')
  parser.add_argument('--dtype', action='append', choices=DTYPES, default=[],
                      help="compute dtype (repeatable; default: the config's, 'auto')")
  parser.add_argument('--batch', action='append', type=int, default=[],
                      help='global batch (repeatable; default: config.train.batch_size)')
  parser.add_argument('--steps', type=int, default=10, help='timed steps per row')
  parser.add_argument('--warmup', type=int, default=2, help='untimed steps after compiling')
  parser.add_argument('--profile', default='', metavar='DIR',
                      help=f'write a jax.profiler trace of {PROFILE_STEPS} steps per row here and '
                           'print where their time goes')
  parser.add_argument('--results', default='', metavar='FILE',
                      help='append each measured row to this JSON-lines file as it finishes; '
                           'rows already in it are shown, not measured again (resumes a sweep)')
  parser.add_argument('--row-json', action='store_true', help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  configs = args.config + (list(SWEEP) if args.sweep else [])
  if not configs:
    parser.error('give --config (repeatable) or --sweep')
  for spec in configs:
    if not os.path.exists(spec.partition(':')[0]):
      parser.error(f'--config file {spec.partition(":")[0]} does not exist')
  problem = check_results_file(args.results) if args.results else None
  if problem:
    parser.error(f'--results {args.results}: {problem}')
  # dict.fromkeys: a row asked for twice (a --config also in --sweep) is measured once.
  grid = list(dict.fromkeys((c, d, b) for c in configs for d in (args.dtype or [None])
                            for b in (args.batch or [None])))

  if args.row_json:
    config_spec, dtype, batch = grid[0]
    print(json.dumps(measure(config_spec, dtype, batch, steps=args.steps, warmup=args.warmup,
                             profile_dir=args.profile)), flush=True)
    return
  earlier = load_results(args.results) if args.results else {}
  asked_rows = [request(args, *g) for g in grid]
  to_measure = sum(request_key(asked) not in earlier for asked in asked_rows)
  rows, measured, start = [], 0, time.perf_counter()
  try:
    for i, ((config_spec, dtype, batch), asked) in enumerate(zip(grid, asked_rows)):
      label = (f'[{i + 1}/{len(grid)}] {config_spec} dtype={dtype or "config"} '
               f'batch={batch or "config"}')
      key = request_key(asked)
      if key in earlier:
        rows.append(earlier[key])
        print(f'{label}: measured earlier on {earlier[key].get("devices", "?")} '
              f'({args.results}): {brief(earlier[key])}', file=sys.stderr, flush=True)
        continue
      print(label, file=sys.stderr, flush=True)
      # One row runs in this process; with several, each gets a fresh one.
      if len(grid) == 1:
        row = measure(config_spec, dtype, batch, steps=args.steps, warmup=args.warmup,
                      profile_dir=args.profile)
      else:
        row = measure_in_child(args, config_spec, dtype, batch)
      row['request'] = asked
      rows.append(row)
      measured += 1
      if args.results and 'error' not in row:
        append_result(args.results, row)
      elapsed = time.perf_counter() - start
      left = elapsed / measured * (to_measure - measured)
      print(f'{label}: {brief(row)} | {elapsed / 60:.1f} min so far, about {left / 60:.1f} min '
            'left', file=sys.stderr, flush=True)
  except KeyboardInterrupt:
    print(f'Interrupted: {len(rows)} of {len(grid)} rows done'
          + (f' (kept in {args.results}; run again to go on)' if args.results else ''),
          file=sys.stderr, flush=True)
    print_report(rows)
    raise SystemExit(130) from None
  print_report(rows)


if __name__ == '__main__':
  main()
