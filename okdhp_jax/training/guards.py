"""What stops a run early, and how: non-finite or diverging losses, and preemption (SIGTERM).

Each stop raises an exception whose message says what happened, which checkpoint is the last
good one and how to go on; `main` prints it as one line. The loop checks the loss before it
saves, so a diverged state is never checkpointed or exported.
"""

from __future__ import annotations

import logging
import math
import signal
import statistics
from typing import Any, Iterable


class NonFiniteLossError(RuntimeError):
  """Training produced a NaN or infinite loss; the last good checkpoint is kept."""

  explained = True  # its message says what happened and what to do (main prints it alone).


class DivergenceError(RuntimeError):
  """The loss grew far past its recent level without becoming inf or NaN."""

  explained = True


class PreemptedError(RuntimeError):
  """SIGTERM arrived (a preempted VM, a SLURM time limit); a checkpoint was saved."""

  exit_code = 128 + signal.SIGTERM  # what a process killed by SIGTERM reports: not finished.


def _advice(last_good_step: int | None, checkpoint_dir: Any) -> str:
  where = ('no checkpoint was written yet' if last_good_step is None else
           f'the last good checkpoint is step {last_good_step} in {checkpoint_dir}')
  return (f'Training stopped; {where}. Lower config.optim.learning_rate or check the data, '
          'then rerun with the same --workdir to resume from it.')


class LossGuard:
  """Raises when a fetched loss is non-finite or `factor` times the median of recent ones.

  The median of the last `window` checked losses is the reference (a median, so one spike
  does not move it). Until `min_history` losses are known, the largest of them is: early
  losses fall fast, so a median of a few could flag a healthy run, but a loss `factor` times
  the largest seen so far is divergence whatever the history. The loop checks the first step
  of every start, whose loss is that of the parameters it starts from (on a fresh run, the
  untrained network's): a run wrong from its first update is held to `factor` times that
  loss. A resumed run starts from the losses the checkpoint's progress recorded, so a
  learning rate raised on resume is caught at its first check. factor <= 0 turns the
  divergence test off.
  """

  def __init__(self, factor: float, window: int = 20, min_history: int = 5,
               history: Iterable[float] = ()):
    self.factor, self.window, self.min_history = float(factor), int(window), int(min_history)
    self.recent = [float(v) for v in history if math.isfinite(float(v))][-self.window:]

  def check(self, scalars: dict[str, float], step: int, last_good_step: int | None,
            checkpoint_dir: Any) -> None:
    bad = sorted(k for k, v in scalars.items() if not math.isfinite(v))
    loss = scalars.get('loss')
    if bad:
      raise NonFiniteLossError(
          f'non-finite training metrics at step {step}: {", ".join(bad)} (loss={loss}). '
          + _advice(last_good_step, checkpoint_dir))
    if loss is None:
      return
    if self.factor > 0 and self.recent:
      if len(self.recent) >= self.min_history:
        reference, what = statistics.median(self.recent), 'the median'
      else:
        reference, what = max(self.recent), 'the largest'
      if reference > 0 and loss > self.factor * reference:
        raise DivergenceError(
            f'training diverged at step {step}: loss {loss:.4g} is {loss / reference:.3g} times '
            f'{what} {reference:.4g} of the last {len(self.recent)} checked losses (limit '
            f'config.train.divergence_factor={self.factor:g}). '
            + _advice(last_good_step, checkpoint_dir))
    self.recent = (self.recent + [loss])[-self.window:]


class PreemptionWatch:
  """Notices SIGTERM so the loop can save and stop at the next step boundary.

  One process: a SIGTERM handler sets a flag (the previous handler is restored by `close`).
  Several processes: JAX's preemption sync point, so every process stops at the same step and
  the collective checkpoint save cannot deadlock (`jax.distributed` watches the signal there).
  """

  def __init__(self):
    import jax  # pylint: disable=g-import-not-at-top  (main imports this module before jax)
    self.received = False
    self._multi_process = jax.process_count() > 1
    self._previous = None
    if not self._multi_process:
      try:
        self._previous = signal.signal(signal.SIGTERM, self._on_sigterm)
      except ValueError:  # not the main thread (e.g. called from a test runner's worker).
        logging.warning('SIGTERM will not save a checkpoint: not on the main thread')

  def _on_sigterm(self, signum, frame):  # pylint: disable=unused-argument
    self.received = True

  def should_stop(self, step: int) -> bool:
    if self._multi_process:
      from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
      try:
        return bool(multihost_utils.reached_preemption_sync_point(step))
      except RuntimeError as error:  # jax.distributed started without its preemption service.
        logging.warning('SIGTERM will not save a checkpoint: %s', error)
        self._multi_process = False
        return False
    return self.received

  def close(self) -> None:
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)
      self._previous = None
