"""tools/bench_torch: the PyTorch side does our step's work (the FAU is trained), and configs
without a PyTorch twin are refused by key. The JAX side is bench_step's own (test_bench_step)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip('torch')

from configs import default  # pylint: disable=g-import-not-at-top
from okdhp_jax.tools import bench_torch  # pylint: disable=g-import-not-at-top


def tiny_config(**model):
  config = default.get_config()
  config.model.update(dict(features=16, depth=1, fau_hidden=4, num_shared_stacks=1,
                           branch_stacks=(1, 1, 1)), **model)
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
