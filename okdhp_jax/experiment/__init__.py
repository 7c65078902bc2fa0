"""A run of an experiment: its context, the training loop, its progress, its export.

  context.py       Experiment: mesh, meta, model, method, state, predict step and checkpoints,
                   built once from a config for training, evaluation, export and benchmarks.
  run_progress.py  RunProgress: losses, evaluations and the best checkpoint, saved with each
                   checkpoint.
  train_loop.py    train_and_evaluate: data, steps, logging, evaluation, checkpoints.
  export.py        export_trained: an evaluated checkpoint's branch as an export folder.
  curves.py        the training curves as a PNG.
"""

from okdhp_jax.experiment.context import Experiment
from okdhp_jax.experiment.export import export_trained
from okdhp_jax.experiment.run_progress import Evaluation, RunProgress
from okdhp_jax.experiment.train_loop import train_and_evaluate

__all__ = ['Evaluation', 'Experiment', 'RunProgress', 'export_trained', 'train_and_evaluate']
