"""The run context: everything training, evaluation, export and benchmarks build from a config.

`Experiment(config, workdir)` builds the mesh, dataset meta, network, training method, train
state, predict step and checkpoint manager once. It owns the checkpoints and the progress saved
with them; the training loop (train_loop.py) builds its own train step on top of it.
"""

from __future__ import annotations

import os

import jax
import ml_collections

from okdhp_jax import checkpointing, methods, sharding
from okdhp_jax.data import checks, pipeline
from okdhp_jax.data import meta as meta_lib
from okdhp_jax.evaluation import evaluator, predict_step
from okdhp_jax.experiment.run_progress import RunProgress
from okdhp_jax.models import build_model
from okdhp_jax.training import flat_state, optimizer
from okdhp_jax.training import state as state_lib


class Experiment:
  """One run's mesh, meta, model, method, state, predict step and checkpoints.

  Args:
    config: the experiment config.
    workdir: the run's folder; None for a run without checkpoints (benchmarks).
    steps_per_epoch: optimiser steps per epoch; None counts the training records (which must
      exist: main builds bundled ones first). Given, no record is read.
    rng: the parameters' initial key (default: PRNGKey(config.seed)).

  The method's frozen state (FPD's teacher) is loaded only when training asks for it, so
  evaluation and export never read it.
  """

  def __init__(self, config: ml_collections.ConfigDict, workdir: str | None, *,
               steps_per_epoch: int | None = None, rng: jax.Array | None = None):
    self.config = config
    self.workdir = workdir
    self.meta = meta_lib.get_meta(config.data.dataset)
    self.num_train_examples = None
    if steps_per_epoch is None:
      checks.check_records(config)
      self.num_train_examples = config.data.num_train_examples or pipeline.count_examples(
          config.data, config.data.train_split)
      steps_per_epoch = optimizer.steps_per_epoch(self.num_train_examples,
                                                  config.train.batch_size)
    self.steps_per_epoch = steps_per_epoch
    self.total_steps = steps_per_epoch * config.train.num_epochs
    self.mesh = sharding.make_mesh()
    self.model = build_model(config.model, self.meta.num_joints, tuple(config.data.input_size))
    self.method = methods.create(config, num_joints=self.meta.num_joints)
    # Per array, or flat between steps on a GPU (training/flat_state.py).
    self.state = flat_state.arranged_for(config.train, state_lib.create_train_state(
        config, self.model, jax.random.PRNGKey(config.seed) if rng is None else rng,
        mesh=self.mesh, steps_per_epoch=steps_per_epoch), self.mesh)
    self.predict_step = predict_step.make_predict_step(
        config, self.model, mesh=self.mesh, flip_perm=self.meta.flip_permutation())
    self.manager = None if workdir is None else checkpointing.make_manager(
        os.path.join(workdir, 'checkpoints'), keep=config.train.keep_checkpoints)

  @property
  def step(self) -> int:
    return int(jax.device_get(self.state.step))

  def restore(self) -> RunProgress:
    """Resumes from the workdir's newest readable checkpoint, if any; returns its progress."""
    restored = checkpointing.restore_latest(self.manager, self.state)
    if restored is None:
      return RunProgress()
    self.state, progress = restored
    return RunProgress.from_json(progress)

  def restore_or_fail(self) -> RunProgress:
    """`restore`, or FileNotFoundError when the workdir has no checkpoint yet."""
    if self.manager.latest_step() is None:
      raise FileNotFoundError(f'{self.workdir} has no checkpoint to load; train first with '
                              '--mode train')
    return self.restore()

  def state_at(self, step: int) -> tuple[state_lib.TrainState | flat_state.FlatTrainState,
                                          RunProgress]:
    """The train state and progress of checkpoint `step`, leaving the live state as it is."""
    state, progress = checkpointing.restore(self.manager, step, self.state)
    return state, RunProgress.from_json(progress)

  def save(self, step: int, progress: RunProgress, *, metric: float | None) -> None:
    """Checkpoints the live state at `step`; `metric` (when evaluated) ranks it for keep-best."""
    checkpointing.save(self.manager, step, self.state, progress.to_json(), metric=metric,
                       force=True)

  def wait_for_saves(self) -> None:
    checkpointing.wait_until_finished(self.manager, self.step)

  def evaluate(self, num_images_to_draw: int = 0) -> evaluator.EvalResult:
    """Scores the live state on config.data.eval_split: every branch and the ensemble."""
    return evaluator.evaluate(self.config, self.state.variables, self.predict_step, self.mesh,
                              num_images_to_draw=num_images_to_draw)
