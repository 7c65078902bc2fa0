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

__all__ = ['Evaluation', 'Experiment', 'RunProgress', 'export_trained', 'train_and_evaluate']


def __getattr__(name: str):
  # The loop is imported on first use: clu's metric writers import TensorFlow, which a
  # benchmark or a deviceless compile built on Experiment has no use for (and a GPU machine
  # without TensorFlow lacks).
  if name == 'train_and_evaluate':
    from okdhp_jax.experiment.train_loop import train_and_evaluate  # pylint: disable=g-import-not-at-top
    return train_and_evaluate
  raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
