"""Pieces of the training loop that need no model: the NaN stop and the progress line."""

from __future__ import annotations

import numpy as np
import pytest

from okdhp_jax import train


def test_non_finite_loss_stops_with_the_last_good_checkpoint():
  metrics = {'loss': np.float32(np.nan), 'kl': np.float32(0.5), 'grad_norm': np.float32(np.inf)}
  with pytest.raises(train.NonFiniteLossError) as error:
    train._check_finite(metrics, step=120, last_good_step=100, checkpoint_dir='/w/checkpoints')
  message = str(error.value)
  assert 'step 120' in message and 'grad_norm' in message and 'loss' in message
  assert 'step 100' in message and '/w/checkpoints' in message


def test_finite_metrics_pass_through_as_floats():
  scalars = train._check_finite({'loss': np.float32(0.25)}, 3, 0, '/w')
  assert scalars == {'loss': 0.25}


def test_progress_line_reports_rate_and_eta():
  line = train._ProgressLine(total_steps=100, global_batch=16, start_step=0)
  line.start_time -= 10.0  # pretend 10 s passed for 20 steps: 2 steps/s, 32 img/s.
  text = line(20)
  assert text.startswith('step 20/100 (20.0%)')
  assert '32.0 img/s' in text and 'ETA 00:00:40' in text
