"""The train step: 8 fake devices give what 1 device gives; no retracing; the baseline path.

The 8-device runs compile what a GPU compiles (`config.model.hourglass.fuse_branches`,
`.pointwise_matmul` and `.remat` 'always': the branches as one vmapped computation, 1x1 convs
as matrix products, bottlenecks that recompute their convolutions' inputs; `config.train
.flat_state` 'always': parameters, statistics and Adam's moments as one vector each between
steps), and the 1-device runs none of these: the comparisons hold that step under
`shard_map`, with BatchNorm statistics across the devices, to the plain per-branch network on
one device (tests/test_models_gpu_choices.py holds the network alone, with stacks of several
levels)."""

from __future__ import annotations

import os

# 8 fake CPU devices; must be set before jax is imported anywhere in this process.
os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '')
                           + ' --xla_force_host_platform_device_count=8')

import jax  # pylint: disable=g-import-not-at-top
import numpy as np  # pylint: disable=g-import-not-at-top
import pytest  # pylint: disable=g-import-not-at-top

from configs import default  # pylint: disable=g-import-not-at-top
from okdhp_jax import methods, sharding  # pylint: disable=g-import-not-at-top
from okdhp_jax.models import build_model  # pylint: disable=g-import-not-at-top
from okdhp_jax.training import flat_state  # pylint: disable=g-import-not-at-top
from okdhp_jax.training import state as state_lib  # pylint: disable=g-import-not-at-top
from okdhp_jax.training import step as step_lib  # pylint: disable=g-import-not-at-top

pytestmark = pytest.mark.slow  # minutes on 2 cores: not in the fast tier.

NUM_JOINTS = 16
STEPS_PER_EPOCH = 4
# float32: the same math on 1 and 8 devices, only the order of reductions differs.
RTOL, ATOL = 1e-5, 1e-6
# float64: rounding is 2^29 times finer, so the comparison can be nearly exact.
RTOL_64 = 1e-12
GRAD_RTOL_64 = 1e-11


def tiny_config(plain: bool = False, dtype: str = 'float32', gpu_choices: str = 'never'):
  config = default.get_config('runlocal')  # 64x64 input, 16x16 heatmaps, sigma 1, batch 8.
  hourglass = config.model.hourglass
  hourglass.fuse_branches = hourglass.pointwise_matmul = hourglass.remat = gpu_choices
  config.train.flat_state = gpu_choices
  hourglass.features = 16
  hourglass.depth = 1  # 64x64 input -> 16x16 maps -> one 8x8 level: compiles fast.
  config.model.fau_hidden = 8
  config.model.dtype = config.model.param_dtype = dtype
  if plain:
    hourglass.num_shared_stacks, hourglass.branch_stacks, config.model.fau = 0, (1,), 'none'
  else:
    hourglass.num_shared_stacks, hourglass.branch_stacks = 0, (1, 1)
  config.loss.kd_ramp_epochs = 1.0
  return config


def make_batch(seed: int, batch_size: int = 8, dtype=np.float32):
  rng = np.random.default_rng(seed)
  return {
      'image': rng.integers(0, 256, (batch_size, 64, 64, 3), np.uint8),
      'joints': rng.uniform(-4, 68, size=(batch_size, NUM_JOINTS, 2)).astype(dtype),
      'joints_vis': (rng.uniform(size=(batch_size, NUM_JOINTS)) > 0.2).astype(dtype),
  }


def run_steps(config, num_devices: int, num_steps: int, batches=None):
  """`num_steps` steps from the same init (on `batches`, default make_batch(step)); returns
  [(state, metrics)] (each state per array, on the host) and the jitted step."""
  mesh = sharding.make_mesh(num_devices)
  model = build_model(config.model, NUM_JOINTS, config.data.input_size)
  # An 'rbg' key: its initialisers compile in seconds where threefry takes ~30 s on CPU.
  init_key = jax.random.key(0, impl='unsafe_rbg')
  state = flat_state.arranged_for(config.train, state_lib.create_train_state(
      config, model, init_key, mesh=mesh, steps_per_epoch=STEPS_PER_EPOCH), mesh)
  method = methods.create(config, num_joints=NUM_JOINTS)
  train_step = step_lib.make_train_step(config, model, method, mesh=mesh,
                                        steps_per_epoch=STEPS_PER_EPOCH, num_joints=NUM_JOINTS)
  history = []
  for i in range(num_steps):
    batch = make_batch(i, dtype=np.dtype(config.model.dtype)) if batches is None else batches[i]
    state, metrics = train_step(state, None, batch)
    history.append((jax.device_get(state).per_array(), jax.device_get(metrics)))
  return history, train_step


def _check_devices():
  assert jax.device_count() == 8, (
      f'{jax.device_count()} devices: XLA_FLAGS was set after the jax backend started (a test '
      'module imported before this one computed something at import time)')


@pytest.fixture(scope='module')
def okdhp_runs():
  _check_devices()
  eight, step8 = run_steps(tiny_config(gpu_choices='always'), 8, 3)
  one, _ = run_steps(tiny_config(), 1, 1)
  return eight, one, step8


@pytest.fixture(scope='module')
def float64_runs():
  """One step on 8 devices and on 1, in float64 (64-bit JAX only inside this fixture)."""
  _check_devices()
  jax.config.update('jax_enable_x64', True)
  try:
    eight, _ = run_steps(tiny_config(dtype='float64', gpu_choices='always'), 8, 1)
    one, _ = run_steps(tiny_config(dtype='float64'), 1, 1)
  finally:
    jax.config.update('jax_enable_x64', False)
  return eight[0], one[0]


def _gradients(state):
  # Adam's first moment after one step is (1 - b1) * gradient = 0.1 * gradient.
  return jax.tree.map(lambda m: m / 0.1, state.opt_state[0].mu)


def test_eight_devices_match_one_in_float32(okdhp_runs):
  """Same global batch, same init: 8 devices give 1 device's losses and BatchNorm statistics.

  The gradients are compared in float64 (next test): in float32 the CPU convolutions pick
  other kernels for one example per device than for eight, and the BatchNorm backward pass
  magnifies that rounding to 1e-4 of grad_norm on some CPUs and 5e-6 on others.
  """
  eight, one, _ = okdhp_runs
  (state8, metrics8), (state1, metrics1) = eight[0], one[0]
  for key in ('loss', 'mse_stacks', 'kl', 'mse_ensemble', 'mse/branch_0', 'mse/branch_1',
              'fau_weight/branch_0'):
    np.testing.assert_allclose(metrics8[key], metrics1[key], rtol=RTOL, err_msg=key)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=RTOL, atol=ATOL),
               state8.batch_stats, state1.batch_stats)
  # The step really moved the parameters (a kernel: some biases get no gradient, see
  # tests/test_models_conv_bias.py).
  def kernel(state):
    return state.params['stem']['conv1']['kernel']
  assert not np.allclose(kernel(state8), kernel(eight[1][0]))


def test_eight_devices_match_one_in_float64(float64_runs):
  """The same step, with rounding out of the way: everything agrees to float64 noise.

  Stated tolerances [measured on a 2-core Xeon]: metrics and BatchNorm statistics rtol 1e-12
  [4e-16 and 4e-14]; each gradient leaf within 1e-11 of the network's largest |gradient|
  [1.3e-14]; new parameters rtol 1e-12 plus atol 1e-14 [3e-15 on a bias that started at 0]
  wherever the gradient is large enough to fix the sign of Adam's first update. A real
  sharding bug (a per-device BatchNorm mean, a loss averaged per device) shows up at 1e-2 or
  more.
  """
  (state8, metrics8), (state1, metrics1) = float64_runs
  assert jax.tree.leaves(state8.params)[0].dtype == np.float64
  for key in ('loss', 'mse_stacks', 'kl', 'mse_ensemble', 'mse/branch_0', 'mse/branch_1',
              'fau_weight/branch_0', 'grad_norm'):
    np.testing.assert_allclose(metrics8[key], metrics1[key], rtol=RTOL_64, err_msg=key)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=RTOL_64, atol=1e-14),
               state8.batch_stats, state1.batch_stats)

  grads8, grads1 = _gradients(state8), _gradients(state1)
  # Rounding comes through the whole backward pass, so it scales with the network's largest
  # gradient, not with each leaf's own (some leaves are almost exactly zero).
  tolerance = GRAD_RTOL_64 * max(float(np.abs(g).max()) for g in jax.tree.leaves(grads1))

  def check_leaf(g8, g1, p8, p1):
    np.testing.assert_allclose(g8, g1, rtol=0, atol=tolerance)
    determined = np.abs(g1) > 10 * tolerance
    np.testing.assert_allclose(p8[determined], p1[determined], rtol=RTOL_64, atol=1e-14)
    return int(determined.sum())

  counts = jax.tree.map(check_leaf, grads8, grads1, state8.params, state1.params)
  num_params = sum(np.size(p) for p in jax.tree.leaves(state1.params))
  assert sum(jax.tree.leaves(counts)) > 0.9 * num_params  # nearly all parameters compared.


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
    step_lib.make_train_step(config, model, methods.create(config, num_joints=NUM_JOINTS),
                             mesh=sharding.make_mesh(8), steps_per_epoch=4,
                             num_joints=NUM_JOINTS)
