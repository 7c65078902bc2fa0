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


def apply_overrides(config, overrides) -> None:
  """Sets 'train.batch_size=8' style overrides (as --config.train.batch_size=8 would), each
  value converted to the type of the value it replaces; ValueError naming an unknown key."""
  for item in overrides:
    key, equals, text = item.removeprefix('--').removeprefix('config.').partition('=')
    if not equals:
      raise ValueError(f'override {item!r} must read key=value, e.g. train.batch_size=8')
    *parents, leaf = key.split('.')
    node = config
    for part in parents:
      node = node.get(part) if hasattr(node, 'get') else None
    if node is None or not hasattr(node, 'get') or leaf not in node:
      raise ValueError(f'override {item!r}: the config has no key {key}')
    current = node[leaf]
    if isinstance(current, bool):
      value = text.lower() in ('1', 'true', 'yes')
    elif isinstance(current, (int, float)):
      value = type(current)(text)
    else:
      value = text
    node[leaf] = value
