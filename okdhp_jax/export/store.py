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
from typing import Any, Callable

import jax
import numpy as np
import orbax.checkpoint as ocp

from okdhp_jax import paths

VARIABLES_SUBDIR = 'variables'
DESCRIPTION_FILE = 'model.json'


def save_exported(directory: str, variables: dict[str, Any], description: dict[str, Any], *,
                  finish: Callable[[Any], None] | None = None) -> str:
  """Writes `variables` and `description` as the export folder `directory`, replacing an older
  export there as a whole.

  The new export is written completely beside the target (`.NAME.incoming`), then swapped in:
  a failed or interrupted export leaves the previous one as it was, and two exports never mix
  (the variables of one with the model.json of another). A folder that exists but is not an
  export (no model.json) and is not empty is refused rather than replaced. Every process of a
  multi-host run calls this (the Orbax save is collective); process 0 writes and swaps.

  Args:
    directory: output folder.
    variables: {'params': tree, 'batch_stats': tree} of a plain network.
    description: JSON-serialisable; must hold 'model' (the model config as a dict) and
      'num_joints'.
    finish: called by process 0 with the staging folder once it holds the variables and
      model.json, before the swap: what it adds (deployment files) is swapped in with them.

  Returns:
    The absolute directory path.
  """
  for key in ('model', 'num_joints'):
    if key not in description:
      raise ValueError(f'export description is missing {key!r}; got keys {sorted(description)}')
  final = paths.resolve(directory)
  if final.exists() and not (final / DESCRIPTION_FILE).exists() and any(final.iterdir()):
    raise ValueError(f'{final} exists and is not an okdhp_jax export (it has no '
                     f'{DESCRIPTION_FILE}); export to a new or empty folder instead')
  staging = final.parent / f'.{final.name}.incoming'
  chief = jax.process_index() == 0
  if chief and staging.exists():
    staging.rmtree()  # what an interrupted export left behind
  _sync('okdhp_export_staging_clean')
  try:
    _write_staging(staging, variables, description, finish, chief)
  except BaseException:
    if chief:
      _remove_quietly(staging)  # a failed export leaves nothing half-written behind
    raise
  if chief:
    _swap_in(staging, final)
  _sync('okdhp_export_swapped')
  return str(final)


def _write_staging(staging, variables, description, finish, chief: bool) -> None:
  """The variables (every process: the save is collective), then model.json and what `finish`
  adds (process 0)."""
  host_variables = jax.tree.map(np.asarray, jax.device_get(variables))
  checkpointer = ocp.StandardCheckpointer()
  checkpointer.save(staging / VARIABLES_SUBDIR, host_variables, force=True)
  checkpointer.wait_until_finished()
  if chief:
    (staging / DESCRIPTION_FILE).write_text(
        json.dumps(description, indent=2, sort_keys=True, default=_to_json))
    if finish is not None:
      finish(staging)


def _remove_quietly(folder) -> None:
  """Deletes `folder` if it can; the error being raised says more than this one would."""
  try:
    if folder.exists():
      folder.rmtree()
  except Exception:  # pylint: disable=broad-except
    pass


def _swap_in(staging, final) -> None:
  """Replaces `final` by the complete folder `staging` (two renames; the old one is deleted)."""
  old = final.parent / f'.{final.name}.replaced'
  if old.exists():
    old.rmtree()
  if final.exists():
    final.rename(old)
  staging.rename(final)
  if old.exists():
    old.rmtree()


def _sync(name: str) -> None:
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    multihost_utils.sync_global_devices(name)


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
