"""A run stopped any number of times and rerun ends as the uninterrupted run does.

Stops at different points (SIGTERM before the first evaluation, SIGKILL in the middle of a
save after three evaluations), then a newest checkpoint made unreadable: the rerun each time
resumes, and the last one ends with the uninterrupted run's retained checkpoints, best step,
exported branch and weights.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess

import flax
import numpy as np
import pytest

from okdhp_jax.export import store

from main_runs import ROOT, clean_env, main_command, read_until, restored_steps, run_main

# 48 generated figures, batch 8: 6 steps an epoch, 4 epochs, evaluated every epoch (steps 6,
# 12, 18, 24), a checkpoint every 4 steps, the newest two kept beside the best-scoring one.
FLAGS = [
    '--config.model.hourglass.features=16', '--config.model.hourglass.depth=1',
    '--config.model.hourglass.num_shared_stacks=1',
    '--config.model.hourglass.branch_stacks=(1,1)', '--config.data.bundled=synthetic',
    '--config.data.synthetic.num_train=48', '--config.data.synthetic.num_valid=16',
    '--config.data.synthetic.image_size=64', '--config.train.batch_size=8',
    '--config.train.num_epochs=4', '--config.train.eval_every_epochs=1',
    '--config.train.checkpoint_every_steps=4', '--config.train.keep_checkpoints=2',
    '--config.train.log_every_steps=1', '--config.eval.batch_size=8',
    # A rate raised tenfold after epoch 2: the scores fall again, so the best checkpoint is
    # not among the newest ones (step 12 of 24 on the machines tried).
    '--config.optim.learning_rate=1e-2', '--config.optim.lr_decay_epochs=(2,)',
    '--config.optim.lr_decay_factor=10.0',
]


def outcome(workdir):
  """What a finished run leaves: retained steps, best step and branch, the export."""
  results = json.load(open(os.path.join(workdir, 'eval_results.json')))
  variables, description = store.load_exported(os.path.join(workdir, 'export'))
  return {'retained': restored_steps(workdir), 'best_step': results['best_step'],
          'best_branch': results['best_branch'], 'export_step': description['step'],
          'export_branch': description['branch'], 'variables': variables}


def stop(workdir, records, text, signum):
  """Starts the run (resuming), sends `signum` once its log shows `text`; returns the log."""
  process = subprocess.Popen(main_command(workdir, *FLAGS, records=records), cwd=ROOT,
                             env=clean_env(), stderr=subprocess.PIPE, text=True)
  lines = read_until(process, text, signum)
  lines += process.stderr.readlines()
  code = process.wait(timeout=120)
  assert code in (-signum, 128 + signum), ''.join(lines[-30:])
  return ''.join(lines)


@pytest.fixture(scope='module')
def straight(tmp_path_factory):
  folder = tmp_path_factory.mktemp('straight')
  result = run_main(str(folder / 'run'), *FLAGS)
  assert result.returncode == 0, result.stderr[-4000:]
  return str(folder / 'run'), str(folder / 'records'), outcome(str(folder / 'run'))


@pytest.mark.slow  # four short runs of the real program.
def test_stopped_and_rerun_ends_as_the_uninterrupted_run(straight, tmp_path):
  reference_dir, records, reference = straight
  scored = [e['step'] for e in json.load(open(f'{reference_dir}/eval_results.json'))['history']]
  assert scored == [6, 12, 18, 24]
  workdir = str(tmp_path / 'run')

  log = stop(workdir, records, 'step 5/24', signal.SIGTERM)  # before any evaluation
  assert 'stopped by SIGTERM' in log
  # Mid-write, after the evaluations of steps 6, 12 and 18.
  log = stop(workdir, records, 'Saving checkpoint at step 20', signal.SIGKILL)
  assert 'Restored checkpoint of step' in log
  # What a crash mid-write leaves in the newest whole checkpoint: a truncated JSON item.
  newest = restored_steps(workdir)[-1]
  path = os.path.join(workdir, 'checkpoints', str(newest), 'progress', 'metadata')
  with open(path, 'r+') as f:
    f.truncate(os.path.getsize(path) // 2)

  result = run_main(workdir, *FLAGS, records=records)
  assert result.returncode == 0, result.stderr[-4000:]
  assert f'Checkpoint of step {newest} cannot be read' in result.stderr
  got = outcome(workdir)
  for key in ('retained', 'best_step', 'best_branch', 'export_step', 'export_branch'):
    assert got[key] == reference[key], (key, got[key], reference[key])
  assert reference['best_step'] in reference['retained']
  want = flax.traverse_util.flatten_dict(reference['variables'], sep='/')
  have = flax.traverse_util.flatten_dict(got['variables'], sep='/')
  assert want.keys() == have.keys()
  for key in want:
    np.testing.assert_allclose(have[key], want[key], rtol=1e-6, atol=1e-7, err_msg=key)

