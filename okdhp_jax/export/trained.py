"""`--mode export` (and the end of training): a trained run's chosen branch as an export folder."""

from __future__ import annotations

import logging
from typing import Any

import jax
import ml_collections

from okdhp_jax.data.meta import DatasetMeta
from okdhp_jax.export import branch as branch_lib
from okdhp_jax.export import store


def choose_branch(config: ml_collections.ConfigDict, progress: dict[str, Any]) -> int:
  """config.export.branch, or (when it is -1) the best branch on validation so far."""
  num_branches = len(config.model.branch_stacks)
  branch = config.export.branch
  if branch < 0:
    branch = progress.get('best_branch')
    if branch is None:
      branch = 0
      logging.warning('No validation result yet: exporting branch 0.')
  if not 0 <= branch < num_branches:
    raise ValueError(f'config.export.branch={branch} is out of range: the model has '
                     f'{num_branches} branches (config.model.branch_stacks)')
  return branch


def export_trained(config: ml_collections.ConfigDict, meta: DatasetMeta,
                   variables: dict[str, Any], step: int, progress: dict[str, Any], *,
                   export_dir: str, source: str) -> str:
  """Writes the chosen branch of `variables` as a plain hourglass; returns the folder.

  Args:
    config: the run's config (model, data sizes, export.branch).
    meta: the dataset's meta (its name and joint count go into model.json).
    variables: {'params', 'batch_stats'} of the multi-branch network (device or host arrays).
    step: the training step the variables come from.
    progress: the loop's progress dict (best branch, evaluation history).
    export_dir: where to write; source: recorded in model.json (the workdir).
  """
  if config.model.name != 'hourglass':
    raise ValueError(f'--mode export writes plain hourglasses; config.model.name is '
                     f'{config.model.name!r}')
  branch = choose_branch(config, progress)
  exported = branch_lib.export_branch(
      jax.device_get(variables), branch, config.model.num_shared_stacks,
      tuple(config.model.branch_stacks))
  metrics = {}
  for entry in progress.get('history', [])[-1:]:
    metrics = entry['metrics'].get(f'branch_{branch}', {})
  description = {
      'model': branch_lib.exported_model_config(config.model, branch),
      'num_joints': meta.num_joints,
      'dataset': meta.name,
      'input_size': list(config.data.input_size),
      'heatmap_size': list(config.data.heatmap_size),
      'branch': branch,
      'step': int(step),
      'metrics': metrics,
      'source': source,
  }
  store.save_exported(export_dir, exported, description)  # collective: every process.
  logging.info('Exported branch %d (%s) to %s', branch, description['model'], export_dir)
  return export_dir
