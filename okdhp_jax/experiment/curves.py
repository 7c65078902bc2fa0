"""The training curves as a PNG, for people who do not open TensorBoard."""

from __future__ import annotations

import io
from okdhp_jax import paths
from okdhp_jax.experiment.run_progress import RunProgress


def plot_training_curves(progress: RunProgress, metric_key: str, path: str) -> str:
  """Loss (left) and each branch's and the ensemble's `metric_key` (right) against steps.

  Args:
    progress: the run's losses and evaluations.
    metric_key: the headline metric ('Mean' PCKh@0.5, or 'AP').
    path: the PNG to write (local or gs://).
  """
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')  # files only, no display.
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top

  figure, (loss_axes, metric_axes) = plt.subplots(1, 2, figsize=(11, 4), dpi=100)
  losses = progress.train_loss
  if losses:
    steps, values = zip(*losses)
    loss_axes.plot(steps, values, color='black', marker='.' if len(steps) < 50 else None)
  loss_axes.set(title='training loss', xlabel='step', yscale='log')
  history = progress.history
  names = sorted({name for entry in history for name in entry.metrics},
                 key=lambda n: (n == 'ensemble', n))
  for name in names:
    points = [(e.step, e.metrics[name][metric_key]) for e in history
              if metric_key in e.metrics.get(name, {})]
    if points:
      steps, values = zip(*points)
      metric_axes.plot(steps, values, marker='o', label=name,
                       linestyle='--' if name == 'ensemble' else '-')
  metric_axes.set(title=f'validation {metric_key}', xlabel='step')
  if names:
    metric_axes.legend()
  for axes in (loss_axes, metric_axes):
    axes.grid(alpha=0.3)
  figure.tight_layout()
  buffer = io.BytesIO()
  figure.savefig(buffer, format='png')
  plt.close(figure)
  target = paths.resolve(path)
  target.parent.mkdir(parents=True, exist_ok=True)
  target.write_bytes(buffer.getvalue())
  return str(target)
