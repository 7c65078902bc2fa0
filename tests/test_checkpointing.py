"""A failed checkpoint save ends in one line and leaves the checkpoints already there usable.

tests/test_main.py fills a real small tmpfs during a run where it can mount one; this makes the
save fail in-process, as a full disk makes TensorStore fail, so the path is tested everywhere.
"""

from __future__ import annotations

import errno

import jax.numpy as jnp
import numpy as np
import pytest

from okdhp_jax import checkpointing


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
