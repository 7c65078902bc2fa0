"""What each `--mode` of okdhp_jax.main does, after flags and devices are set up."""

from __future__ import annotations

import json
import logging
import os
import tempfile
from typing import Any

import jax
import ml_collections
from etils import epath

from okdhp_jax import checkpointing, exported, train as train_lib
from okdhp_jax.evaluation import pckh
from okdhp_jax.models import export as export_lib


class UserError(RuntimeError):
  """A problem the user fixes by changing a flag or the workdir (no traceback shown)."""


def train(config: ml_collections.ConfigDict, workdir: str) -> None:
  """Trains (or resumes), then exports the best branch and prints where everything went."""
  trainer = train_lib.Trainer(config, workdir)
  progress = train_lib.train_and_evaluate(config, workdir, trainer)
  export_dir = export(config, workdir, os.path.join(workdir, 'export'), trainer=trainer,
                      progress=progress)
  if jax.process_index() == 0:
    last = progress['history'][-1] if progress['history'] else None
    lines = ['', 'Training finished.']
    if last:
      lines += [f'Final evaluation (step {last["step"]}):', _table_of(config, last['metrics'])]
    lines += [
        f'  TensorBoard logs : {workdir}  (tensorboard --logdir {workdir})',
        f'  checkpoints      : {os.path.join(workdir, "checkpoints")}',
        f'  drawn samples    : {os.path.join(workdir, "samples")}',
        f'  eval results     : {os.path.join(workdir, "eval_results.json")}',
        f'  exported network : {export_dir}',
    ]
    print('\n'.join(lines), flush=True)


def evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Scores the newest checkpoint of the workdir; writes predictions for official tools."""
  trainer = train_lib.Trainer(config, workdir)
  _restore_or_fail(trainer, workdir)
  result = trainer.evaluate(num_images_to_draw=config.train.num_images_to_draw)
  if jax.process_index() == 0:
    out_dir = exported.resolve(workdir) / 'eval'
    out_dir.mkdir(parents=True, exist_ok=True)
    if trainer.meta.name == 'mpii':
      best = f'branch_{result.best_branch}'
      # scipy writes .mat files locally; the copy also reaches gs:// workdirs.
      with tempfile.TemporaryDirectory() as tmp:
        local = os.path.join(tmp, 'pred.mat')
        pckh.save_pred_mat(local, _in_gt_order(result.predictions[best], result.person_index))
        epath.Path(local).copy(out_dir / 'pred.mat', overwrite=True)
    (out_dir / 'metrics.json').write_text(
        json.dumps({'metrics': result.metrics, 'best_branch': result.best_branch}, indent=2))
    print(result.table, flush=True)
    print(f'Predictions and metrics written to {out_dir}', flush=True)
  return result.metrics


def export(config: ml_collections.ConfigDict, workdir: str, export_dir: str, *,
           trainer: train_lib.Trainer | None = None,
           progress: dict[str, Any] | None = None) -> str:
  """Writes the chosen branch (config.export.branch, or the best) as a plain hourglass.

  After training, pass the trainer and its progress to export the weights in memory;
  otherwise the newest checkpoint of the workdir is loaded.
  """
  if trainer is None or progress is None:
    trainer = train_lib.Trainer(config, workdir)
    progress = _restore_or_fail(trainer, workdir)
  branch = config.export.branch
  num_branches = len(config.model.branch_stacks)
  if branch < 0:
    branch = progress.get('best_branch')
    if branch is None:
      branch = 0
      logging.warning('No validation result in %s yet: exporting branch 0.', workdir)
  if not 0 <= branch < num_branches:
    raise ValueError(f'config.export.branch={branch} is out of range: the model has '
                     f'{num_branches} branches (config.model.branch_stacks)')
  if config.model.name != 'hourglass':
    raise UserError(f'--mode export writes plain hourglasses; config.model.name is '
                    f'{config.model.name!r}')
  variables = export_lib.export_branch(
      jax.device_get(trainer.variables()), branch, config.model.num_shared_stacks,
      tuple(config.model.branch_stacks))
  metrics = {}
  for entry in progress.get('history', [])[-1:]:
    metrics = entry['metrics'].get(f'branch_{branch}', {})
  description = {
      'model': export_lib.exported_model_config(config.model, branch),
      'num_joints': trainer.meta.num_joints,
      'dataset': trainer.meta.name,
      'input_size': list(config.data.input_size),
      'heatmap_size': list(config.data.heatmap_size),
      'branch': branch,
      'step': int(jax.device_get(trainer.state.step)),
      'metrics': metrics,
      'source': workdir,
  }
  exported.save_exported(export_dir, variables, description)  # collective: every process.
  logging.info('Exported branch %d (%s) to %s', branch, description['model'], export_dir)
  return export_dir


def _restore_or_fail(trainer: train_lib.Trainer, workdir: str) -> dict[str, Any]:
  if trainer.manager.latest_step() is None:
    raise UserError(f'{workdir} has no checkpoint to load; train first with --mode train')
  return trainer.restore()


def _in_gt_order(predictions, person_index):
  """Rows sorted by gt_valid.mat column, the order the official MATLAB tool expects."""
  import numpy as np
  return np.asarray(predictions)[np.argsort(person_index)]


def _table_of(config: ml_collections.ConfigDict, metrics: dict[str, dict[str, float]]) -> str:
  from okdhp_jax.evaluation import report
  key = 'AP' if config.data.dataset == 'coco' else 'Mean'
  return report.branch_report(metrics, key)[0]
