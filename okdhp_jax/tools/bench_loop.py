r"""Does the training loop keep the train step busy? `okdhp_jax.main`'s training rate between
evaluations against `bench_step`'s rate for the same config and batch.

  python -m okdhp_jax.tools.bench_loop [--config configs/hg4.py:runlocal] [--batch 8] \
      [--config.X=... flags for the run]

Runs `bench_step` for the config in a fresh process (synthetic batches already on the device:
the step alone), then trains the same config with `python -m okdhp_jax.main` in a fresh
workdir and reads back the rate the loop logs to TensorBoard at every log step
(`perf/train_img_per_sec`: training time only, evaluation and checkpoint saves left out, the
compiling step too). The loop's share of bench_step's rate is what the loop costs: input
waits, host-to-device copies, logging fetches. The goal (issue 11) is at least 95 %.

Both processes share the persistent compilation cache, so the run does not compile again what
bench_step compiled where the programs are the same.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile

GOAL = 0.95
TAGS = ('perf/train_img_per_sec', 'perf/input_wait_fraction')


def _bench_step_row(config_spec: str, batch: int | None, steps: int) -> dict:
  """bench_step's row for the config, measured in a fresh process."""
  from okdhp_jax.tools import bench_step
  options = argparse.Namespace(steps=steps, warmup=2, profile='')
  row = bench_step.measure_in_child(options, config_spec, None, batch)
  if 'error' in row:
    raise SystemExit(f'error: bench_step failed for {config_spec}: {row["error"]}')
  return row


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--config', default='configs/hg4.py:runlocal')
  parser.add_argument('--batch', type=int, help='global batch (default: the config\'s)')
  parser.add_argument('--steps', type=int, default=20, help='bench_step\'s timed steps')
  parser.add_argument('--workdir', help='the run\'s workdir (default: a new temporary folder)')
  args, run_flags = parser.parse_known_args(argv)
  unknown = [f for f in run_flags if not f.startswith('--config.')]
  if unknown:
    parser.error(f'unrecognised arguments: {" ".join(unknown)}')

  from okdhp_jax.tools import run_scalars
  print(f'bench_step: {args.config} ...', flush=True)
  step_row = _bench_step_row(args.config, args.batch, args.steps)
  workdir = args.workdir or tempfile.mkdtemp(prefix='okdhp_bench_loop_')
  command = [sys.executable, '-m', 'okdhp_jax.main', f'--config={args.config}',
             f'--workdir={workdir}', f'--config.train.batch_size={step_row["batch"]}',
             *run_flags]
  print('training:', ' '.join(command), flush=True)
  run = subprocess.run(command, capture_output=True, text=True, check=False)
  if run.returncode != 0:
    print(run.stderr[-3000:], file=sys.stderr)
    print(f'error: the training run failed (workdir {workdir})', file=sys.stderr)
    return 1
  windows = run_scalars.timed_windows(workdir, TAGS)
  if not windows:
    print(f'error: no timed log steps in {workdir}', file=sys.stderr)
    return 1
  rates = [row[TAGS[0]] for _, row in sorted(windows.items())]
  waits = [row[TAGS[1]] for _, row in sorted(windows.items())]
  loop_rate = statistics.median(rates)
  share = loop_rate / step_row['img_per_s']
  print(f'\nTraining loop against the train step alone, {step_row["devices"]}, '
        f'{step_row["dtype"]}, global batch {step_row["batch"]}')
  print('| config | bench_step img/s | loop img/s (median of windows) | loop windows '
        '(min-max) | loop / bench_step | input wait (median) |')
  print('|---|---:|---:|---:|---:|---:|')
  print(f'| {args.config} | {step_row["img_per_s"]:.2f} | {loop_rate:.2f} | '
        f'{len(rates)} ({min(rates):.2f}-{max(rates):.2f}) | {share:.1%} | '
        f'{statistics.median(waits):.1%} |')
  verdict = 'meets' if share >= GOAL else 'misses'
  print(f'The loop {verdict} the {GOAL:.0%} goal (workdir {workdir}).')
  return 0


if __name__ == '__main__':
  sys.exit(main())
