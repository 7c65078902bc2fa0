"""tools/bench_torch: the PyTorch side does our step's work (the FAU is trained), and configs
without a PyTorch twin are refused by key. The JAX side is bench_step's own (test_bench_step)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip('torch')

from configs import default  # pylint: disable=g-import-not-at-top
from okdhp_jax.tools import bench_torch  # pylint: disable=g-import-not-at-top


def tiny_config(**model):
  """A tiny OKDHP-HG; `model` sets shared config.model fields or config.model.hourglass ones."""
  config = default.get_config()
  config.model.hourglass.update(features=16, depth=1, num_shared_stacks=1, branch_stacks=(1, 1, 1))
  config.model.fau_hidden = 4
  for key, value in model.items():
    (config.model if key in config.model else config.model.hourglass)[key] = value
  config.data.input_size = (32, 32)
  config.data.heatmap_size = (8, 8)
  return config


def test_the_okdhp_step_trains_every_stack_and_the_fau():
  """Every parameter gets a gradient, the FAU's convs included: they feed only the ensemble,
  so a step whose loss left out the ensemble's terms would skip their backward pass."""
  net, step = bench_torch.torch_train_step(tiny_config(), batch_size=2)
  before = {name: p.detach().clone() for name, p in net.named_parameters()}
  step()
  without_grad = [name for name, p in net.named_parameters() if p.grad is None]
  assert not without_grad, without_grad
  assert not torch.equal(before['convs.2.0.weight'], net.convs[2][0].weight)  # Adam moved it
  assert bench_torch.torch_step_ms(tiny_config(), 2, steps=1, warmup=0) > 0


def test_a_plain_config_gets_the_plain_hourglass():
  config = tiny_config(num_shared_stacks=0, branch_stacks=(2,), fau='none')
  net, multi_branch = bench_torch.torch_network(config.model, 16)
  assert (type(net).__name__, multi_branch, net.num_stacks) == ('HourglassNet', False, 2)


@pytest.mark.parametrize('model, message', [
    (dict(fau='paper'), r"config.model.fau='paper': .* released FAU only"),
    (dict(name='mobilepose'), r"config.model.name='mobilepose': only hourglass"),
])
def test_configs_without_a_pytorch_twin_are_refused_by_key(model, message):
  with pytest.raises(ValueError, match=message):
    bench_torch.torch_network(tiny_config(**model).model, 16)


def test_the_table_shows_a_failed_jax_row():
  table = bench_torch.format_table([
      {'config': 'a.py', 'input': '64x64', 'batch': 2, 'torch_ms': 100.0, 'jax_ms': 80.0},
      {'config': 'b.py', 'input': '64x64', 'batch': 2, 'torch_ms': 100.0,
       'jax_error': 'exit 1: boom'}])
  assert '| a.py | 64x64 | 2 | 100 | 80 | 1.25x |' in table
  assert '| b.py | 64x64 | 2 | 100 | failed: exit 1: boom |  |' in table


def test_a_bfloat16_step_runs_under_autocast_and_trains():
  net, step = bench_torch.torch_train_step(tiny_config(), batch_size=2, dtype='bfloat16')
  before = net.convs[2][0].weight.detach().clone()
  step()
  assert net.convs[2][0].weight.dtype == torch.float32  # parameters stay float32
  assert not torch.equal(before, net.convs[2][0].weight)


TINY_CONFIG_FILE = '''
from configs import default
def get_config(arg=None):
  config = default.get_config()
  config.model.hourglass.update(features=16, depth=1, num_shared_stacks=1, branch_stacks=(1, 1, 1))
  config.model.fau_hidden = 4
  config.data.input_size = (32, 32)
  config.data.heatmap_size = (8, 8)
  return config
'''


def _bench_step_row(config, dtype, batch, step_ms, *, steps=10, xla_flags=''):
  """A row as bench_step --results keeps it (only the fields bench_torch reads matter)."""
  return {'config': config, 'devices': '1 x fake', 'dtype': dtype, 'batch': batch,
          'step_ms': step_ms,
          'request': {'config': config, 'dtype': dtype, 'batch': batch, 'steps': steps,
                      'warmup': 2, 'profile': False, 'xla_flags': xla_flags}}


def test_jax_times_come_from_the_matching_bench_step_row(tmp_path, monkeypatch, capsys):
  from okdhp_jax.tools import bench_step  # pylint: disable=g-import-not-at-top
  config = tmp_path / 'tiny.py'
  config.write_text(TINY_CONFIG_FILE)
  results = str(tmp_path / 'rows.jsonl')
  for row in (_bench_step_row(str(config), 'float32', 2, 40.0),
              _bench_step_row(str(config), 'float32', 2, 30.0, steps=20),
              _bench_step_row(str(config), 'bfloat16', 2, 5.0),
              _bench_step_row(str(config), 'float32', 4, 6.0),
              _bench_step_row(str(config), 'float32', 2, 7.0, xla_flags='--xla_foo=1')):
    bench_step.append_result(results, row)
  monkeypatch.delenv('XLA_FLAGS', raising=False)
  found = bench_torch.jax_row_from_results(results, str(config), 'float32', 2)
  assert found['step_ms'] == 30.0  # the most timed steps among the matching rows
  assert bench_torch.jax_row_from_results(results, str(config), 'bfloat16', 4) is None

  # The whole tool with that file: no JAX process, PyTorch timed here on the CPU.
  bench_torch.main(['--config', str(config), '--batch', '2', '--steps', '1', '--warmup', '0',
                    '--device', 'cpu', '--jax-results', results])
  out = capsys.readouterr().out
  assert f'{config}: JAX from {results}' in out
  assert 'float32 train step: PyTorch' in out and 'against JAX (bench_step) on 1 x fake' in out
  assert f'| {config} | 32x32 | 2 |' in out and '| 30 |' in out


def test_a_missing_jax_results_file_is_refused_before_timing(tmp_path, capsys):
  with pytest.raises(SystemExit):
    bench_torch.main(['--jax-results', str(tmp_path / 'missing.jsonl')])
  assert 'missing.jsonl is not a file' in capsys.readouterr().err
