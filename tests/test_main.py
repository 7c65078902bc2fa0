"""The program users run, end to end, as subprocesses: train, eval, export, predict, and a run
that cannot start (a missing dataset, a misspelt config field).

One tiny bundled run (33 steps, a checkpoint every 10) is the reference the other tests read.
Runs that are stopped, resumed, diverge or find the disk full are in tests/test_restart.py.
"""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from main_runs import ROOT, TINY, clean_env, main_command, one_error_line, run_main

pytestmark = pytest.mark.slow  # minutes on 2 cores: not in the fast tier.


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
  """One bundled run (README's first command, shortened to 1 epoch with a tiny network)."""
  workdir = str(tmp_path_factory.mktemp('bundled') / 'run')
  result = run_main(workdir, *TINY)
  assert result.returncode == 0, result.stderr[-4000:]
  return workdir, result


def test_bundled_run_trains_evaluates_exports_and_says_where(trained):
  workdir, result = trained
  out = result.stdout
  for column in ('Head', 'Sho', 'Elb', 'Wri', 'Hip', 'Knee', 'Ank', 'Mean'):
    assert column in out
  assert 'branch_0' in out and 'branch_1' in out and 'ensemble' in out
  # Held-out figures rank the branches; the real people, also trained on, get their own line.
  assert 'Scored on held-out generated figures (32, not trained on):' in out
  assert 'Mean on real MPII people (5, also in the training set: a smoke test): branch_0 ' in out
  assert 'Data: 5 real MPII people + 256 generated figures to train on' in out
  assert 'exported network' in out
  assert 'img/s' in result.stderr and 'ETA' in result.stderr and 'input wait' in result.stderr
  assert 'oneDNN' not in result.stderr  # TensorFlow's import notices are held back.
  description = json.load(open(os.path.join(workdir, 'export', 'model.json')))
  hourglass = description['model']['hourglass']
  assert hourglass['branch_stacks'] == [2]  # 1 shared + 1 private stack
  assert hourglass['num_shared_stacks'] == 0
  assert glob.glob(os.path.join(workdir, 'events.out.tfevents.*'))
  assert glob.glob(os.path.join(workdir, 'samples', '*.png'))
  progress = json.load(open(os.path.join(workdir, 'eval_results.json')))
  assert progress['best_branch'] in (0, 1)
  weights = np.array(progress['history'][-1]['fau_weights'])  # [branches, joints]
  assert weights.shape == (2, 16)
  np.testing.assert_allclose(weights.sum(0), 1.0, atol=1e-5)


def test_the_training_input_bench_reads_the_runs_wait_per_step(trained):
  """data_prep/bench_training.py's table comes from these TensorBoard scalars."""
  from data_prep import bench_training
  from okdhp_jax.tools import run_scalars
  timed = run_scalars.timed_windows(trained[0], bench_training.TAGS)
  assert timed and all(step > 1 for step in timed), timed
  for row in timed.values():
    assert row['perf/train_img_per_sec'] > 0 and 0 <= row['perf/input_wait_fraction'] <= 1
    assert row['perf/input_wait_ms_per_step'] >= 0


def test_eval_mode_writes_pred_mat_on_devices_that_cannot_split_its_batch(trained):
  """--mode eval on 2 devices with config.eval.batch_size=3: padded to 4 and masked, not a
  sharding error; it writes MPII's pred.mat for the official tool, the metrics and a drawing."""
  workdir, _ = trained
  env = dict(clean_env(), XLA_FLAGS='--xla_force_host_platform_device_count=2')
  result = subprocess.run(main_command(workdir, '--mode=eval', *TINY, '--config.eval.batch_size=3'),
                          cwd=ROOT, capture_output=True, text=True, timeout=420, env=env)
  assert result.returncode == 0, result.stderr[-4000:]
  assert 'CpuDevice(id=1)' in result.stderr  # really two devices
  assert 'branch_0' in result.stdout and 'ensemble' in result.stdout
  from okdhp_jax.evaluation import pckh
  preds = pckh.load_pred_mat(os.path.join(workdir, 'eval', 'pred.mat'))
  assert preds.shape == (37, 16, 2) and np.isfinite(preds).all()  # 5 people + 32 figures.
  metrics = json.load(open(os.path.join(workdir, 'eval', 'metrics.json')))
  assert metrics['scored_on'].startswith('held-out generated figures')
  assert set(metrics['subsets']['real MPII people (5, also in the training set: a smoke test)']) \
      == {'branch_0', 'branch_1', 'ensemble'}
  # The padded rows are masked out: the same scores as the 1-device evaluation in training.
  progress = json.load(open(os.path.join(workdir, 'eval_results.json')))
  for name, table in progress['history'][-1]['metrics'].items():
    assert metrics['metrics'][name]['Mean'] == pytest.approx(table['Mean'], abs=1e-6), name
  from PIL import Image
  width, height = Image.open(os.path.join(workdir, 'eval', 'predictions.png')).size
  assert width >= 256 and height >= 256  # drawn, enlarged, and kept.


def test_predict_tool_draws_the_exported_network(trained, tmp_path):
  workdir, _ = trained
  out = tmp_path / 'pose.png'
  result = subprocess.run(
      [sys.executable, '-m', 'okdhp_jax.tools.predict', '--checkpoint',
       os.path.join(workdir, 'export'), '--image', 'data_prep/samples/mpii/005808361.jpg',
       '--box', '780,60,420,680', '--out', str(out)],
      cwd=ROOT, capture_output=True, text=True, timeout=300, env=clean_env())
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'head_top' in result.stdout and out.exists()
  from PIL import Image
  assert Image.open(out).size == Image.open(
      os.path.join(ROOT, 'data_prep/samples/mpii/005808361.jpg')).size


def test_missing_dataset_says_how_to_build_it(tmp_path):
  result = run_main(str(tmp_path / 'run'), config='configs/hg4.py',
                    records=str(tmp_path / 'nowhere'), timeout=120)
  assert result.returncode == 1
  assert 'data_prep.mpii' in result.stderr and 'configs/quickstart.py' in result.stderr
  assert 'Traceback' not in result.stderr
  # One line for the user; the traceback is kept in the workdir.
  assert f'(full traceback: {tmp_path / "run" / "error_traceback.txt"})' in result.stderr
  assert 'Traceback' in (tmp_path / 'run' / 'error_traceback.txt').read_text()
  # Said before JAX and TensorFlow load (seconds), not after building the experiment.
  assert 'JAX process' not in result.stderr


def test_a_misspelt_config_field_is_one_line(tmp_path):
  result = run_main(str(tmp_path / 'w'), '--config.train.batchsize=8', timeout=120)
  assert result.returncode == 2
  assert one_error_line(result.stderr) == (
      'error: --config.train.batchsize: the config has no field \'batchsize\'. Did you mean '
      '"batch_size" instead of "batchsize"?')
  renamed = run_main(str(tmp_path / 'w'), '--config.trainer=fpd', timeout=120)
  assert renamed.returncode == 2
  assert one_error_line(renamed.stderr) == (
      'error: --config.trainer: the key is --config.method now')
  missing = run_main(str(tmp_path / 'w'), config='configs/no_such_config.py', timeout=120)
  assert missing.returncode == 2
  assert 'configs/no_such_config.py' in one_error_line(missing.stderr)
