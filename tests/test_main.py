"""The program users run, end to end, as subprocesses: train, eval, export, predict, resume."""

from __future__ import annotations

import glob
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from main_runs import ROOT, TINY, clean_env, main_command, restored_params, run_main

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
  assert description['model']['branch_stacks'] == [2]  # 1 shared + 1 private stack
  assert description['model']['num_shared_stacks'] == 0
  assert glob.glob(os.path.join(workdir, 'events.out.tfevents.*'))
  assert glob.glob(os.path.join(workdir, 'samples', '*.png'))
  progress = json.load(open(os.path.join(workdir, 'eval_results.json')))
  assert progress['best_branch'] in (0, 1)


def test_eval_mode_writes_pred_mat_for_the_official_tool(trained):
  workdir, _ = trained
  result = run_main(workdir, '--mode=eval', *TINY)
  assert result.returncode == 0, result.stderr[-4000:]
  from okdhp_jax.evaluation import pckh
  preds = pckh.load_pred_mat(os.path.join(workdir, 'eval', 'pred.mat'))
  assert preds.shape == (37, 16, 2) and np.isfinite(preds).all()  # 5 people + 32 figures.
  metrics = json.load(open(os.path.join(workdir, 'eval', 'metrics.json')))
  assert metrics['scored_on'].startswith('held-out generated figures')
  assert set(metrics['subsets']['real MPII people (5, also in the training set: a smoke test)']) \
      == {'branch_0', 'branch_1', 'ensemble'}
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


def test_killed_run_resumes_to_the_same_parameters(trained, tmp_path):
  """A real SIGKILL mid-run, a restart, and the same end state as the uninterrupted run."""
  straight, _ = trained
  records = os.path.join(os.path.dirname(straight), 'records')
  interrupted = str(tmp_path / 'interrupted')
  command = main_command(interrupted, *TINY, records=records)
  process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, env=clean_env())
  deadline = time.time() + 300
  checkpoint_dir = os.path.join(interrupted, 'checkpoints')
  while time.time() < deadline and process.poll() is None:
    done = [d for d in glob.glob(os.path.join(checkpoint_dir, '[0-9]*')) if d[-1].isdigit()]
    if any(int(os.path.basename(d)) >= 10 for d in done):
      break
    time.sleep(0.2)
  assert process.poll() is None, 'the run ended before it could be interrupted'
  process.send_signal(signal.SIGKILL)
  process.wait()

  result = run_main(interrupted, *TINY, records=records)
  assert result.returncode == 0, result.stderr[-4000:]
  assert 'Restored checkpoint' in result.stderr
  step_a, params_a = restored_params(straight)
  step_b, params_b = restored_params(interrupted)
  assert step_a == step_b == 33
  assert params_a.keys() == params_b.keys()
  for key in params_a:
    np.testing.assert_allclose(params_b[key], params_a[key], rtol=1e-6, atol=1e-7, err_msg=key)
