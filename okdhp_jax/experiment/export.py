"""Exporting a trained run: an evaluated checkpoint's branch as a deployable folder.

The weights and the branch always come from the same evaluated step: by default the checkpoint
that scored best on validation (config.export.checkpoint='best'), else the newest one
('latest'), with the branch that scored best in that step's evaluation unless
config.export.branch names one. model.json records the step, which checkpoint it was and what
the exported branch scored there. The network's spec decides what one branch is (a plain
hourglass, or MobilePose's shared encoder and one decoder). config.export.formats adds
deployment files (ONNX, TFLite, and their quantised forms; export/deploy.py) beside the Orbax
variables, the int8 ones calibrated on training crops; deploy_report.py measures and scores
them (config.export.score_files) and logs the table.
"""

from __future__ import annotations

import logging
from typing import Any

import jax
import ml_collections

from okdhp_jax.data import meta as meta_lib
from okdhp_jax.data import pipeline
from okdhp_jax.evaluation import metrics as metrics_lib
from okdhp_jax.evaluation import report
from okdhp_jax.experiment import deploy_report
from okdhp_jax.experiment.context import Experiment
from okdhp_jax.experiment.run_progress import RunProgress
from okdhp_jax.export import deploy, deploy_calibration, store
from okdhp_jax.models import deployed_model_config, export_student, num_branches

CHECKPOINT_CHOICES = ('best', 'latest')


def step_to_export(config: ml_collections.ConfigDict, progress: RunProgress,
                   latest_step: int) -> int:
  """The checkpoint step config.export.checkpoint asks for, given the newest progress."""
  which = config.export.checkpoint
  if which not in CHECKPOINT_CHOICES:
    raise ValueError(f'config.export.checkpoint={which!r} must be one of {CHECKPOINT_CHOICES}')
  if which == 'latest':
    return latest_step
  if progress.best_step is None:
    raise ValueError(f'no checkpoint has been evaluated yet, so there is no best one: set '
                     f"config.export.checkpoint='latest' (and config.export.branch) to export "
                     f'step {latest_step}')
  return int(progress.best_step)


def choose_branch(config: ml_collections.ConfigDict, metrics: dict[str, Any] | None,
                  step: int) -> int:
  """config.export.branch, or (-1) the best branch of step `step`'s evaluation `metrics`."""
  branches = num_branches(config.model)
  branch = config.export.branch
  if branch < 0:
    if metrics is None:
      raise ValueError(f'step {step} was not evaluated, so it has no best branch: set '
                       f"config.export.branch, or config.export.checkpoint='best'")
    best = report.best_branch(
        metrics, metrics_lib.headline_metric(meta_lib.get_meta(config.data.dataset)))
    branch = int(best.split('_')[-1])
  if not 0 <= branch < branches:
    raise ValueError(f'config.export.branch={branch} is out of range: the model has '
                     f'{branches} branches')
  return branch


def export_trained(experiment: Experiment, *, export_dir: str,
                   progress: RunProgress | None = None) -> dict[str, Any]:
  """Writes the branch config.export asks for, from the checkpoint it asks for.

  `progress`: the run's progress when `experiment.state` is the newest checkpoint already
  (right after training), which spares restoring it; otherwise the newest checkpoint is
  restored. Returns the model.json description (branch, step, checkpoint, metrics, ...).

  Every process calls it (restoring and saving are collective). Raises FileNotFoundError when
  the workdir has no checkpoint, ValueError for a config.export the run cannot satisfy.
  """
  config = experiment.config
  # Before the restore, so that a misspelt format or missing training records fail fast.
  formats = deploy.parse_formats(config.export.formats)
  calibration = None
  if deploy.needs_calibration(formats) and jax.process_index() == 0:
    calibration = deploy_calibration.calibration_crops(config.data, experiment.meta,
                                                       config.export.calibration_crops)
  if progress is None:
    progress = experiment.restore_or_fail()
  latest = experiment.step
  step = step_to_export(config, progress, latest)
  state = experiment.state
  if step != latest:
    state, progress = experiment.state_at(step)
  evaluation = progress.evaluation_at(step)
  metrics = None if evaluation is None else evaluation.metrics
  branch = choose_branch(config, metrics, step)
  variables = export_student(jax.device_get(state.variables), branch, config.model)
  description = {
      'model': deployed_model_config(config.model, branch),
      'num_joints': experiment.meta.num_joints,
      'dataset': experiment.meta.name,
      'input_size': list(config.data.input_size),
      'heatmap_size': list(config.data.heatmap_size),
      # The evaluation's JPEG decode scale cap, so that a predictor crops people as it did.
      'max_decode_reduction': pipeline.max_decode_reduction(config.data),
      'branch': branch,
      'step': step,
      'checkpoint': config.export.checkpoint,
      'metrics': {} if metrics is None else metrics.get(f'branch_{branch}', {}),
      'source': experiment.workdir,
  }
  deployment, reference, table = {}, {}, []

  def add_deployment_files(staging) -> None:  # process 0, before the new export is swapped in
    deployment.update(deploy.write_deployment(str(staging), formats, calibration=calibration))
    if deployment and config.export.score_files:
      measured, against, text = deploy_report.score_files(config, str(staging))
      deployment.update(measured)
      reference.update(against)
      table.append(text)

  # Collective: every process. The deployment files go into the same swap as the variables.
  store.save_exported(export_dir, variables, description, finish=add_deployment_files)
  if deployment:
    description[deploy.DEPLOYMENT_KEY] = deployment
  if reference:
    description[deploy.REPORT_KEY] = reference
  if table:
    logging.info('Deployment files in %s:\n%s', export_dir, table[0])
  scored = description['metrics'].get(metrics_lib.headline_metric(experiment.meta))
  logging.info('Exported branch %d of step %d (%s checkpoint%s) to %s', branch, step,
               config.export.checkpoint, '' if scored is None else f', scored {scored:.2f}',
               export_dir)
  return description
