"""Checkpoints: the packed train state round-trips, a checkpoint of another state is refused
without being set aside, and a failed save ends in one line.

tests/test_main.py fills a real small tmpfs during a run where it can mount one; this makes the
save fail in-process, as a full disk makes TensorStore fail, so the path is tested everywhere.
"""

from __future__ import annotations

import collections
import errno
import os

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from okdhp_jax import checkpointing
from okdhp_jax import sharding

# Shaped like a TrainState: an int32 step, nested dicts, an optimiser's tuple of named tuples.
Moments = collections.namedtuple('Moments', ['count', 'mu', 'nu'])


def _state(scale=1.0, mesh=None):
  rng = np.random.default_rng(0)
  tree = {
      'step': np.int32(7),
      'params': {'conv': {'kernel': rng.normal(size=(3, 3, 2, 4)).astype(np.float32) * scale,
                          'bias': np.zeros(4, np.float32)},
                 'head': {'kernel': rng.normal(size=(4, 16)).astype(np.float32)}},
      'batch_stats': {'bn': {'mean': np.arange(4, dtype=np.float32)}},
      'opt_state': (Moments(np.int32(3), {'w': np.ones(5, np.float32)},
                            {'w': np.full(5, 2, np.float32)}), ()),
  }
  replicated = sharding.replicated(mesh or sharding.make_mesh())
  return jax.device_put(tree, replicated)


def test_the_packed_state_round_trips_into_the_live_shardings(tmp_path):
  manager = checkpointing.make_manager(str(tmp_path / 'checkpoints'), keep=3, asynchronous=False)
  state = _state()
  assert checkpointing.save(manager, 5, state, {'history': [1]}, force=True)
  manager.wait_until_finished()
  # One array per dtype on disk, not one per leaf.
  saved = ocp.StandardCheckpointer().metadata(
      str(tmp_path / 'checkpoints' / '5' / checkpointing.STATE)).item_metadata
  assert sorted(saved.keys()) == ['float32', 'int32']
  assert saved['float32'].shape == (72 + 4 + 64 + 4 + 5 + 5,)

  restored, progress = checkpointing.restore(manager, 5, _state(scale=0.0))
  assert progress == {'history': [1]}
  assert jax.tree.structure(restored) == jax.tree.structure(state)
  for got, want in zip(jax.tree.leaves(restored), jax.tree.leaves(state)):
    assert got.dtype == want.dtype and got.sharding == want.sharding
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))

  step, on_host, _ = checkpointing.read_on_host(str(tmp_path / 'checkpoints'))
  assert step == 5 and int(on_host['step']) == 7
  np.testing.assert_array_equal(on_host['params']['conv']['kernel'],
                                np.asarray(state['params']['conv']['kernel']))
  np.testing.assert_array_equal(on_host['opt_state']['0']['nu']['w'], np.full(5, 2.0))
  with pytest.raises(FileNotFoundError, match='does not exist'):
    checkpointing.read_on_host(str(tmp_path / 'no_such_run' / 'checkpoints'))
  assert not (tmp_path / 'no_such_run').exists()  # reading created nothing


def test_a_checkpoint_of_another_state_is_refused_and_kept(tmp_path):
  manager = checkpointing.make_manager(str(tmp_path / 'checkpoints'), keep=3, asynchronous=False)
  assert checkpointing.save(manager, 2, _state(), {'history': []}, force=True)
  manager.wait_until_finished()
  other = _state()
  other['params']['head']['kernel'] = jnp.zeros((4, 14))  # another joint count
  with pytest.raises(checkpointing.CheckpointMismatchError) as caught:
    checkpointing.restore_latest(manager, other)
  message = str(caught.value)
  assert 'params/head/kernel' in message and '[4, 16]' in message and '[4, 14]' in message
  assert os.path.isdir(tmp_path / 'checkpoints' / '2')  # not moved aside as unreadable
  assert not os.path.exists(tmp_path / checkpointing.UNREADABLE_DIR)


def test_a_failed_save_names_the_cause_and_keeps_the_older_checkpoints(tmp_path, monkeypatch):
  manager = checkpointing.make_manager(str(tmp_path / 'checkpoints'), keep=3, asynchronous=False)
  state = {'w': jnp.arange(6.0).reshape(2, 3)}
  assert checkpointing.save(manager, 1, state, {'history': []}, force=True)
  manager.wait_until_finished()

  def full_disk(*args, **kwargs):
    raise OSError(errno.ENOSPC, 'TensorStore write failed: No space left on device '
                  '[source locations=...] ' + 'x' * 500)
  monkeypatch.setattr(manager, 'save', full_disk)
  with pytest.raises(checkpointing.CheckpointSaveError) as caught:
    checkpointing.save(manager, 2, state, {'history': []}, force=True)
  message = str(caught.value)
  assert '\n' not in message and len(message) < 400, message
  assert 'failed by step 2 (No space left on device)' in message
  assert 'steps [1]' in message and str(tmp_path / 'checkpoints') in message
  monkeypatch.undo()
  restored, progress = checkpointing.restore(manager, 1, {'w': jnp.zeros((2, 3))})
  np.testing.assert_array_equal(restored['w'], np.arange(6.0).reshape(2, 3))
  assert progress == {'history': []}


def _save_run(directory, scores, *, keep=1):
  """One process's saves: {step: metric or None}, in order; returns the steps kept."""
  manager = checkpointing.make_manager(directory, keep=keep, asynchronous=False)
  for step, metric in scores.items():
    checkpointing.save(manager, step, _state(), {}, metric=metric, force=True)
  manager.wait_until_finished()
  return sorted(manager.all_steps())


def test_a_restarted_manager_keeps_the_best_checkpoint_an_earlier_process_scored(tmp_path):
  directory = str(tmp_path / 'checkpoints')
  # Step 20 scored best; later ones scored worse or were not evaluated.
  assert _save_run(directory, {10: 50.0, 20: 80.0, 30: None, 40: 60.0}) == [20, 40]
  # A new process (a resumed run) saves on: step 20 stays, as it would have in one process.
  assert _save_run(directory, {50: None, 60: 70.0}) == [20, 60]
  assert _save_run(directory, {70: 90.0, 80: None}) == [70, 80]


def test_checkpoints_without_metrics_on_disk_are_kept_not_pruned(tmp_path):
  """Checkpoints saved before metrics were written with each one cannot be ranked: a resumed
  run keeps them (its best one among them) instead of deleting them."""
  directory = str(tmp_path / 'checkpoints')
  unranked = ocp.CheckpointManager(
      directory, options=ocp.CheckpointManagerOptions(create=True, enable_async_checkpointing=False),
      item_names=(checkpointing.STATE, checkpointing.LAYOUT, checkpointing.PROGRESS))
  for step in (10, 20):
    checkpointing.save(unranked, step, _state(), {}, metric=90.0 - step, force=True)
  unranked.wait_until_finished()
  assert not (tmp_path / 'checkpoints' / '10' / 'metrics').exists()
  assert _save_run(directory, {30: 10.0, 40: None}) == [10, 20, 30, 40]
