"""The accelerator benchmark: one row per config x dtype x batch, MFU from the model's MACs."""

from __future__ import annotations

import argparse
import glob

import pytest

from okdhp_jax.tools import bench_step, peak_flops

pytestmark = pytest.mark.slow  # compiles a train step per row: not in the fast tier.

TINY_CONFIG = '''
from configs import default


def get_config(arg=None):
  config = default.get_config('runlocal')
  config.model.hourglass.update(features=16, depth=1, num_shared_stacks=0, branch_stacks=(1, 1))
  config.model.fau_hidden = 8
  return config
'''


@pytest.fixture(scope='module')
def tiny_config(tmp_path_factory):
  path = tmp_path_factory.mktemp('configs') / 'tiny.py'
  path.write_text(TINY_CONFIG)
  return str(path)


def test_one_row_in_process_with_a_profile(tiny_config, tmp_path, capsys):
  bench_step.main(['--config', tiny_config, '--batch', '8', '--steps', '2', '--warmup', '0',
                   '--profile', str(tmp_path / 'profile')])
  lines = capsys.readouterr().out.strip().splitlines()
  assert lines[0] == ('| config | devices | dtype | global batch | img/s | step ms | TFLOP/s | '
                      'MFU | first call s | peak GiB |')
  cells = [c.strip() for c in lines[2].strip('|').split('|')]
  assert cells[0] == tiny_config and cells[2] == 'float32' and cells[3] == '8'  # auto on CPU
  assert float(cells[4]) > 0 and float(cells[5]) > 0 and float(cells[6]) > 0
  assert cells[7] == 'n/a'  # a CPU has no peak to divide by.
  # TensorBoard's profile plugin reads the .xplane.pb files jax.profiler writes.
  assert glob.glob(str(tmp_path / 'profile' / '**' / '*.xplane.pb'), recursive=True)
  # ... and under the table, where the profiled steps' time went, read back from that trace.
  summary = lines.index(next(line for line in lines if line.startswith('Where the time goes')))
  assert f'{tiny_config}, float32, global batch 8. 3 profiled steps' in lines[summary]
  kinds = [line.split('|')[1].strip() for line in lines[summary + 3:]]
  assert 'convolution' in kinds and 'elementwise fusion' in kinds


def test_a_row_runs_in_its_own_process(tiny_config):
  # Every row of a several-row table takes this path; one row (bfloat16, while float32 is
  # measured in process above) shows it without paying for two more compiles.
  args = argparse.Namespace(steps=1, warmup=0, profile='')
  row = bench_step.measure_in_child(args, tiny_config, 'bfloat16', 8)
  assert 'error' not in row, row
  assert (row['dtype'], row['batch']) == ('bfloat16', 8) and row['step_ms'] > 0
  line = bench_step.format_rows([row]).splitlines()[2]
  assert [c.strip() for c in line.strip('|').split('|')][2] == 'bfloat16'


def test_measure_counts_training_flops_from_macs(tiny_config, monkeypatch):
  monkeypatch.setattr(peak_flops, 'peak_tflops', lambda kind, dtype: 0.001)  # 1 GFLOP/s
  row = bench_step.measure(tiny_config, 'float32', 8, steps=1, warmup=0)
  from okdhp_jax.models import build_model
  from okdhp_jax.models.stats import model_stats
  from okdhp_jax.tools.config_file import load_config
  config = load_config(tiny_config)
  macs = model_stats(build_model(config.model, 16, (64, 64)), (64, 64, 3)).macs
  assert row['tflops'] == pytest.approx(6 * macs * 8 / (row['step_ms'] / 1e3) / 1e12)
  import jax
  # The peak of every device the step ran on (8 when another module faked 8 CPU devices).
  assert row['mfu'] == pytest.approx(row['tflops'] / (0.001 * jax.device_count()))
