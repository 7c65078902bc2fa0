"""`--mode export` (and the end of training): an evaluated checkpoint's branch as an export.

The weights and the branch always come from the same evaluated step: by default the checkpoint
that scored best on validation (config.export.checkpoint='best'), else the newest one
('latest'), with the branch that scored best in that step's evaluation unless
config.export.branch names one. model.json records the step, which checkpoint it was and what
the exported branch scored there. An hourglass exports as a plain hourglass, a MobilePose as its
shared encoder and the branch's decoder. config.export.formats adds deployment files (ONNX,
TFLite; export/deploy.py) beside the Orbax variables.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import jax
import ml_collections

from okdhp_jax import checkpointing
from okdhp_jax.data import pipeline
from okdhp_jax.evaluation import evaluator, report
from okdhp_jax.export import branch as branch_lib
from okdhp_jax.export import deploy, store

if TYPE_CHECKING:
  from okdhp_jax.training.loop import Trainer

CHECKPOINT_CHOICES = ('best', 'latest')


def step_to_export(config: ml_collections.ConfigDict, progress: dict[str, Any],
                   latest_step: int) -> int:
  """The checkpoint step config.export.checkpoint asks for, given the newest progress."""
  which = config.export.checkpoint
  if which not in CHECKPOINT_CHOICES:
    raise ValueError(f'config.export.checkpoint={which!r} must be one of {CHECKPOINT_CHOICES}')
  if which == 'latest':
    return latest_step
  if progress.get('best_step') is None:
    raise ValueError(f'no checkpoint has been evaluated yet, so there is no best one: set '
                     f"config.export.checkpoint='latest' (and config.export.branch) to export "
                     f'step {latest_step}')
  return int(progress['best_step'])


def choose_branch(config: ml_collections.ConfigDict, metrics: dict[str, Any] | None,
                  step: int) -> int:
  """config.export.branch, or (-1) the best branch of step `step`'s evaluation `metrics`."""
  num_branches = len(config.model.branch_stacks)
  branch = config.export.branch
  if branch < 0:
    if metrics is None:
      raise ValueError(f'step {step} was not evaluated, so it has no best branch: set '
                       f"config.export.branch, or config.export.checkpoint='best'")
    best = report.best_branch(metrics, evaluator.headline_metric(config.data.dataset))
    branch = int(best.split('_')[-1])
  if not 0 <= branch < num_branches:
    raise ValueError(f'config.export.branch={branch} is out of range: the model has '
                     f'{num_branches} branches (config.model.branch_stacks)')
  return branch


def export_checkpoint(trainer: 'Trainer', *, export_dir: str,
                      progress: dict[str, Any] | None = None) -> dict[str, Any]:
  """Writes the branch config.export asks for, from the checkpoint it asks for.

  `progress`: the loop's progress when `trainer.state` is the newest checkpoint already (right
  after training), which spares restoring it; otherwise the newest checkpoint is restored.
  Returns the model.json description (branch, step, checkpoint, metrics, ...).

  Every process calls it (restoring and saving are collective). Raises FileNotFoundError when
  the workdir has no checkpoint, ValueError for a config.export the run cannot satisfy.
  """
  config = trainer.config
  # Before the restore, so that a misspelt format fails fast.
  formats = deploy.parse_formats(config.export.get('formats', 'orbax'))
  if progress is None:
    progress = trainer.restore_or_fail()
  latest = int(jax.device_get(trainer.state.step))
  step = step_to_export(config, progress, latest)
  state = trainer.state
  if step != latest:
    state, progress = checkpointing.restore(trainer.manager, step, trainer.state)
  evaluation = next((e for e in progress.get('history', []) if e['step'] == step), None)
  metrics = None if evaluation is None else evaluation['metrics']
  branch = choose_branch(config, metrics, step)
  variables = branch_lib.export_student(jax.device_get(state.variables), branch, config.model)
  description = {
      'model': branch_lib.deployed_model_config(config.model, branch),
      'num_joints': trainer.meta.num_joints,
      'dataset': trainer.meta.name,
      'input_size': list(config.data.input_size),
      'heatmap_size': list(config.data.heatmap_size),
      # The evaluation's JPEG decode scale cap, so that a predictor crops people as it did.
      'max_decode_reduction': pipeline.max_decode_reduction(config.data),
      'branch': branch,
      'step': step,
      'checkpoint': config.export.checkpoint,
      'metrics': {} if metrics is None else metrics.get(f'branch_{branch}', {}),
      'source': trainer.workdir,
  }
  deployment = {}

  def add_deployment_files(staging) -> None:  # process 0, before the new export is swapped in
    deployment.update(deploy.write_deployment(str(staging), formats))

  # Collective: every process. ONNX/TFLite go into the same swap as the variables.
  store.save_exported(export_dir, variables, description, finish=add_deployment_files)
  if deployment:
    description['deployment'] = deployment
  scored = description['metrics'].get(evaluator.headline_metric(trainer.meta.name))
  logging.info('Exported branch %d of step %d (%s checkpoint%s) to %s', branch, step,
               config.export.checkpoint, '' if scored is None else f', scored {scored:.2f}',
               export_dir)
  return description
