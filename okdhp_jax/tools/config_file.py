"""Loads an experiment config file the way `--config` does for okdhp_jax.main."""

from __future__ import annotations

import importlib.util
import os


def load_config(spec: str):
  """'configs/x.py' or 'configs/x.py:arg' -> get_config(arg) of that file (a ConfigDict)."""
  path, _, arg = spec.partition(':')
  if not os.path.exists(path):
    raise FileNotFoundError(f'--config file {path} does not exist')
  module_spec = importlib.util.spec_from_file_location('_okdhp_config', path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  if not hasattr(module, 'get_config'):
    raise ValueError(f'--config file {path} has no get_config(arg) function')
  return module.get_config(arg or None)
