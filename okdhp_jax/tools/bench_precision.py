r"""Does bfloat16 compute learn as float32 does? The same config trained twice, once per dtype,
scored on the same held-out figures.

  python -m okdhp_jax.tools.bench_precision [--config configs/synthetic.py] [--threshold 90] \
      [--workdir DIR] [--config.X=... flags for both runs]

Trains the config with `python -m okdhp_jax.main` and `--config.model.dtype=float32`, then
with `bfloat16` (parameters, optimiser state, BatchNorm statistics, softmaxes and losses stay
float32 either way: okdhp_jax/precision.py), each in its own subfolder of --workdir, and prints
every branch's and the ensemble's PCKh@0.5 (the 'Mean' column) at the last evaluation, the
wall time, and whether each run reaches --threshold (configs/synthetic.py promises 90 % for
every branch and the ensemble). A run already finished in --workdir is read, not trained again;
an interrupted one resumes.

On a CPU bfloat16 is emulated and slower; the point there is the learning, not the speed
(`bench_step --dtype bfloat16` measures speed).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

DTYPES = ('float32', 'bfloat16')


def _final_evaluation(workdir: str) -> dict | None:
  path = os.path.join(workdir, 'eval_results.json')
  if not os.path.exists(path):
    return None
  history = json.load(open(path)).get('history') or []
  return history[-1] if history else None


def train(config: str, dtype: str, workdir: str, flags: list[str]) -> float:
  """Trains (or resumes) one dtype's run; returns its wall seconds."""
  command = [sys.executable, '-m', 'okdhp_jax.main', f'--config={config}',
             f'--workdir={workdir}', f'--config.model.dtype={dtype}', *flags]
  print(' '.join(command), flush=True)
  start = time.perf_counter()
  result = subprocess.run(command, capture_output=True, text=True, check=False)
  if result.returncode != 0:
    raise SystemExit(f'error: the {dtype} run failed (workdir {workdir}):\n'
                     f'{result.stderr[-3000:]}')
  return time.perf_counter() - start


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--config', default='configs/synthetic.py')
  parser.add_argument('--threshold', type=float, default=90.0,
                      help='PCKh@0.5 every branch and the ensemble must reach')
  parser.add_argument('--workdir', default=os.path.join('/tmp', 'okdhp_bench_precision'))
  args, flags = parser.parse_known_args(argv)
  unknown = [f for f in flags if not f.startswith('--config.')]
  if unknown:
    parser.error(f'unrecognised arguments: {" ".join(unknown)}')

  rows = []
  for dtype in DTYPES:
    workdir = os.path.join(args.workdir, dtype)
    # eval_results.json is written when a run ends: a finished run is read, not run again.
    finished = _final_evaluation(workdir) is not None
    seconds = None if finished else train(args.config, dtype, workdir, flags)
    final = _final_evaluation(workdir)
    if final is None:
      print(f'error: {workdir} has no evaluation (eval_results.json)', file=sys.stderr)
      return 1
    means = {name: table['Mean'] for name, table in final['metrics'].items()}
    rows.append((dtype, final['step'], means, seconds))

  print(f'\n{args.config}: PCKh@0.5 (Mean) at the last evaluation, {rows[0][1]} steps; '
        f'threshold {args.threshold:g}')
  branches = [name for name in rows[0][2] if name != 'ensemble']
  print('| compute dtype | ' + ' | '.join(branches) + ' | ensemble | wall s | reaches |')
  print('|---|' + '---:|' * (len(branches) + 3))
  verdicts = []
  for dtype, _, means, seconds in rows:
    reaches = min(means.values()) >= args.threshold
    verdicts.append(reaches)
    wall = 'read back' if seconds is None else f'{seconds:.0f}'
    print(f'| {dtype} | ' + ' | '.join(f'{means[b]:.2f}' for b in branches) +
          f' | {means["ensemble"]:.2f} | {wall} | {"yes" if reaches else "no"} |')
  print('Both reach the threshold.' if all(verdicts) else 'Not both reach the threshold.')
  return 0 if all(verdicts) else 1


if __name__ == '__main__':
  sys.exit(main())
