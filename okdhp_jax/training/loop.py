"""The training loop: data, sharded train step, logging, periodic evaluation, checkpoints.

`train_and_evaluate(config, workdir)` is what `python -m okdhp_jax.main` runs. The same code runs
on one CPU, several local devices, and a multi-host slice: the step is one `jax.jit` over a mesh,
each process feeds its own shard of the data, and only process 0 writes logs. The loop knows no
method by name: `config.trainer` picks one from okdhp_jax/methods/, whose loss the step
minimises and whose metrics are logged.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from typing import Any

import jax
import ml_collections
from clu import metric_writers, parameter_overview

from okdhp_jax import checkpointing, methods, paths, sharding
from okdhp_jax import progress as progress_line
from okdhp_jax.data import checks, pipeline, records
from okdhp_jax.data import meta as meta_lib
from okdhp_jax.evaluation import evaluator, predict_step, visualize
from okdhp_jax.export.branch import deployed_model_config
from okdhp_jax.models import build_model, stats
from okdhp_jax.training import curves, guards
from okdhp_jax.training import state as state_lib
from okdhp_jax.training import step as step_lib
from okdhp_jax.training.optimizer import steps_per_epoch as compute_steps_per_epoch


class Trainer:
  """Everything a run needs, built once from the config: mesh, model, method, state, steps.

  The records must exist already (main builds bundled ones before this). The method's frozen
  state (FPD's teacher) is loaded when training starts, so evaluation and export never read it.
  """

  def __init__(self, config: ml_collections.ConfigDict, workdir: str):
    self.config = config
    self.workdir = workdir
    self.meta = meta_lib.get_meta(config.data.dataset)
    checks.check_records(config)
    self.mesh = sharding.make_mesh()
    num_examples = config.data.num_train_examples or pipeline.count_examples(
        config.data, config.data.train_split)
    self.num_train_examples = num_examples
    self.steps_per_epoch = compute_steps_per_epoch(num_examples, config.train.batch_size)
    self.total_steps = self.steps_per_epoch * config.train.num_epochs
    self.model = build_model(config.model, self.meta.num_joints, tuple(config.data.input_size))
    self.method = methods.create(config, num_joints=self.meta.num_joints)
    self.train_step = step_lib.make_train_step(
        config, self.model, self.method, mesh=self.mesh, steps_per_epoch=self.steps_per_epoch,
        num_joints=self.meta.num_joints)
    self.state = state_lib.create_train_state(
        config, self.model, jax.random.PRNGKey(config.seed), mesh=self.mesh,
        steps_per_epoch=self.steps_per_epoch)
    self.predict_step = predict_step.make_predict_step(
        config, self.model, mesh=self.mesh, flip_perm=self.meta.flip_permutation())
    self.manager = checkpointing.make_manager(
        os.path.join(workdir, 'checkpoints'), keep=config.train.keep_checkpoints)

  def restore(self) -> dict[str, Any]:
    """Resumes from the workdir's newest checkpoint if there is one; returns loop progress."""
    restored = checkpointing.restore_latest(self.manager, self.state)
    if restored is None:
      return {'best_metric': None, 'best_branch': None, 'best_step': None, 'history': []}
    self.state, progress = restored
    return progress

  def restore_or_fail(self) -> dict[str, Any]:
    """`restore`, or a FileNotFoundError when the workdir has no checkpoint yet."""
    if self.manager.latest_step() is None:
      raise FileNotFoundError(f'{self.workdir} has no checkpoint to load; train first with '
                              '--mode train')
    return self.restore()

  def evaluate(self, num_images_to_draw: int = 0) -> evaluator.EvalResult:
    return evaluator.evaluate(self.config, self.state.variables, self.predict_step, self.mesh,
                              num_images_to_draw=num_images_to_draw)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       trainer: Trainer | None = None) -> dict[str, Any]:
  """Trains (resuming if the workdir has checkpoints) and returns the final progress dict."""
  trainer = trainer or Trainer(config, workdir)
  is_chief = jax.process_index() == 0
  # TensorBoard only: the console gets one progress line per log step, not every scalar.
  writer = (metric_writers.AsyncMultiWriter([metric_writers.SummaryWriter(workdir)])
            if is_chief else metric_writers.MultiWriter([]))
  progress = trainer.restore()
  start_step = int(jax.device_get(trainer.state.step))
  if start_step == 0 and is_chief:
    _log_model_summary(config, trainer, workdir)
    writer.write_hparams(_flat_hparams(config))
  description = records.read_dataset_info(config.data.records_dir).get(records.DESCRIPTION)
  if description:
    logging.info('%s', description)
  logging.info('Training %d steps (%d epochs x %d steps, global batch %d, %d examples) on %s',
               trainer.total_steps, config.train.num_epochs, trainer.steps_per_epoch,
               config.train.batch_size, trainer.num_train_examples, trainer.mesh)

  local_batch = config.train.batch_size // jax.process_count()
  dataset = pipeline.build_train_dataset(
      config.data, trainer.meta, local_batch_size=local_batch, seed=config.seed,
      process_index=jax.process_index(), process_count=jax.process_count(),
      start_step=start_step)
  batches = pipeline.global_batches(
      dataset, trainer.mesh, prefetch=config.data.prefetch, split=config.data.train_split,
      files=pipeline.split_files(config.data, config.data.train_split))
  frozen = trainer.method.frozen_state(trainer.mesh)
  eval_every_steps = max(1, int(config.train.eval_every_epochs * trainer.steps_per_epoch))
  line = progress_line.ProgressLine(trainer.total_steps, config.train.batch_size, start_step)
  last_good_step = start_step if start_step else None
  window = _Window(start_step)
  guard = guards.LossGuard(config.train.divergence_factor, config.train.divergence_window,
                           history=[loss for _, loss in progress.get('train_loss', [])])
  preemption = guards.PreemptionWatch()
  checkpoint_dir = trainer.manager.directory
  try:
    for step in range(start_step + 1, trainer.total_steps + 1):
      waiting_since = time.perf_counter()
      batch = next(batches)
      window.input_wait += time.perf_counter() - waiting_since
      if step == start_step + 1:
        logging.info('Compiling the train step (the first call traces and compiles it)...')
        compile_start = time.time()
      trainer.state, metrics = trainer.train_step(trainer.state, frozen, batch)
      if step == start_step + 1:
        jax.block_until_ready(metrics)
        logging.info('Compiled and ran the first step in %.1f s.', time.time() - compile_start)
        line.restart(step)  # rates and ETA count from here.
        window = _Window(step)
      is_last = step == trainer.total_steps
      log_now = step % config.train.log_every_steps == 0 or is_last
      eval_now = step % eval_every_steps == 0 or is_last
      preempted = preemption.should_stop(step)
      save_now = eval_now or preempted or step % config.train.checkpoint_every_steps == 0
      if log_now or save_now:
        # One fetch per step, before anything is written: a NaN or diverged state is never saved.
        scalars = {k: float(v) for k, v in jax.device_get(metrics).items()}
        guard.check(scalars, step, last_good_step, checkpoint_dir)
      if log_now:
        perf, text = {'perf/img_per_sec': line.images_per_second(step)}, ''
        if step > window.step:  # not on the compiling step: nothing was timed yet.
          train_rate, input_wait, wait_ms = window.close(step, config.train.batch_size)
          perf.update({'perf/train_img_per_sec': train_rate,
                       'perf/input_wait_fraction': input_wait,
                       'perf/input_wait_ms_per_step': wait_ms})
          text = f' | input wait {100 * input_wait:.0f}% ({wait_ms:.1f} ms/step)'
        writer.write_scalars(step, {**{f'train/{k}': v for k, v in scalars.items()}, **perf})
        progress.setdefault('train_loss', []).append([step, scalars['loss']])
        logging.info('%s | loss %.5f%s', line(step), scalars['loss'], text)
        window = _Window(step)
      if eval_now and not preempted:
        result = trainer.evaluate(num_images_to_draw=config.train.num_images_to_draw)
        _log_eval(writer, step, result, workdir if is_chief else None)
        progress['history'].append({'step': step, 'metrics': result.metrics,
                                    'scored_on': result.scored_on, 'subsets': result.subsets,
                                    'fau_weights': result.fau_weights})
        if progress['best_metric'] is None or result.best_metric > progress['best_metric']:
          progress.update(best_metric=result.best_metric, best_branch=result.best_branch,
                          best_step=step)
      if save_now:
        scored = eval_now and not preempted
        checkpointing.save(trainer.manager, step, trainer.state, progress,
                           metric=result.best_metric if scored else None, force=True)
        last_good_step = step
      if preempted:
        checkpointing.wait_until_finished(trainer.manager, step)
        writer.flush()
        raise guards.PreemptedError(
            f'stopped by SIGTERM at step {step} of {trainer.total_steps}; saved a checkpoint of '
            f'step {step} in {checkpoint_dir}. Rerun the same command to resume from it.')
      if eval_now or save_now:
        window = _Window(step)  # training rates leave evaluation and checkpoint time out.
  finally:
    preemption.close()
  checkpointing.wait_until_finished(trainer.manager, trainer.total_steps)
  writer.flush()
  if is_chief and progress['history']:
    (paths.resolve(workdir) / 'eval_results.json').write_text(json.dumps(progress, indent=2))
    curves.plot_training_curves(progress, evaluator.headline_metric(trainer.meta.name),
                                os.path.join(workdir, 'training_curves.png'))
  return progress


class _Window:
  """Training time since the last log, evaluation or checkpoint, and how much of it was spent
  waiting for the input pipeline (blocked in next(batches))."""

  def __init__(self, step: int):
    self.step, self.start, self.input_wait = step, time.perf_counter(), 0.0

  def close(self, step: int, batch_size: int) -> tuple[float, float, float]:
    """(training images/s, fraction of the time waiting for input, milliseconds per step
    blocked in next(batches)) over the window; call after the step's metrics were fetched, so
    the device work is inside the window."""
    elapsed = max(time.perf_counter() - self.start, 1e-9)
    steps = max(step - self.step, 1)
    return (steps * batch_size / elapsed, min(self.input_wait / elapsed, 1.0),
            1000 * self.input_wait / steps)


def _log_model_summary(config: ml_collections.ConfigDict, trainer: Trainer, workdir: str) -> None:
  """Parameters and MACs per part of the training network and the deployed student; the
  per-parameter table goes to WORKDIR/parameters.txt (a screen is too small for it)."""
  input_size = tuple(config.data.input_size)
  student = build_model(ml_collections.ConfigDict(deployed_model_config(config.model)),
                        trainer.meta.num_joints, input_size)
  table = stats.summary_table([('training network', trainer.model),
                               ('deployed student', student)], (*input_size, 3))
  path = paths.resolve(workdir) / 'parameters.txt'
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(parameter_overview.get_parameter_overview(trainer.state.params) + '\n')
  logging.info('Model at %dx%d (MACs per image; every parameter: %s):\n%s', *input_size, path,
               table)


def _log_eval(writer, step: int, result: evaluator.EvalResult, workdir: str | None) -> None:
  scalars = {f'eval/{name}/{metric}': value for name, table in result.metrics.items()
             for metric, value in table.items()}
  # Other evaluation groups (e.g. the real people among the bundled figures) apart, by label.
  for label, tables in result.subsets.items():
    group = re.sub(r'\W+', '_', label.split(' (')[0]).strip('_')
    scalars.update({f'eval_{group}/{name}/{metric}': value for name, table in tables.items()
                    for metric, value in table.items()})
  scalars['eval/best_branch'] = result.best_branch
  writer.write_scalars(step, scalars)
  if result.images:
    picture = visualize.grid(result.images)
    writer.write_images(step, {'eval/predictions': picture[None]})
    if workdir:
      visualize.save_png(os.path.join(workdir, 'samples', f'step{step:07d}.png'), picture)
  logging.info('Evaluation at step %d:\n%s', step, result.table)


def _flat_hparams(config: ml_collections.ConfigDict) -> dict[str, Any]:
  flat = {}
  def visit(prefix, node):
    for key, value in node.items():
      name = f'{prefix}{key}'
      if isinstance(value, ml_collections.ConfigDict):
        visit(name + '.', value)
      else:
        flat[name] = value if isinstance(value, (int, float, str, bool)) else str(value)
  visit('', config)
  return flat
