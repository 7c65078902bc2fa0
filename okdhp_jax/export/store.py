"""The export folder: a plain network's variables as an Orbax checkpoint plus a JSON description.

Layout of an export directory:
  DIR/variables/      Orbax checkpoint of {'params': ..., 'batch_stats': ...}
  DIR/model.json      {'model': <model config>, 'num_joints': J, 'dataset': name,
                       'input_size': [h, w], 'heatmap_size': [h, w], 'metrics': {...}, ...}

Branch export (`--mode export`), the PyTorch converter and the FPD teacher all use this format,
so anything that can load one can load the others.
"""

from __future__ import annotations

import json
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from okdhp_jax import paths

VARIABLES_SUBDIR = 'variables'
DESCRIPTION_FILE = 'model.json'


def save_exported(directory: str, variables: dict[str, Any], description: dict[str, Any]) -> str:
  """Writes `variables` and `description` under `directory` (overwriting an older export).

  Every process of a multi-host run calls this (the Orbax save is collective); process 0
  writes the files.

  Args:
    directory: output folder; created if missing.
    variables: {'params': tree, 'batch_stats': tree} of a plain network.
    description: JSON-serialisable; must hold 'model' (the model config as a dict) and
      'num_joints'.

  Returns:
    The absolute directory path.
  """
  for key in ('model', 'num_joints'):
    if key not in description:
      raise ValueError(f'export description is missing {key!r}; got keys {sorted(description)}')
  path = paths.resolve(directory)
  path.mkdir(parents=True, exist_ok=True)
  host_variables = jax.tree.map(np.asarray, jax.device_get(variables))
  checkpointer = ocp.StandardCheckpointer()
  checkpointer.save(path / VARIABLES_SUBDIR, host_variables, force=True)
  checkpointer.wait_until_finished()
  if jax.process_index() == 0:
    # The JSON is written last, to a temporary name, so a directory with model.json is complete.
    tmp = path / (DESCRIPTION_FILE + '.tmp')
    tmp.write_text(json.dumps(description, indent=2, sort_keys=True, default=_to_json))
    tmp.rename(path / DESCRIPTION_FILE)
  return str(path)


def load_exported(directory: str) -> tuple[dict[str, Any], dict[str, Any]]:
  """Reads an export written by `save_exported`; returns (variables, description)."""
  path = paths.resolve(directory)
  description_path = path / DESCRIPTION_FILE
  if not description_path.exists():
    raise FileNotFoundError(
        f'{path} is not an okdhp_jax export: {DESCRIPTION_FILE} is missing (write one with '
        '`python -m okdhp_jax.main --mode export` or `python -m okdhp_jax.tools.convert_torch`)'
    )
  description = json.loads(description_path.read_text())
  variables = ocp.StandardCheckpointer().restore(path / VARIABLES_SUBDIR)
  return variables, description


def _to_json(value):
  if isinstance(value, (np.generic, np.ndarray)):
    return value.tolist()
  if isinstance(value, tuple):
    return list(value)
  raise TypeError(f'cannot write {type(value).__name__} to an export description')
