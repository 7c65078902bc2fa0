"""Running `python -m okdhp_jax.main` as a user does, for the end-to-end tests."""

from __future__ import annotations

import glob
import os
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# A small OKDHP network (1 shared stack, 2 branches of 1 stack, 16 channels) on the bundled data.
# 33 steps (261 bundled examples, batch 8), a checkpoint every 10, evaluation at the end.
# Depth 1 (one pooling level) keeps the layout and cuts tracing and compile time.
TINY = [
    '--config.model.hourglass.features=16', '--config.model.hourglass.depth=1',
    '--config.model.hourglass.num_shared_stacks=1', '--config.model.hourglass.branch_stacks=(1,1)',
    '--config.train.batch_size=8',
    '--config.eval.batch_size=4', '--config.train.num_epochs=1',
    '--config.train.checkpoint_every_steps=10',
]


def tiny_synthetic_config(folder, *, num_train: int):
  """runlocal with a tiny two-branch network on `num_train` generated 64 px figures in FOLDER.

  The records are built (data_prep.bundled) so the trainer finds them.
  """
  from configs import default
  from data_prep import bundled
  config = default.get_config('runlocal')
  config.model.hourglass.update(features=16, depth=1, num_shared_stacks=0, branch_stacks=(1, 1))
  config.model.fau_hidden = 8
  records = os.path.join(folder, 'records')
  config.data.update(bundled='synthetic', records_dir=records,
                     eval_annotations=f'{records}/gt_valid.mat')
  config.data.synthetic.update(num_train=num_train, num_valid=8, image_size=64)
  bundled.prepare_for_config(config.data)
  return config


def clean_env():
  """The user's environment: no fake-device XLA flag from other test modules."""
  env = dict(os.environ)
  env.pop('XLA_FLAGS', None)
  return env


def main_command(workdir, *flags, config='configs/hg4.py:runlocal', records=None) -> list[str]:
  """The command line of one run; the records default to a folder beside the workdir."""
  records = records or os.path.join(os.path.dirname(workdir), 'records')
  return [sys.executable, '-m', 'okdhp_jax.main', f'--config={config}', f'--workdir={workdir}',
          f'--config.data.records_dir={records}',
          f'--config.data.eval_annotations={records}/gt_valid.mat', *flags]


def run_main(workdir, *flags, timeout=420, **kwargs) -> subprocess.CompletedProcess:
  return subprocess.run(main_command(workdir, *flags, **kwargs), cwd=ROOT, capture_output=True,
                        text=True, timeout=timeout, env=clean_env())


def one_error_line(stderr: str) -> str:
  """The run's error line; fails if the console shows a Python traceback."""
  assert 'Traceback (most recent call last)' not in stderr, stderr[-3000:]
  lines = [l for l in stderr.splitlines() if l.startswith('error: ')]
  assert len(lines) == 1, stderr[-3000:]
  return lines[0]


def restored_params(workdir):
  """The newest checkpoint's parameters and BatchNorm statistics, as flat numpy arrays keyed
  by path ('/params/stem/conv/kernel'), read without building the model."""
  from okdhp_jax import checkpointing
  step, state, _ = checkpointing.read_on_host(os.path.join(workdir, 'checkpoints'))
  flat = {}
  def visit(prefix, node):
    for key, value in node.items():
      if isinstance(value, dict):
        visit(f'{prefix}/{key}', value)
      else:
        flat[f'{prefix}/{key}'] = np.asarray(value)
  visit('', {'params': state['params'], 'batch_stats': state['batch_stats']})
  return step, flat


def restored_steps(workdir) -> list[int]:
  """The steps of the checkpoints in WORKDIR/checkpoints."""
  return sorted(int(os.path.basename(p)) for p in glob.glob(os.path.join(workdir, 'checkpoints', '*'))
                if os.path.basename(p).isdigit())


def read_until(process: subprocess.Popen, text: str, signum: int) -> list[str]:
  """Reads the run's stderr until a line holds `text`, then sends it `signum`."""
  lines = []
  deadline = time.time() + 400
  for line in process.stderr:
    lines.append(line)
    if text in line:
      process.send_signal(signum)
      return lines
    assert time.time() < deadline, ''.join(lines[-20:])
  raise AssertionError(f'the run ended before logging {text!r}:\n' + ''.join(lines[-20:]))
