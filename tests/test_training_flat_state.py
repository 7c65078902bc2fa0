"""The flat train state: the same arrays as the per-array state, the same Adam update, the
same checkpoint, and the platforms that choose it.

The train step on the flat state is held to the per-array step by tests/test_training_step.py
(its 8-device runs keep the state flat, its 1-device runs per array; float32 and float64) and
tests/test_training_batch_norm_stats.py (per-device statistics averaged as one vector)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from okdhp_jax import checkpointing, sharding
from okdhp_jax.tools.config_file import load_config
from okdhp_jax.training import flat_state
from okdhp_jax.training.state import TrainState


def _state(seed: int = 0) -> TrainState:
  """A TrainState with two dtypes of parameters and Adam's state after one update."""
  rng = np.random.default_rng(seed)
  params = {'conv': {'kernel': rng.normal(size=(3, 3, 2, 4)).astype(np.float32),
                     'bias': rng.normal(size=(4,)).astype(np.float32)},
            'head': {'kernel': rng.normal(size=(4, 16)).astype(np.float32),
                     'scale': rng.normal(size=(16,)).astype(jnp.bfloat16)}}
  batch_stats = {'bn': {'mean': rng.normal(size=(4,)).astype(np.float32),
                        'var': rng.uniform(1, 2, size=(4,)).astype(np.float32)}}
  tx = optax.adam(1e-3)
  opt_state = tx.init(params)
  _, opt_state = tx.update(jax.tree.map(lambda p: p * 0.5, params), opt_state, params)
  state = TrainState(step=np.int32(1), params=params, batch_stats=batch_stats,
                     opt_state=opt_state)
  return jax.device_put(state, sharding.replicated(sharding.make_mesh(1)))


def _assert_same(got, want):
  assert jax.tree.structure(got) == jax.tree.structure(want)
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    assert np.shape(a) == np.shape(b) and np.asarray(a).dtype == np.asarray(b).dtype
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_a_layout_cuts_back_what_it_joined_on_the_host_in_a_trace_and_abstractly():
  tree = jax.device_get(_state().params)
  layout = flat_state.FlatLayout.of(tree)
  flat = layout.ravel(tree)
  assert {dtype: vector.shape for dtype, vector in flat.items()} == {
      'float32': (72 + 4 + 64,), 'bfloat16': (16,)}
  # The vector holds the arrays in the tree's flattening order (what checkpoints rely on).
  np.testing.assert_array_equal(flat['float32'][:4], tree['conv']['bias'])
  _assert_same(layout.unravel(flat), tree)
  traced = jax.jit(lambda f: layout.unravel(jax.tree.map(lambda v: v * 2, f)))(flat)
  _assert_same(traced, jax.tree.map(lambda a: a * 2, tree))
  abstract = layout.ravel(jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), tree))
  assert abstract['float32'].shape == (140,) and abstract['bfloat16'].dtype == jnp.bfloat16
  with pytest.raises(ValueError, match='cannot be laid out'):
    layout.ravel({'conv': tree['conv']})
  with pytest.raises(ValueError, match="flat_state=never"):
    layout.ravel(jax.tree.map(lambda a: a.astype(np.float16), tree))


def test_flattened_and_cut_back_is_the_same_state_on_the_same_devices():
  state = _state()
  flat = flat_state.flatten(state)
  assert set(flat.params) == {'float32', 'bfloat16'}
  assert flat.params['float32'].sharding == state.params['conv']['kernel'].sharding
  adam = flat.opt_state[0]
  assert flat.param_layout.matches(adam.mu) and flat.param_layout.matches(adam.nu)
  back = flat.per_array()
  _assert_same(back, state)
  assert back.params['head']['kernel'].sharding == state.params['head']['kernel'].sharding
  _assert_same(flat.variables, state.variables)
  # Abstract states (gpu_program compiles from them) flatten to the same shapes.
  abstract = flat_state.flatten(jax.tree.map(
      lambda a: jax.ShapeDtypeStruct(np.shape(a), a.dtype), state))
  assert jax.tree.map(np.shape, abstract) == jax.tree.map(np.shape, flat)


def test_adam_on_the_vectors_is_adam_on_the_arrays():
  """Elementwise optimisers only (flat_state.py): then both forms update every number alike."""
  state, tx = _state(), optax.adam(1e-3)
  flat = flat_state.flatten(state)
  grads = jax.tree.map(lambda p: jnp.cos(p.astype(jnp.float32)).astype(p.dtype), state.params)

  def step(s, g):
    updates, opt_state = tx.update(s.arrange_params(g), s.opt_state, s.params)
    return s.replace(params=optax.apply_updates(s.params, updates), opt_state=opt_state)

  _assert_same(jax.jit(step)(flat, grads).per_array(), jax.jit(step)(state, grads))


def test_a_checkpoint_is_the_same_from_either_form_and_restores_into_either(tmp_path):
  state = _state()
  for name, live in (('per_array', state), ('flat', flat_state.flatten(state))):
    manager = checkpointing.make_manager(str(tmp_path / name), keep=1, asynchronous=False)
    assert checkpointing.save(manager, 3, live, {'history': []}, force=True)
    manager.wait_until_finished()
  step, per_array_on_disk, _ = checkpointing.read_on_host(str(tmp_path / 'per_array'))
  _, flat_on_disk, _ = checkpointing.read_on_host(str(tmp_path / 'flat'))
  assert step == 3
  _assert_same(flat_on_disk, per_array_on_disk)

  into_flat, _ = checkpointing.restore(
      checkpointing.make_manager(str(tmp_path / 'per_array'), keep=1, asynchronous=False), 3,
      flat_state.flatten(_state(seed=1)))
  assert isinstance(into_flat, flat_state.FlatTrainState)
  _assert_same(into_flat.per_array(), state)
  into_per_array, _ = checkpointing.restore(
      checkpointing.make_manager(str(tmp_path / 'flat'), keep=1, asynchronous=False), 3,
      _state(seed=1))
  _assert_same(into_per_array, state)


def test_a_gpu_keeps_the_state_flat_unless_the_config_says_otherwise():
  train = ml_collections.ConfigDict({'flat_state': 'gpu'})
  assert [flat_state.uses_flat_state(train, p) for p in ('gpu', 'cpu', 'tpu')] == [
      True, False, False]
  train.flat_state = 'always'
  assert flat_state.uses_flat_state(train, 'cpu')
  train.flat_state = 'never'
  assert not flat_state.uses_flat_state(train, 'gpu')
  train.flat_state = 'yes'
  with pytest.raises(ValueError, match="config.train.flat_state='yes'"):
    flat_state.uses_flat_state(train, 'gpu')
  # arranged_for goes either way, and leaves a state already arranged as it is.
  mesh, state = sharding.make_mesh(1), _state()
  train.flat_state = 'always'
  flat = flat_state.arranged_for(train, state, mesh)
  assert isinstance(flat, flat_state.FlatTrainState)
  assert flat_state.arranged_for(train, flat, mesh) is flat
  train.flat_state = 'never'
  assert flat_state.arranged_for(train, state, mesh) is state
  _assert_same(flat_state.arranged_for(train, flat, mesh), state)


def test_the_hourglass_configs_take_the_choice_as_an_argument():
  assert load_config('configs/hg4.py').train.flat_state == 'gpu'
  assert load_config('configs/hg2.py:flat_state=never').train.flat_state == 'never'
