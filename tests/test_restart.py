"""A run stopped any number of times and rerun ends as the uninterrupted run does; a stopped
run that then diverges, or finds its disk full, ends in one line and loses no checkpoint.

Stops at different points (SIGTERM before the first evaluation, SIGKILL in the middle of a
save after three evaluations), then a newest checkpoint made unreadable: the rerun each time
resumes, and the last one ends with the uninterrupted run's retained checkpoints, best step,
exported branch and weights. The SIGTERM-stopped run is also the start of a rerun whose
learning rate makes it diverge, and of one on a disk too small for its next checkpoint (issue
16's catalogue).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess

import flax
import numpy as np
import pytest

from okdhp_jax.export import store

from main_runs import (ROOT, clean_env, main_command, one_error_line, read_until,
                       restored_params, restored_steps, run_main)

pytestmark = pytest.mark.slow  # short runs of the real program.

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
  """Starts the run (resuming), sends `signum` once its log shows `text`; returns (the log, the
  exit status)."""
  process = subprocess.Popen(main_command(workdir, *FLAGS, records=records), cwd=ROOT,
                             env=clean_env(), stderr=subprocess.PIPE, text=True)
  lines = read_until(process, text, signum)
  lines += process.stderr.readlines()
  code = process.wait(timeout=120)
  assert code in (-signum, 128 + signum), ''.join(lines[-30:])
  return ''.join(lines), code


@pytest.fixture(scope='module')
def straight(tmp_path_factory):
  folder = tmp_path_factory.mktemp('straight')
  result = run_main(str(folder / 'run'), *FLAGS)
  assert result.returncode == 0, result.stderr[-4000:]
  return str(folder / 'run'), str(folder / 'records'), outcome(str(folder / 'run'))


@pytest.fixture(scope='module')
def stopped(straight, tmp_path_factory):
  """A run on the reference's records stopped by SIGTERM before its first evaluation: (its
  workdir, which tests copy and leave as it is, its log, its exit status)."""
  workdir = str(tmp_path_factory.mktemp('stopped') / 'run')
  log, code = stop(workdir, straight[1], 'step 5/24', signal.SIGTERM)
  return workdir, log, code


def _copy(stopped_run, folder) -> str:
  workdir = os.path.join(folder, 'run')
  shutil.copytree(stopped_run[0], workdir)
  return workdir


def test_sigterm_saves_a_checkpoint_and_exits_cleanly(stopped):
  workdir, log, code = stopped
  assert code == 128 + signal.SIGTERM, log[-2000:]
  assert 'Traceback' not in log and 'error:' not in log
  lines = [l for l in log.splitlines() if l.startswith('stopped by SIGTERM at step ')]
  assert len(lines) == 1, log[-2000:]
  step = int(lines[0].split('at step ')[1].split()[0])
  assert 5 <= step < 24 and step in restored_steps(workdir)
  assert restored_params(workdir)[0] == step  # the saved state restores


def test_stopped_and_rerun_ends_as_the_uninterrupted_run(straight, stopped, tmp_path):
  reference_dir, records, reference = straight
  scored = [e['step'] for e in json.load(open(f'{reference_dir}/eval_results.json'))['history']]
  assert scored == [6, 12, 18, 24]
  workdir = _copy(stopped, tmp_path)  # stopped by SIGTERM before any evaluation
  # Mid-write, after the evaluations of steps 6, 12 and 18.
  log, _ = stop(workdir, records, 'Saving checkpoint at step 20', signal.SIGKILL)
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


def test_a_diverging_run_stops_before_saving(straight, stopped, tmp_path):
  workdir = _copy(stopped, tmp_path)
  before = restored_steps(workdir)
  _, newest = restored_params(workdir)
  result = run_main(workdir, *FLAGS, '--config.optim.learning_rate=1e6', records=straight[1])
  assert result.returncode == 1
  line = one_error_line(result.stderr)
  assert 'training diverged at step' in line or 'non-finite training metrics' in line, line
  assert f'the last good checkpoint is step {before[-1]}' in line
  assert restored_steps(workdir) == before  # nothing diverged was saved
  step, after = restored_params(workdir)
  assert step == before[-1] and newest and all(np.array_equal(after[k], newest[k]) for k in newest)


def _folder_bytes(folder) -> int:
  """What the folder takes on a tmpfs, which gives every file whole 4 KiB pages."""
  return sum(-(-os.path.getsize(os.path.join(d, f)) // 4096) * 4096
             for d, _, files in os.walk(folder) for f in files)


def _mount_small_filesystem(path, kilobytes) -> bool:
  os.makedirs(path, exist_ok=True)
  try:
    done = subprocess.run(['mount', '-t', 'tmpfs', '-o', f'size={kilobytes}k', 'tmpfs', path],
                          capture_output=True, timeout=30)
  except (OSError, subprocess.SubprocessError):
    return False
  return done.returncode == 0


def test_a_full_disk_during_a_save_is_one_line_and_keeps_the_checkpoints(straight, stopped,
                                                                          tmp_path):
  source = stopped[0]
  used = _folder_bytes(source)
  newest = _folder_bytes(os.path.join(source, 'checkpoints', str(restored_steps(source)[-1])))
  mount_point = str(tmp_path / 'small')
  # Room for what is there plus half a checkpoint: the next save cannot fit, whatever the size
  # of the network.
  if not _mount_small_filesystem(mount_point, (used + newest // 2) // 1024):
    pytest.skip('cannot mount a small tmpfs here; tests/test_checkpointing.py makes the save '
                'fail instead')
  try:
    workdir = _copy(stopped, mount_point)
    before = restored_steps(workdir)
    # No evaluation before the end: the next thing written is the next checkpoint.
    result = run_main(workdir, *FLAGS, '--config.train.eval_every_epochs=100',
                      '--config.train.divergence_factor=0', records=straight[1])
    assert result.returncode == 1
    line = one_error_line(result.stderr)
    assert 'No space left on device' in line and f'steps {before}' in line, line
    assert len(result.stderr.splitlines()) < 40, result.stderr[-3000:]
    assert restored_steps(workdir) == before
    # The checkpoints that were there still restore.
    assert restored_params(workdir)[0] == before[-1]
  finally:
    subprocess.run(['umount', mount_point], capture_output=True, timeout=30)
