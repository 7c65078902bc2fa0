"""The one progress-line format of training and evaluation: done/total, rate, ETA."""

from __future__ import annotations

import math
import time


class ProgressLine:
  """'step 120/4500 (2.7%) | 85.3 img/s | ETA 00:51:02' from wall-clock time since (re)start.

  Args:
    total: units of work in all (steps, or people for evaluation).
    images_per_unit: images one unit holds (the global batch for steps, 1 for people).
    start: units already done when timing starts (a resumed run's step).
    label: the word before the count ('step', 'eval').
    rate_unit: what the rate counts ('img/s'; 'frames/s' for a video).
  """

  def __init__(self, total: int, images_per_unit: int, start: int = 0, label: str = 'step',
               rate_unit: str = 'img/s'):
    self.total = total
    self.images_per_unit = images_per_unit
    self.label = label
    self.rate_unit = rate_unit
    self.restart(start)

  def restart(self, done: int) -> None:
    """Counts rates from here (after the first step, which compiles)."""
    self.start = done
    self.start_time = time.time()

  def images_per_second(self, done: int) -> float:
    elapsed = max(time.time() - self.start_time, 1e-6)
    return (done - self.start) * self.images_per_unit / elapsed

  def __call__(self, done: int) -> str:
    units_per_second = self.images_per_second(done) / self.images_per_unit
    eta = (self.total - done) / units_per_second if units_per_second > 0 else math.inf
    eta_text = time.strftime('%H:%M:%S', time.gmtime(eta)) if math.isfinite(eta) else '?'
    percent = 100.0 * done / max(self.total, 1)
    return (f'{self.label} {done}/{self.total} ({percent:.1f}%) | '
            f'{self.images_per_second(done):.1f} {self.rate_unit} | ETA {eta_text}')
