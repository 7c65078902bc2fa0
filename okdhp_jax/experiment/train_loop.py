"""The training loop: data, the sharded train step, logging, periodic evaluation, checkpoints.

`train_and_evaluate(experiment)` is what `python -m okdhp_jax.main` runs. The same code runs on
one CPU, several local devices and a multi-host slice: the step is one `jax.jit` over the
experiment's mesh, each process feeds its own shard of the data, and only process 0 writes logs.
The loop knows no method by name: the experiment's method gives the loss the step minimises and
the metrics to log.
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
from clu import metric_writers, parameter_overview, periodic_actions

from okdhp_jax import paths
from okdhp_jax import progress as progress_line
from okdhp_jax.data import pipeline, records
from okdhp_jax.evaluation import evaluator, metrics, visualize
from okdhp_jax.experiment import curves
from okdhp_jax.experiment.context import Experiment
from okdhp_jax.experiment.run_progress import Evaluation, RunProgress
from okdhp_jax.models import build_model, deployed_model_config, stats
from okdhp_jax.training import guards
from okdhp_jax.training import step as step_lib


def train_and_evaluate(experiment: Experiment) -> RunProgress:
  """Trains (resuming if the workdir has checkpoints) and returns the final progress."""
  config, workdir = experiment.config, experiment.workdir
  is_chief = jax.process_index() == 0
  # TensorBoard only: the console gets one progress line per log step, not every scalar.
  writer = (metric_writers.AsyncMultiWriter([metric_writers.SummaryWriter(workdir)])
            if is_chief else metric_writers.MultiWriter([]))
  progress = experiment.restore()
  start_step = experiment.step
  if start_step == 0 and is_chief:
    _log_model_summary(experiment)
    writer.write_hparams(_flat_hparams(config))
  description = records.read_dataset_info(config.data.records_dir).get(records.DESCRIPTION)
  if description:
    logging.info('%s', description)
  logging.info('Training %d steps (%d epochs x %d steps, global batch %d, %d examples) on %s',
               experiment.total_steps, config.train.num_epochs, experiment.steps_per_epoch,
               config.train.batch_size, experiment.num_train_examples, experiment.mesh)

  train_step = step_lib.make_train_step(
      config, experiment.model, experiment.method, mesh=experiment.mesh,
      steps_per_epoch=experiment.steps_per_epoch, num_joints=experiment.meta.num_joints)
  batches = _train_batches(experiment, start_step)
  frozen = experiment.method.frozen_state(experiment.mesh)
  eval_every_steps = max(1, int(config.train.eval_every_epochs * experiment.steps_per_epoch))
  line = progress_line.ProgressLine(experiment.total_steps, config.train.batch_size, start_step)
  # clu's steps_per_sec, uptime and eval/checkpoint shares, once per evaluation.
  report = periodic_actions.ReportProgress(
      num_train_steps=experiment.total_steps, writer=writer, every_steps=eval_every_steps,
      every_secs=None)
  trace = _Trace(config.train.profile if is_chief else 0, workdir, start_step,
                 eval_every_steps, experiment.total_steps)
  last_good_step = start_step if start_step else None
  window = _Window(start_step)
  guard = guards.LossGuard(config.train.divergence_factor, config.train.divergence_window,
                           history=[loss for _, loss in progress.train_loss])
  preemption = guards.PreemptionWatch()
  checkpoint_dir = experiment.manager.directory
  try:
    for step in range(start_step + 1, experiment.total_steps + 1):
      with jax.profiler.StepTraceAnnotation('train', step_num=step):
        waiting_since = time.perf_counter()
        with jax.profiler.TraceAnnotation('input'):
          batch = next(batches)
        window.input_wait += time.perf_counter() - waiting_since
        if step == start_step + 1:
          logging.info('Compiling the train step (the first call traces and compiles it)...')
          compile_start = time.time()
        experiment.state, metrics = train_step(experiment.state, frozen, batch)
      if step == start_step + 1:
        jax.block_until_ready(metrics)
        logging.info('Compiled and ran the first step in %.1f s.', time.time() - compile_start)
        line.restart(step)  # rates and ETA count from here.
        window = _Window(step)
      is_last = step == experiment.total_steps
      log_now = step % config.train.log_every_steps == 0 or is_last
      eval_now = step % eval_every_steps == 0 or is_last
      preempted = preemption.should_stop(step)
      save_now = eval_now or preempted or step % config.train.checkpoint_every_steps == 0
      # The first step's loss is the one of the parameters the run starts from (an untrained
      # network on a fresh run): checked too, it is what a run wrong from the start is held to.
      if log_now or save_now or step == start_step + 1:
        # One fetch per step, before anything is written: a NaN or diverged state is never saved.
        scalars = {k: float(v) for k, v in jax.device_get(metrics).items()}
        guard.check(scalars, step, last_good_step, checkpoint_dir)
      if log_now:
        _log_train(writer, line, window, step, scalars, config.train.batch_size)
        progress.train_loss.append([step, scalars['loss']])
        window = _Window(step)
      scored = eval_now and not preempted
      metric = None
      if scored:
        # The step's metrics were fetched (an evaluation step saves): nothing is in flight.
        with report.timed('eval', wait_jax_async_dispatch=False):
          result = experiment.evaluate(num_images_to_draw=config.train.num_images_to_draw)
        _log_eval(writer, step, result, workdir if is_chief else None)
        progress.record(Evaluation(step=step, metrics=result.metrics,
                                   scored_on=result.scored_on, subsets=result.subsets,
                                   fau_weights=result.fau_weights),
                        best_metric=result.best_metric, best_branch=result.best_branch)
        metric = result.best_metric
      if save_now:
        with report.timed('checkpoint', wait_jax_async_dispatch=False):
          experiment.save(step, progress, metric=metric)
        last_good_step = step
      if preempted:
        experiment.wait_for_saves()
        writer.flush()
        raise guards.PreemptedError(
            f'stopped by SIGTERM at step {step} of {experiment.total_steps}; saved a checkpoint '
            f'of step {step} in {checkpoint_dir}. Rerun the same command to resume from it.')
      if eval_now or save_now:
        window = _Window(step)  # training rates leave evaluation and checkpoint time out.
      report(step)
      trace(step, metrics)
  finally:
    trace.close()
    preemption.close()
  experiment.wait_for_saves()
  writer.flush()
  if is_chief and progress.history:
    _write_results(experiment, progress)
  return progress


def _train_batches(experiment: Experiment, start_step: int):
  """This process's share of each global batch, from `start_step` on, sharded on the mesh."""
  config = experiment.config
  dataset = pipeline.build_train_dataset(
      config.data, experiment.meta,
      local_batch_size=config.train.batch_size // jax.process_count(), seed=config.seed,
      process_index=jax.process_index(), process_count=jax.process_count(),
      start_step=start_step)
  return pipeline.global_batches(
      dataset, experiment.mesh, prefetch=config.data.prefetch, split=config.data.train_split,
      files=pipeline.split_files(config.data, config.data.train_split))


def _write_results(experiment: Experiment, progress: RunProgress) -> None:
  """eval_results.json and training_curves.png in the workdir."""
  workdir = experiment.workdir
  (paths.resolve(workdir) / 'eval_results.json').write_text(
      json.dumps(progress.to_json(), indent=2))
  curves.plot_training_curves(progress, metrics.headline_metric(experiment.meta),
                              os.path.join(workdir, 'training_curves.png'))


class _Trace:
  """clu's Profile over `num_steps` steps right after the run's first evaluation (compiling
  and the evaluation are behind it), input included; the trace goes to
  WORKDIR/plugins/profile/, where TensorBoard's profile plugin reads it. 0 steps: no trace."""

  def __init__(self, num_steps: int, workdir: str, start_step: int, eval_every_steps: int,
               total_steps: int):
    first = (start_step // eval_every_steps + 1) * eval_every_steps
    self.last = min(first + num_steps, total_steps)
    self.action = None
    if num_steps > 0 and first < total_steps:
      self.action = periodic_actions.Profile(
          logdir=workdir, num_profile_steps=self.last - first, profile_duration_ms=None,
          first_profile=first, every_secs=None)
    elif num_steps > 0:
      logging.warning('No trace: no training step follows the first evaluation (step %d).',
                      first)

  def __call__(self, step: int, metrics) -> None:
    if self.action is None:
      return
    if step == self.last:
      jax.block_until_ready(metrics)  # the last traced step's device work ends in the trace.
    self.action(step)

  def close(self) -> None:
    # clu's Profile has no public stop for a run that ends (raises) inside the trace.
    action = self.action
    if action is not None and action._session_running:  # pylint: disable=protected-access
      jax.profiler.stop_trace()


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


def _log_train(writer, line: progress_line.ProgressLine, window: _Window, step: int,
               scalars: dict[str, float], batch_size: int) -> None:
  """The method's scalars and the speed to TensorBoard; the progress line to the console."""
  # clu's ReportProgress counts steps/s over wall time: img/s of the global batch, training
  # time without evaluation and checkpoints, and the input wait are this loop's own.
  perf, text = {}, ''
  if step > window.step:  # not on the compiling step: nothing was timed yet.
    train_rate, input_wait, wait_ms = window.close(step, batch_size)
    perf.update({'perf/train_img_per_sec': train_rate,
                 'perf/input_wait_fraction': input_wait,
                 'perf/input_wait_ms_per_step': wait_ms})
    text = f' | input wait {100 * input_wait:.0f}% ({wait_ms:.1f} ms/step)'
  writer.write_scalars(step, {**{f'train/{k}': v for k, v in scalars.items()}, **perf})
  logging.info('%s | loss %.5f%s', line(step), scalars['loss'], text)


def _log_model_summary(experiment: Experiment) -> None:
  """Parameters and MACs per part of the training network and the deployed student; the
  per-parameter table goes to WORKDIR/parameters.txt (a screen is too small for it)."""
  config = experiment.config
  input_size = tuple(config.data.input_size)
  student = build_model(ml_collections.ConfigDict(deployed_model_config(config.model)),
                        experiment.meta.num_joints, input_size)
  table = stats.summary_table([('training network', experiment.model),
                               ('deployed student', student)], (*input_size, 3))
  path = paths.resolve(experiment.workdir) / 'parameters.txt'
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(parameter_overview.get_parameter_overview(
      experiment.state.variables['params']) + '\n')
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
