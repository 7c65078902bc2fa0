"""Mixed precision: 'auto' picks bfloat16 on GPU/TPU only, and bfloat16 steps track float32 ones."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import default
from okdhp_jax import methods, sharding
from okdhp_jax.models import build_model
from okdhp_jax.models.factory import resolve_compute_dtype
from okdhp_jax.training import state as state_lib
from okdhp_jax.training import step as step_lib

NUM_JOINTS = 16
STEPS = 3
# bfloat16 keeps 8 mantissa bits (~0.4 % per op). Measured on this network over 3 steps: loss
# within 0.09 % (2-core Xeon) and 0.14 % (2-core AMD EPYC); gradient norm within 2.6 % (Xeon)
# and 5.3 % (EPYC, in a process with the suite's 8 host devices; 4.2 % with one). The gradient
# norm after an update is the sensitive one: Adam's first update moves every weight by the full
# learning rate whatever its gradient's size, so rounding that flips the sign of a near-zero
# gradient component moves a weight by a whole step. float32 alone shows it: its step-1
# gradient norm was 0.5846 in a 1-device process and 0.5682 with 8 host devices (2.8 % apart,
# same program, other thread partitions; 2026-11-27).
LOSS_RTOL = 0.02
GRAD_NORM_RTOL = 0.08


def test_auto_is_bfloat16_on_accelerators_and_float32_on_cpu():
  assert resolve_compute_dtype('auto', 'gpu') == 'bfloat16'
  assert resolve_compute_dtype('auto', 'tpu') == 'bfloat16'
  assert resolve_compute_dtype('auto', 'cpu') == 'float32'
  assert resolve_compute_dtype('float16', 'tpu') == 'float16'  # an explicit choice stands.
  assert default.get_config().model.dtype == 'auto'
  assert resolve_compute_dtype('auto') == 'float32'  # these tests run on the CPU.


def _config(dtype: str):
  config = default.get_config('runlocal')  # 64x64 input, 16x16 heatmaps, batch 8.
  config.model.hourglass.update(features=16, depth=1, num_shared_stacks=0, branch_stacks=(1, 1))
  config.model.update(fau_hidden=8, dtype=dtype)
  # tests/test_training_step.py's tiny network and ramp: in one run of the suite the float32
  # step compiles once for both modules (the persistent compilation cache is shared).
  config.loss.kd_ramp_epochs = 1.0
  return config


def _run(dtype: str):
  config = _config(dtype)
  mesh = sharding.make_mesh(1)
  model = build_model(config.model, NUM_JOINTS, config.data.input_size)
  state = state_lib.create_train_state(config, model, jax.random.key(0, impl='unsafe_rbg'),
                                       mesh=mesh, steps_per_epoch=4)
  method = methods.create(config, num_joints=NUM_JOINTS)
  train_step = step_lib.make_train_step(config, model, method, mesh=mesh, steps_per_epoch=4,
                                        num_joints=NUM_JOINTS)
  history = []
  for i in range(STEPS):
    rng = np.random.default_rng(i)
    batch = {'image': rng.integers(0, 256, (8, 64, 64, 3), np.uint8),
             'joints': rng.uniform(4, 60, size=(8, NUM_JOINTS, 2)).astype(np.float32),
             'joints_vis': np.ones((8, NUM_JOINTS), np.float32)}
    state, metrics = train_step(state, None, batch)
    history.append(jax.device_get(metrics))
  return jax.device_get(state), history


@pytest.fixture(scope='module')
def runs():
  """3 steps in each dtype (~30 s of compiling on 2 cores: the tests using it are slow)."""
  return _run('float32'), _run('bfloat16')


@pytest.mark.slow
def test_bfloat16_steps_track_float32(runs):
  (_, f32), (_, bf16) = runs
  for step, (a, b) in enumerate(zip(f32, bf16)):
    np.testing.assert_allclose(b['loss'], a['loss'], rtol=LOSS_RTOL, err_msg=f'step {step}')
    np.testing.assert_allclose(b['grad_norm'], a['grad_norm'], rtol=GRAD_NORM_RTOL,
                               err_msg=f'step {step}')


@pytest.mark.slow
def test_bfloat16_keeps_state_and_losses_in_float32(runs):
  _, (state, history) = runs
  for tree in (state.params, state.batch_stats, state.opt_state):
    dtypes = {leaf.dtype for leaf in jax.tree.leaves(tree) if jnp.issubdtype(leaf.dtype,
                                                                              jnp.floating)}
    assert dtypes == {np.dtype(np.float32)}, dtypes
  assert all(np.asarray(value).dtype == np.float32 for value in history[-1].values())
