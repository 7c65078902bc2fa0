r"""Does training wait for its input? The real training loop on full-size photos, with the time
each step spends blocked in next(batches).

  python -m data_prep.bench_training [--records DIR] [--batch-size 16] [--config.model.X=...]

Runs `python -m okdhp_jax.main` (configs/hg4.py:runlocal at 256x256 with a small OKDHP network,
one epoch) on realistic MPII records (data_prep/bench.py builds them from the bundled full-size
photos unless --records is given), then reads back what the loop logs to TensorBoard at every
log step: training images/s, the fraction of the time blocked waiting for the input pipeline,
and the milliseconds per step it was blocked. Extra `--config.*` flags go to the run as they
are (a larger network, a device's batch size).

Reading it: a wait near 0 % means the model (the device) is the bottleneck and more input cores
would not help; a wait of more than ~10 % means the host pipeline is, and more cores or fewer
pixels decoded per crop would (data_prep/bench.py shows where a crop's time goes).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile

from data_prep import bench
from okdhp_jax.tools import run_scalars

TAGS = ('perf/train_img_per_sec', 'perf/input_wait_fraction', 'perf/input_wait_ms_per_step')
# A small OKDHP network (1 shared stack, 3 branches of 1, 32 channels): a CPU trains it at a
# few images per second, an accelerator at thousands.
SMALL_NETWORK = ['--config.model.hourglass.features=32',
                 '--config.model.hourglass.num_shared_stacks=1',
                 '--config.model.hourglass.branch_stacks=(1,1,1)']


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--records', help='MPII records folder (default: build realistic ones)')
  parser.add_argument('--build-dir', '--build_dir', dest='build_dir',
                      default=os.path.join('/tmp', 'okdhp_bench_records'))
  parser.add_argument('--people', type=int, default=320, help='people in the built records')
  parser.add_argument('--batch-size', '--batch_size', dest='batch_size', type=int, default=16)
  parser.add_argument('--workdir', help='the run\'s workdir (default: a new temporary folder)')
  args, config_flags = parser.parse_known_args(argv)
  unknown = [f for f in config_flags if not f.startswith('--config.')]
  if unknown:
    parser.error(f'unrecognised arguments: {" ".join(unknown)}')
  records = args.records or bench.build_realistic_records(args.build_dir, args.people)[0]
  workdir = args.workdir or tempfile.mkdtemp(prefix='okdhp_bench_training_')
  command = [sys.executable, '-m', 'okdhp_jax.main', '--config=configs/hg4.py:runlocal',
             f'--workdir={workdir}', '--config.data.bundled=',
             f'--config.data.records_dir={records}',
             f'--config.data.eval_annotations={records}/gt_valid.mat',
             '--config.data.input_size=(256,256)', '--config.data.heatmap_size=(64,64)',
             f'--config.train.batch_size={args.batch_size}', '--config.train.num_epochs=1',
             '--config.train.log_every_steps=5', *SMALL_NETWORK, *config_flags]
  print('Running:', ' '.join(command), flush=True)
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  if subprocess.run(command, cwd=root, check=False).returncode != 0:
    print(f'error: the training run failed (its log is above; workdir {workdir})',
          file=sys.stderr)
    return 1
  timed = run_scalars.timed_windows(workdir, TAGS)
  if not timed:
    print(f'error: no timed log steps in {workdir} (a run needs at least two log steps)',
          file=sys.stderr)
    return 1
  print(f'\nTraining on {records}, global batch {args.batch_size} (the first window, which '
        'compiles, is left out)')
  print('| step | train img/s | input wait | blocked ms/step |')
  print('|---:|---:|---:|---:|')
  for step, row in sorted(timed.items()):
    print(f'| {step} | {row[TAGS[0]]:.1f} | {100 * row[TAGS[1]]:.1f} % | {row[TAGS[2]]:.1f} |')
  wait = sum(row[TAGS[1]] for row in timed.values()) / len(timed)
  verdict = ('the host input pipeline is the bottleneck: add cores, or decode fewer pixels'
             if wait > 0.1 else 'the model is the bottleneck: the input pipeline keeps up')
  print(f'Mean input wait {100 * wait:.1f} %: {verdict}.')
  return 0


if __name__ == '__main__':
  sys.exit(main())
