"""Across devices: BatchNorm statistics over the global batch or over each device's share, and
gradients that cross the devices in float32, on 8 fake CPU devices."""

from __future__ import annotations

import os

# 8 fake CPU devices; must be set before jax is imported anywhere in this process.
os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '')
                           + ' --xla_force_host_platform_device_count=8')

import re  # pylint: disable=g-import-not-at-top

import jax  # pylint: disable=g-import-not-at-top
import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
import numpy as np  # pylint: disable=g-import-not-at-top
import pytest  # pylint: disable=g-import-not-at-top

from okdhp_jax import methods, sharding  # pylint: disable=g-import-not-at-top
from okdhp_jax.models import build_model  # pylint: disable=g-import-not-at-top
from okdhp_jax.training import state as state_lib  # pylint: disable=g-import-not-at-top
from okdhp_jax.training import step as step_lib  # pylint: disable=g-import-not-at-top
from test_training_step import (NUM_JOINTS, STEPS_PER_EPOCH, make_batch,  # pylint: disable=g-import-not-at-top
                                run_steps, tiny_config)

pytestmark = pytest.mark.slow  # compiles for 8 devices: not in the fast tier.

DEVICES = 8
ROWS_PER_DEVICE = 2


def _gradients(state):
  # Adam's first moment after one step is (1 - b1) * gradient = 0.1 * gradient.
  return jax.tree.map(lambda m: np.asarray(m, np.float64) / 0.1, state.opt_state[0].mu)


def state_and_step(config, mesh):
  """The initial train state and the jitted step of `config` on `mesh`."""
  model = build_model(config.model, NUM_JOINTS, config.data.input_size)
  state = state_lib.create_train_state(config, model, jax.random.key(0, impl='unsafe_rbg'),
                                       mesh=mesh, steps_per_epoch=STEPS_PER_EPOCH)
  train_step = step_lib.make_train_step(config, model, methods.create(config, num_joints=16),
                                        mesh=mesh, steps_per_epoch=STEPS_PER_EPOCH,
                                        num_joints=NUM_JOINTS)
  return state, train_step


def per_device_run_and_reference(dtype: str):
  """One step with per-device statistics on 8 devices, and its reference: the same step on
  one device, once per device's rows, averaged (gradients, losses, running statistics)."""
  config = tiny_config(plain=True, dtype=dtype)
  config.train.batch_norm_stats = 'per_device'
  config.train.flat_state = 'always'  # the running averages averaged as one vector, as on a GPU.
  config.train.batch_size = DEVICES * ROWS_PER_DEVICE
  batch = make_batch(0, config.train.batch_size, dtype=np.dtype(dtype))
  (eight,), _ = run_steps(config, DEVICES, 1, batches=[batch])

  alone = tiny_config(plain=True, dtype=dtype)
  alone.train.batch_size = ROWS_PER_DEVICE
  initial, train_step = state_and_step(alone, sharding.make_mesh(1))
  singles = []
  for d in range(DEVICES):
    rows = jax.tree.map(lambda a, d=d: a[d * ROWS_PER_DEVICE:(d + 1) * ROWS_PER_DEVICE], batch)
    state = jax.tree.map(jnp.copy, initial)  # the step donates its input state.
    singles.append(jax.device_get(train_step(state, None, rows)))
  return eight, singles


@pytest.fixture(scope='module')
def float64_per_device():
  jax.config.update('jax_enable_x64', True)
  try:
    return per_device_run_and_reference('float64')
  finally:
    jax.config.update('jax_enable_x64', False)


def test_per_device_statistics_are_each_devices_own(float64_per_device):
  """'per_device' trains as 8 one-device steps on each device's rows would, averaged: the
  released code's DataParallel statistics. Tolerances as test_training_step's float64 ones.
  Statistics of the global batch would miss them by far more: the mean of 8 variances of 2
  rows each is not the variance of the 16 rows, and the losses and gradients follow."""
  (state8, metrics8), singles = float64_per_device
  np.testing.assert_allclose(metrics8['loss'], np.mean([m['loss'] for _, m in singles]),
                             rtol=1e-12)
  running = jax.tree.map(lambda *s: np.mean(s, axis=0), *[s.batch_stats for s, _ in singles])
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14),
               state8.batch_stats, running)
  grads = jax.tree.map(lambda *g: np.mean(g, axis=0), *[_gradients(s) for s, _ in singles])
  tolerance = 1e-11 * max(float(np.abs(g).max()) for g in jax.tree.leaves(grads))
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=0, atol=tolerance),
               _gradients(state8), grads)


def test_unknown_statistics_choice_names_the_key():
  config = tiny_config()
  config.train.batch_norm_stats = 'sync'
  model = build_model(config.model, NUM_JOINTS, config.data.input_size)
  with pytest.raises(ValueError, match='config.train.batch_norm_stats'):
    step_lib.make_train_step(config, model, methods.create(config, num_joints=NUM_JOINTS),
                             mesh=sharding.make_mesh(DEVICES), steps_per_epoch=STEPS_PER_EPOCH,
                             num_joints=NUM_JOINTS)


@pytest.mark.parametrize('stats', ['global', 'per_device'])
def test_every_collective_of_a_bfloat16_step_is_float32(stats):
  """What crosses the devices, read from the step as lowered (before the compiler runs):
  gradients, BatchNorm statistics and metrics, all in float32, in a bfloat16 network. A
  gradient cast to bfloat16 before its mean would show here as a bf16 all_reduce."""
  config = tiny_config(dtype='bfloat16')
  config.model.param_dtype = 'float32'
  config.train.batch_norm_stats = stats
  state, train_step = state_and_step(config, sharding.make_mesh(DEVICES))
  text = train_step.lower(state, None, make_batch(0)).as_text()
  # Each all_reduce's region names the element type it adds up; its result line, the shapes.
  reduced = re.findall(r'"stablehlo\.all_reduce".*\n\s*\^bb0\(([^)]*)\)(?:.*\n)*?\s*\}\) : '
                       r'\(([^)]*)\)', text)
  assert reduced, 'no all_reduce in the lowered step'
  element_types = set(re.findall(r'tensor<(\w+)>', ' '.join(args for args, _ in reduced)))
  assert element_types == {'f32'}, element_types
  # The 3x3 convolutions' kernel gradients are among them.
  assert any('tensor<3x3x' in shapes for _, shapes in reduced)
