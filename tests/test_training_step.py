"""The train step: 8 fake devices give what 1 device gives; no retracing; the baseline path."""

from __future__ import annotations

import os

# 8 fake CPU devices; must be set before jax is imported anywhere in this process.
os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '')
                           + ' --xla_force_host_platform_device_count=8')

import jax  # pylint: disable=g-import-not-at-top
import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
import numpy as np  # pylint: disable=g-import-not-at-top
import pytest  # pylint: disable=g-import-not-at-top

from configs import default  # pylint: disable=g-import-not-at-top
from okdhp_jax.models import build_model  # pylint: disable=g-import-not-at-top
from okdhp_jax.training import sharding, state as state_lib, step as step_lib  # pylint: disable=g-import-not-at-top

NUM_JOINTS = 16
STEPS_PER_EPOCH = 4
# Same math on 1 and 8 devices; only the order of float32 reductions differs.
RTOL, ATOL = 1e-5, 1e-6
GRAD_NORM_RTOL = 1e-4
GRAD_LEAF_RTOL = 1e-3


def tiny_config(plain: bool = False):
  config = default.get_config('runlocal')  # 64x64 input, 16x16 heatmaps, sigma 1, batch 8.
  config.model.features = 16
  config.model.depth = 1  # 64x64 input -> 16x16 maps -> one 8x8 level: compiles fast.
  config.model.fau_hidden = 8
  if plain:
    config.model.num_shared_stacks, config.model.branch_stacks, config.model.fau = 0, (1,), 'none'
  else:
    config.model.num_shared_stacks, config.model.branch_stacks = 0, (1, 1)
  config.loss.kd_ramp_epochs = 1.0
  return config


def make_batch(seed: int, batch_size: int = 8):
  rng = np.random.default_rng(seed)
  return {
      'image': rng.normal(size=(batch_size, 64, 64, 3)).astype(np.float32),
      'joints': rng.uniform(-4, 68, size=(batch_size, NUM_JOINTS, 2)).astype(np.float32),
      'joints_vis': (rng.uniform(size=(batch_size, NUM_JOINTS)) > 0.2).astype(np.float32),
  }


def run_steps(config, num_devices: int, num_steps: int, *, also_permuted: bool = False):
  """`num_steps` steps from the same init; returns [(state, metrics)] and the jitted step.

  With `also_permuted`, a last entry is one step on the first batch with its examples
  permuted: mathematically the same step, numerically the float32 noise floor.
  """
  mesh = sharding.make_mesh(num_devices)
  model = build_model(config.model, NUM_JOINTS, config.data.input_size)
  # An 'rbg' key: its initialisers compile in seconds where threefry takes ~30 s on CPU.
  init_key = jax.random.key(0, impl='unsafe_rbg')
  init = lambda: state_lib.create_train_state(config, model, init_key, mesh=mesh,
                                              steps_per_epoch=STEPS_PER_EPOCH)[0]
  train_step = step_lib.make_train_step(config, model, mesh=mesh,
                                        steps_per_epoch=STEPS_PER_EPOCH, num_joints=NUM_JOINTS)
  batches = [make_batch(i) for i in range(num_steps)]
  if also_permuted:
    order = np.array([3, 1, 0, 2, 7, 5, 6, 4])
    batches.append({k: v[order] for k, v in batches[0].items()})
  history, state = [], init()
  for i, batch in enumerate(batches):
    if also_permuted and i == num_steps:
      state = init()
    state, metrics = train_step(state, batch, jax.random.key(1))
    history.append((jax.device_get(state), jax.device_get(metrics)))
  return history, train_step


@pytest.fixture(scope='module')
def okdhp_runs():
  assert jax.device_count() == 8, (
      f'{jax.device_count()} devices: XLA_FLAGS was set after the jax backend started (a test '
      'module imported before this one computed something at import time)')
  config = tiny_config()
  eight, step8 = run_steps(config, 8, 3)
  one, _ = run_steps(config, 1, 1, also_permuted=True)
  return eight, one, step8


def _gradients(state):
  # Adam's first moment after one step is (1 - b1) * gradient = 0.1 * gradient.
  return jax.tree.map(lambda m: m / 0.1, state.opt_state[0].mu)


def test_eight_devices_match_one(okdhp_runs):
  """Same global batch, same init: 8 devices reproduce 1 device.

  Stated tolerances (measured on this CPU in brackets):
  - losses, metrics and BatchNorm statistics: rtol 1e-5;
  - grad_norm: rtol 1e-4 [5e-6];
  - each gradient leaf: within 1e-3 of that leaf's largest |gradient| plus 1e-5 of the
    network's largest [2e-4 of the leaf's on the stem conv; 1.3e-3 of the leaf's, i.e.
    9e-6 of the network's, on a small 8-element leaf]. With one example per device the CPU
    convolutions run other kernels than for a batch of 8, and the BatchNorm backward pass
    magnifies their rounding;
  - new parameters: rtol 1e-5 wherever the gradient exceeds 10x that tolerance, i.e. where
    the sign of Adam's first update (about lr * sign(g)) is determined; that covers most.
  """
  eight, one, _ = okdhp_runs
  (state8, metrics8), (state1, metrics1) = eight[0], one[0]
  for key in ('loss', 'mse_stacks', 'kl', 'mse_ensemble', 'mse/branch_0', 'mse/branch_1',
              'fau_weight/branch_0'):
    np.testing.assert_allclose(metrics8[key], metrics1[key], rtol=RTOL, err_msg=key)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=RTOL, atol=ATOL),
               state8.batch_stats, state1.batch_stats)
  np.testing.assert_allclose(metrics8['grad_norm'], metrics1['grad_norm'], rtol=GRAD_NORM_RTOL)

  grads8, grads1 = _gradients(state8), _gradients(state1)
  # Rounding errors come through the whole backward pass, so they scale with the network's
  # largest gradient as well as with the leaf's own (small or exactly-zero leaves).
  floor = 1e-5 * max(float(np.abs(g).max()) for g in jax.tree.leaves(grads1))

  def check_leaf(g8, g1, p8, p1):
    tolerance = GRAD_LEAF_RTOL * float(np.abs(g1).max()) + floor
    np.testing.assert_allclose(g8, g1, rtol=0, atol=tolerance)
    determined = np.abs(g1) > 10 * tolerance
    np.testing.assert_allclose(p8[determined], p1[determined], rtol=RTOL, atol=ATOL)
    return int(determined.sum())

  counts = jax.tree.map(check_leaf, grads8, grads1, state8.params, state1.params)
  num_params = sum(np.size(p) for p in jax.tree.leaves(state1.params))
  assert sum(jax.tree.leaves(counts)) > 0.5 * num_params  # most parameters were compared.
  # The step really moved the parameters.
  assert not np.allclose(jax.tree.leaves(state8.params)[0],
                         jax.tree.leaves(eight[1][0].params)[0])


def test_compiles_once(okdhp_runs):
  _, _, step8 = okdhp_runs
  assert step8._cache_size() == 1  # pylint: disable=protected-access


def test_metrics(okdhp_runs):
  eight, _, _ = okdhp_runs
  states, metrics = zip(*eight)
  assert [int(s.step) for s in states] == [1, 2, 3]
  m = metrics[0]
  for key in ('loss', 'mse_stacks', 'mse/branch_0', 'mse/branch_1', 'kl', 'mse_ensemble',
              'fau_weight/branch_0', 'fau_weight/branch_1', 'grad_norm', 'learning_rate'):
    assert key in m and np.isfinite(m[key]) and np.ndim(m[key]) == 0, key
  assert m['kl'] > 0 and m['mse_ensemble'] > 0
  np.testing.assert_allclose(m['fau_weight/branch_0'] + m['fau_weight/branch_1'], 1.0, rtol=1e-5)
  # runlocal: lr 1e-3, x0.1 at epoch 2 (step 8): unchanged over the first steps.
  np.testing.assert_allclose([x['learning_rate'] for x in metrics], [1e-3] * 3, rtol=1e-6)
  # KD ramp over 1 epoch of 4 steps: exp(-5 (1 - e)^2) at e = 0, 0.25, 0.5.
  np.testing.assert_allclose([x['kd_ramp'] for x in metrics],
                             np.exp(-5 * (1 - np.array([0, .25, .5]))**2), rtol=1e-5)


def test_plain_baseline_runs_through_the_same_step():
  (history, _) = run_steps(tiny_config(plain=True), 1, 1)
  _, metrics = history[0]
  assert metrics['kl'] == 0 and metrics['mse_ensemble'] == 0
  assert 'mse/branch_0' in metrics and 'fau_weight/branch_0' not in metrics
  np.testing.assert_allclose(metrics['loss'], metrics['mse_stacks'], rtol=1e-6)


def test_batch_not_divisible_names_config_key():
  config = tiny_config()
  config.train.batch_size = 12
  model = build_model(config.model, NUM_JOINTS, config.data.input_size)
  with pytest.raises(ValueError, match='config.train.batch_size'):
    step_lib.make_train_step(config, model, mesh=sharding.make_mesh(8), steps_per_epoch=4,
                             num_joints=NUM_JOINTS)
