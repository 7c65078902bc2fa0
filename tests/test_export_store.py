"""The export folder is replaced whole: a repeated or failed export never mixes two models."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from okdhp_jax.export import store


def _variables(value):
  return {'params': {'w': np.full((2, 3), value, np.float32)},
          'batch_stats': {'m': np.full((3,), value, np.float32)}}


def test_a_second_export_replaces_the_first_as_a_whole(tmp_path):
  target = str(tmp_path / 'export')
  store.save_exported(target, _variables(1.0), {'model': {'a': 1}, 'num_joints': 16,
                                               'branch': 0})
  store.save_exported(target, _variables(2.0), {'model': {'a': 1}, 'num_joints': 16,
                                               'branch': 2})
  variables, description = store.load_exported(target)
  assert description['branch'] == 2
  np.testing.assert_array_equal(variables['params']['w'], 2.0)
  assert sorted(os.listdir(tmp_path)) == ['export']  # no staging or replaced folder left


def test_a_failed_export_leaves_the_previous_one(tmp_path, monkeypatch):
  target = str(tmp_path / 'export')
  store.save_exported(target, _variables(1.0), {'model': {}, 'num_joints': 16, 'branch': 0})

  def fail(*args, **kwargs):
    raise OSError(28, 'No space left on device')
  monkeypatch.setattr(store, '_swap_in', fail)
  with pytest.raises(OSError, match='No space left'):
    store.save_exported(target, _variables(3.0), {'model': {}, 'num_joints': 16, 'branch': 1})
  monkeypatch.undo()
  variables, description = store.load_exported(target)
  assert description['branch'] == 0
  np.testing.assert_array_equal(variables['params']['w'], 1.0)
  # The next export clears what the failed one left beside the target.
  store.save_exported(target, _variables(4.0), {'model': {}, 'num_joints': 16, 'branch': 1})
  assert json.loads((tmp_path / 'export' / 'model.json').read_text())['branch'] == 1
  assert sorted(os.listdir(tmp_path)) == ['export']


def test_a_folder_that_is_not_an_export_is_not_replaced(tmp_path):
  (tmp_path / 'mine').mkdir()
  (tmp_path / 'mine' / 'notes.txt').write_text('keep me')
  with pytest.raises(ValueError, match='is not an okdhp_jax export'):
    store.save_exported(str(tmp_path / 'mine'), _variables(1.0), {'model': {}, 'num_joints': 1})
  assert (tmp_path / 'mine' / 'notes.txt').read_text() == 'keep me'
