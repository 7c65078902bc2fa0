"""Runs that are stopped, broken or starved end in one line, and lose no good checkpoint.

The end-to-end part drives `python -m okdhp_jax.main` as a user would, on one tiny run (33
steps per epoch, a checkpoint every 10) taken through, in order: a real SIGTERM, a resume, a
corrupt newest checkpoint, a diverging learning rate and a full disk.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import subprocess
import time

import numpy as np
import pytest

from main_runs import ROOT, TINY, clean_env, main_command, restored_params, run_main


def _one_error_line(stderr: str) -> str:
  """The run's error line; fails if the console shows a Python traceback."""
  assert 'Traceback (most recent call last)' not in stderr, stderr[-3000:]
  lines = [l for l in stderr.splitlines() if l.startswith('error: ')]
  assert len(lines) == 1, stderr[-3000:]
  return lines[0]


def _steps(workdir):
  return sorted(int(os.path.basename(p)) for p in glob.glob(os.path.join(workdir, 'checkpoints',
                                                                         '*'))
                if os.path.basename(p).isdigit())


def test_a_misspelt_config_field_is_one_line(tmp_path):
  result = run_main(str(tmp_path / 'w'), '--config.train.batchsize=8', timeout=120)
  assert result.returncode == 2
  assert _one_error_line(result.stderr) == (
      'error: --config.train.batchsize: the config has no field \'batchsize\'. Did you mean '
      '"batch_size" instead of "batchsize"?')
  missing = run_main(str(tmp_path / 'w'), config='configs/no_such_config.py', timeout=120)
  assert missing.returncode == 2
  assert 'configs/no_such_config.py' in _one_error_line(missing.stderr)


@pytest.fixture(scope='module')
def interrupted(tmp_path_factory):
  """A run stopped by SIGTERM once it logged step 10: (workdir, stderr, exit code)."""
  workdir = str(tmp_path_factory.mktemp('interrupted') / 'run')
  process = subprocess.Popen(main_command(workdir, *TINY), cwd=ROOT, env=clean_env(),
                             stderr=subprocess.PIPE, text=True)
  lines = []
  deadline = time.time() + 400
  for line in process.stderr:
    lines.append(line)
    if 'step 10/33' in line:
      process.send_signal(signal.SIGTERM)
      break
    assert time.time() < deadline, ''.join(lines[-20:])
  lines += process.stderr.readlines()
  return workdir, ''.join(lines), process.wait(timeout=120)


@pytest.mark.slow
def test_sigterm_saves_a_checkpoint_and_exits_cleanly(interrupted):
  workdir, stderr, code = interrupted
  assert code == 128 + signal.SIGTERM, stderr[-2000:]
  assert 'Traceback' not in stderr and 'error:' not in stderr
  stop = [l for l in stderr.splitlines() if l.startswith('stopped by SIGTERM at step ')]
  assert len(stop) == 1, stderr[-2000:]
  step = int(stop[0].split('at step ')[1].split()[0])
  assert 10 <= step < 33 and step in _steps(workdir)
  assert restored_params(workdir)[0] == step  # the saved state restores

  resumed = run_main(workdir, *TINY)
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert f'Restored checkpoint of step {step}' in resumed.stderr
  assert _steps(workdir)[-1] == 33


@pytest.mark.slow
def test_a_corrupt_newest_checkpoint_falls_back_to_the_previous_one(interrupted):
  workdir = interrupted[0]
  assert _steps(workdir)[-1] == 33  # after the resume above
  # What a crash mid-write leaves: a truncated JSON file in the newest checkpoint.
  # (Orbax keeps the progress item's JSON as progress/metadata.)
  path = os.path.join(workdir, 'checkpoints', '33', 'progress', 'metadata')
  with open(path, 'r+') as f:
    f.truncate(os.path.getsize(path) // 2)
  result = run_main(workdir, *TINY)
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'Checkpoint of step 33 cannot be read' in result.stderr
  assert 'Restored checkpoint of step 30' in result.stderr
  assert glob.glob(os.path.join(workdir, 'checkpoints_unreadable', '33-*'))
  # Steps 31-33 trained again from step 30, and step 33 saved anew, readable.
  assert _steps(workdir)[-1] == 33 and restored_params(workdir)[0] == 33


@pytest.mark.slow
def test_a_diverging_run_stops_before_saving(interrupted):
  workdir = interrupted[0]
  before = _steps(workdir)
  _, newest = restored_params(workdir)
  result = run_main(workdir, *TINY, '--config.train.num_epochs=3',
                    '--config.optim.learning_rate=1e6')
  assert result.returncode == 1
  line = _one_error_line(result.stderr)
  assert 'training diverged at step' in line or 'non-finite training metrics' in line, line
  assert f'the last good checkpoint is step {before[-1]}' in line
  assert _steps(workdir) == before  # nothing diverged was saved
  step, after = restored_params(workdir)
  assert step == before[-1] and newest and all(np.array_equal(after[k], newest[k]) for k in newest)


def _folder_bytes(folder) -> int:
  return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(folder)
             for f in files)


def _mount_small_filesystem(path, kilobytes) -> bool:
  os.makedirs(path, exist_ok=True)
  try:
    done = subprocess.run(['mount', '-t', 'tmpfs', '-o', f'size={kilobytes}k', 'tmpfs', path],
                          capture_output=True, timeout=30)
  except (OSError, subprocess.SubprocessError):
    return False
  return done.returncode == 0


@pytest.mark.slow
def test_a_full_disk_during_a_save_is_one_line_and_keeps_the_checkpoints(interrupted,
                                                                          tmp_path):
  source = interrupted[0]
  used = _folder_bytes(source)
  newest = _folder_bytes(os.path.join(source, 'checkpoints', str(_steps(source)[-1])))
  mount_point = str(tmp_path / 'small')
  # Room for what is there plus half a checkpoint: the next save cannot fit, whatever the size
  # of the network.
  if not _mount_small_filesystem(mount_point, (used + newest // 2) // 1024):
    pytest.skip('cannot mount a small tmpfs here; tests/test_checkpointing.py makes the save '
                'fail instead')
  try:
    workdir = os.path.join(mount_point, 'run')
    shutil.copytree(source, workdir)
    before = _steps(workdir)
    result = run_main(workdir, *TINY, '--config.train.num_epochs=4',
                      '--config.train.divergence_factor=0',
                      records=os.path.join(os.path.dirname(source), 'records'))
    assert result.returncode == 1
    line = _one_error_line(result.stderr)
    assert 'No space left on device' in line and f'steps {before}' in line, line
    assert len(result.stderr.splitlines()) < 40, result.stderr[-3000:]
    assert _steps(workdir) == before
    # The checkpoints that were there still restore.
    assert restored_params(workdir)[0] == before[-1]
  finally:
    subprocess.run(['umount', mount_point], capture_output=True, timeout=30)


@pytest.mark.slow
def test_evaluation_with_a_batch_the_devices_cannot_split(interrupted):
  """config.eval.batch_size=3 on 2 devices: padded to 4 and masked, not a sharding error."""
  workdir = interrupted[0]
  env = dict(clean_env(), XLA_FLAGS='--xla_force_host_platform_device_count=2')
  result = subprocess.run(main_command(workdir, *TINY, '--mode=eval', '--config.eval.batch_size=3'),
                          cwd=ROOT, capture_output=True, text=True, timeout=420, env=env)
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'CpuDevice(id=1)' in result.stderr  # really two devices
  assert 'branch_0' in result.stdout and 'ensemble' in result.stdout
  with open(os.path.join(workdir, 'eval', 'metrics.json')) as f:
    assert f.read()
