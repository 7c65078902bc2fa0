"""`--mode export`: weights and branch always come from one evaluated checkpoint."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from configs import default
from okdhp_jax.experiment import Evaluation, Experiment, RunProgress, export_trained
from okdhp_jax.experiment.export import choose_branch, step_to_export
from okdhp_jax.export import store

from main_runs import tiny_synthetic_config


def evaluation(step, branch_0, branch_1):
  return Evaluation(step=step, metrics={'branch_0': {'Mean': branch_0},
                                        'branch_1': {'Mean': branch_1},
                                        'ensemble': {'Mean': 99.0}})


def test_which_step_and_branch_without_a_model():
  config = default.get_config('runlocal')  # three branches
  progress = RunProgress(best_step=10,
                         history=[evaluation(10, 80.0, 90.0), evaluation(20, 70.0, 60.0)])
  assert step_to_export(config, progress, latest_step=30) == 10
  config.export.checkpoint = 'latest'
  assert step_to_export(config, progress, latest_step=30) == 30
  assert choose_branch(config, progress.history[0].metrics, 10) == 1
  assert choose_branch(config, progress.history[1].metrics, 20) == 0
  config.export.branch = 2
  assert choose_branch(config, None, 30) == 2
  config.export.branch = 3
  with pytest.raises(ValueError, match='config.export.branch=3 is out of range'):
    choose_branch(config, None, 30)
  config.export.checkpoint = 'best'
  with pytest.raises(ValueError, match="no checkpoint has been evaluated.*'latest'"):
    step_to_export(config, RunProgress(), latest_step=5)


@pytest.fixture(scope='module')
def workdir_with_three_checkpoints(tmp_path_factory):
  """Step 10 scored best (branch 1 at 90), step 20 worse (branch 0 at 70), step 30 unevaluated.

  Each step's parameters differ (initial + step), so an export shows which step it came from.
  """
  tmp = tmp_path_factory.mktemp('export')
  config = tiny_synthetic_config(str(tmp), num_train=8)
  workdir = str(tmp / 'run')
  experiment = Experiment(config, workdir)
  initial = experiment.state
  progress = RunProgress()
  for step, scores in ((10, (80.0, 90.0)), (20, (70.0, 60.0)), (30, None)):
    if scores:
      progress.record(evaluation(step, *scores), best_metric=max(scores),
                      best_branch=scores.index(max(scores)))
    experiment.state = initial.replace(
        step=initial.step + step, params=jax.tree.map(lambda p, s=step: p + s, initial.params))
    experiment.save(step, progress, metric=max(scores) if scores else None)
  experiment.wait_for_saves()
  assert progress.best_step == 10
  return config, workdir, jax.device_get(initial.params)


def export(config, workdir, tmp_path, **overrides):
  config = config.copy_and_resolve_references()
  config.export.update(overrides)
  description = export_trained(Experiment(config, workdir), export_dir=str(tmp_path))
  variables, saved = store.load_exported(str(tmp_path))
  for key in ('branch', 'step', 'checkpoint', 'metrics', 'num_joints', 'dataset',
              'max_decode_reduction'):
    assert saved[key] == description[key], key  # model.json says what was exported.
  return description, variables


@pytest.mark.slow
def test_best_checkpoint_by_default_with_its_own_best_branch(workdir_with_three_checkpoints,
                                                              tmp_path):
  config, workdir, initial = workdir_with_three_checkpoints
  description, variables = export(config, workdir, tmp_path)
  assert (description['step'], description['branch'], description['checkpoint']) == (10, 1, 'best')
  assert description['metrics'] == {'Mean': 90.0}
  np.testing.assert_allclose(variables['params']['stack_0']['score']['kernel'],
                             initial['branch_1_stack_0']['score']['kernel'] + 10, rtol=1e-6)


@pytest.mark.slow
def test_latest_needs_an_evaluation_or_a_branch(workdir_with_three_checkpoints, tmp_path):
  config, workdir, initial = workdir_with_three_checkpoints
  with pytest.raises(ValueError, match='step 30 was not evaluated.*config.export.branch'):
    export(config, workdir, tmp_path / 'a', checkpoint='latest')
  description, variables = export(config, workdir, tmp_path / 'b', checkpoint='latest', branch=0)
  assert (description['step'], description['branch'], description['metrics']) == (30, 0, {})
  np.testing.assert_allclose(variables['params']['stack_0']['score']['kernel'],
                             initial['branch_0_stack_0']['score']['kernel'] + 30, rtol=1e-6)


@pytest.mark.slow
def test_bad_checkpoint_choice_names_the_key(workdir_with_three_checkpoints, tmp_path):
  config, workdir, _ = workdir_with_three_checkpoints
  with pytest.raises(ValueError, match="config.export.checkpoint='newest'"):
    export(config, workdir, tmp_path, checkpoint='newest')
