"""The training loop: a method registered here trains through it; NaN stop; progress line."""

from __future__ import annotations

import glob
import os
import signal

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import default
from okdhp_jax import experiment as experiment_lib
from okdhp_jax import methods, progress, sharding
from okdhp_jax.training import guards
from okdhp_jax.methods.losses import joints_mse

from main_runs import tiny_synthetic_config

TOY = 'toy_scaled_last_stack'
TOY_SCALE = 0.5


@methods.register(TOY)
class ScaledLastStack(methods.Method):
  """A method the loop has never heard of: branch 0's last stack vs GT, times a frozen scale."""

  def frozen_state(self, mesh):
    return {'scale': jax.device_put(jnp.float32(TOY_SCALE), sharding.replicated(mesh))}

  def loss(self, outputs, targets, *, images, epoch, frozen):
    del images, epoch
    mse = joints_mse(outputs.branch_heatmaps[0], targets.heatmaps, targets.weight)
    total = frozen['scale'] * mse
    return total, {'loss': total, 'toy/mse': mse}


def toy_config(tmp_path):
  """Two steps (16 generated figures, batch 8, one epoch) of a tiny two-branch network."""
  config = tiny_synthetic_config(str(tmp_path), num_train=16)
  config.method = TOY
  config.train.update(num_epochs=1, log_every_steps=1, num_images_to_draw=0)
  config.eval.batch_size = 8
  return config


def logged_scalars(workdir, tag):
  """{step: value} of one TensorBoard scalar the loop wrote."""
  import tensorflow as tf
  from tensorboard.backend.event_processing import event_accumulator
  (path,) = glob.glob(f'{workdir}/events.out.tfevents.*')
  events = event_accumulator.EventAccumulator(path, size_guidance={event_accumulator.TENSORS: 0})
  events.Reload()
  return {e.step: float(tf.make_ndarray(e.tensor_proto)) for e in events.Tensors(tag)}


@pytest.mark.slow  # a real (tiny) run: compiles the step and the predict step.
def test_a_method_registered_in_a_test_trains_through_the_real_loop(tmp_path):
  config = toy_config(tmp_path)
  workdir = str(tmp_path / 'run')
  experiment = experiment_lib.Experiment(config, workdir)
  assert isinstance(experiment.method, ScaledLastStack) and experiment.total_steps == 2
  initial = jax.device_get(experiment.state.params)
  run = experiment_lib.train_and_evaluate(experiment)

  assert experiment.step == 2 and run.history[-1].step == 2
  assert set(run.history[-1].metrics) == {'branch_0', 'branch_1', 'ensemble'}
  # The method's own metrics are what the loop logged, and its frozen state reached the loss.
  mse, loss = logged_scalars(workdir, 'train/toy/mse'), logged_scalars(workdir, 'train/loss')
  assert sorted(mse) == sorted(loss) == [1, 2]
  np.testing.assert_allclose([loss[s] for s in (1, 2)], [TOY_SCALE * mse[s] for s in (1, 2)],
                             rtol=1e-6)
  # Training speed between evaluations, and how much of it the input pipeline held up.
  wait = logged_scalars(workdir, 'perf/input_wait_fraction')
  # Step 1 compiles: the first timed window ends at step 2.
  assert sorted(wait) == [2] and 0.0 <= wait[2] <= 1.0
  assert all(v > 0 for v in logged_scalars(workdir, 'perf/train_img_per_sec').values())
  # The curves for people who do not open TensorBoard.
  from PIL import Image
  assert Image.open(f'{workdir}/training_curves.png').size == (1100, 400)
  assert [step for step, _ in run.train_loss] == [1, 2]
  # Only what the toy loss reads was trained: branch 1's private stack got no gradient.
  final = jax.device_get(experiment.state.params)
  assert not np.allclose(final['branch_0_stack_0']['score']['kernel'],
                         initial['branch_0_stack_0']['score']['kernel'])
  for a, b in zip(jax.tree.leaves(final['branch_1_stack_0']),
                  jax.tree.leaves(initial['branch_1_stack_0'])):
    np.testing.assert_array_equal(a, b)


@pytest.mark.slow  # compiles a (tiny) train step.
def test_a_run_wrong_from_its_first_update_stops_before_any_checkpoint(tmp_path):
  """lr 1e6 from scratch: the loss is already huge at the first log step and keeps growing, so
  only the untrained network's loss (the first step's, always checked) can expose it."""
  config = tiny_synthetic_config(str(tmp_path), num_train=48)  # 6 steps
  config.train.update(num_epochs=1, log_every_steps=3, checkpoint_every_steps=100,
                      num_images_to_draw=0)
  config.optim.learning_rate = 1e6
  experiment = experiment_lib.Experiment(config, str(tmp_path / 'run'))
  with pytest.raises((guards.DivergenceError, guards.NonFiniteLossError),
                     match='at step 3.*no checkpoint was written yet'):
    experiment_lib.train_and_evaluate(experiment)
  assert experiment.manager.all_steps() == []
  assert not os.path.exists(tmp_path / 'run' / 'export')


def test_unknown_method_names_the_key_and_the_choices():
  config = default.get_config('runlocal')
  config.method = 'okddip'
  with pytest.raises(ValueError, match=r"config.method='okddip'.*'fpd'.*'okdhp'"):
    methods.create(config, num_joints=16)


def test_a_name_cannot_be_registered_twice():
  with pytest.raises(ValueError, match='already registered'):
    @methods.register('okdhp')
    class Another(methods.Method):  # pylint: disable=unused-variable
      pass


def test_non_finite_loss_stops_with_the_last_good_checkpoint():
  guard = guards.LossGuard(factor=100.0)
  scalars = {'loss': float('nan'), 'kl': 0.5, 'grad_norm': float('inf')}
  with pytest.raises(guards.NonFiniteLossError) as error:
    guard.check(scalars, step=120, last_good_step=100, checkpoint_dir='/w/checkpoints')
  message = str(error.value)
  assert 'step 120' in message and 'grad_norm' in message and 'loss' in message
  assert 'step 100' in message and '/w/checkpoints' in message
  with pytest.raises(guards.NonFiniteLossError, match='no checkpoint was written yet'):
    guard.check(scalars, step=3, last_good_step=None, checkpoint_dir='/w/checkpoints')


def test_divergence_is_caught_before_inf_against_the_running_median():
  """A learning rate raised on resume: loss 2e17, finite, caught at its first check."""
  guard = guards.LossGuard(factor=100.0, window=20, history=[2e-3, 1.8e-3, 1.9e-3, 1.7e-3])
  guard.check({'loss': 1.6e-3}, step=10, last_good_step=9, checkpoint_dir='/w')
  guard.check({'loss': 0.1}, step=11, last_good_step=9, checkpoint_dir='/w')  # 55x: allowed.
  with pytest.raises(guards.DivergenceError) as error:
    guard.check({'loss': 2e17}, step=12, last_good_step=11, checkpoint_dir='/w/checkpoints')
  message = str(error.value)
  assert 'step 12' in message and '2e+17' in message and 'divergence_factor=100' in message
  assert 'last good checkpoint is step 11' in message
  # Off with factor 0; nothing to judge against without a history.
  guards.LossGuard(factor=0.0, history=[1e-3] * 10).check({'loss': 1e9}, 1, None, '/w')
  guards.LossGuard(factor=100.0).check({'loss': 1e9}, 1, None, '/w')


def test_a_short_history_judges_against_its_largest_loss():
  """Under min_history losses (a run just started, or resumed early): losses falling 250x are
  no alarm, a loss 100x the largest seen is (a resumed run used to save a step at loss 7.7e12)."""
  falling = guards.LossGuard(factor=100.0, min_history=5)
  for step, loss in enumerate((0.5, 0.05, 4e-3, 2e-3), 1):  # a healthy start, 250x lower
    falling.check({'loss': loss}, step, None, '/w')
  resumed = guards.LossGuard(factor=100.0, min_history=5, history=[0.3, 0.2, 0.17])
  with pytest.raises(guards.DivergenceError) as error:
    resumed.check({'loss': 7.7e12}, 40, 33, '/w/checkpoints')
  assert 'the largest 0.3 of the last 3 checked losses' in str(error.value)
  assert 'last good checkpoint is step 33' in str(error.value)


def test_sigterm_sets_the_flag_and_the_old_handler_comes_back():
  previous = signal.getsignal(signal.SIGTERM)
  watch = guards.PreemptionWatch()
  assert not watch.should_stop(1)
  os.kill(os.getpid(), signal.SIGTERM)
  assert watch.should_stop(2)
  watch.close()
  assert signal.getsignal(signal.SIGTERM) is previous


def test_progress_line_reports_rate_and_eta():
  line = progress.ProgressLine(total=100, images_per_unit=16, start=0)
  line.start_time -= 10.0  # pretend 10 s passed for 20 steps: 2 steps/s, 32 img/s.
  text = line(20)
  assert text.startswith('step 20/100 (20.0%)')
  assert '32.0 img/s' in text and 'ETA 00:00:40' in text
  people = progress.ProgressLine(total=50, images_per_unit=1, label='eval')
  people.start_time -= 5.0  # 10 people in 5 s: 2 img/s, 40 left.
  assert people(10) == 'eval 10/50 (20.0%) | 2.0 img/s | ETA 00:00:20'


@pytest.mark.slow  # a real (tiny) run: compiles the step and the predict step.
def test_profile_traces_the_steps_after_the_first_evaluation(tmp_path):
  """Two epochs of two steps, evaluated after each: steps 3 and 4 are traced."""
  config = toy_config(tmp_path)
  config.train.update(num_epochs=2, profile=2)
  workdir = str(tmp_path / 'run')
  experiment = experiment_lib.Experiment(config, workdir)
  assert experiment.total_steps == 4
  experiment_lib.train_and_evaluate(experiment)
  assert glob.glob(f'{workdir}/plugins/profile/*/*.xplane.pb')
  assert sorted(logged_scalars(workdir, 'steps_per_sec')) == [2, 4]  # clu's, per evaluation.
