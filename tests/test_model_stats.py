"""Parameter and MAC counts against the paper's table and hand-computed small cases."""

from __future__ import annotations

import flax.linen as nn
import pytest

from okdhp_jax.models import MultiBranchHourglass, build_model, plain_hourglass_config
from okdhp_jax.models.stats import model_stats
from okdhp_jax.tools import model_stats as model_stats_tool

# The paper's sizes: (params in M, GMACs) at 256x256 input, 16 joints.
PAPER = {
    'HG2': (6.73, 8.99),
    'HG4': (13.02, 15.36),
    'HG8': (25.59, 28.09),
    'OKDHP-HG4 balanced released FAU': (30.92, 49.8),
}


def assert_within(value, paper, fraction):
  assert abs(value - paper) <= fraction * paper, (value, paper)


@pytest.mark.slow
@pytest.mark.parametrize('num_stacks', [2, 4, 8])
def test_hourglass_sizes_match_the_paper(num_stacks):
  stats = model_stats(build_model(plain_hourglass_config(num_stacks), 16), (256, 256, 3))
  params, gmacs = PAPER[f'HG{num_stacks}']
  assert_within(stats.params / 1e6, params, 0.005)
  assert_within(stats.macs / 1e9, gmacs, 0.01)


@pytest.mark.slow
def test_okdhp_hg4_with_released_fau_matches_the_paper():
  stats = model_stats(MultiBranchHourglass(16, 2, (2, 2, 2), fau='released'), (256, 256, 3))
  params, gmacs = PAPER['OKDHP-HG4 balanced released FAU']
  assert_within(stats.params / 1e6, params, 0.005)
  assert_within(stats.macs / 1e9, gmacs, 0.01)


class _Tiny(nn.Module):

  @nn.compact
  def __call__(self, x, *, train):
    x = nn.Conv(8, (3, 3), strides=2, padding=1)(x)          # 10x10 -> 5x5
    x = nn.Conv(8, (3, 3), feature_group_count=4)(x)          # grouped
    x = nn.BatchNorm(use_running_average=not train)(x)
    return nn.Dense(5)(x.reshape(x.shape[0], -1))


def test_hand_computed_counts():
  stats = model_stats(_Tiny(), (10, 10, 4))
  conv1 = 3 * 3 * 4 * 8
  conv2 = 3 * 3 * 2 * 8
  dense = 5 * 5 * 8 * 5
  assert stats.macs == conv1 * 25 + conv2 * 25 + dense
  # Kernels + biases + BatchNorm scale and bias; running statistics do not count.
  assert stats.params == (conv1 + 8) + (conv2 + 8) + 2 * 8 + (dense + 5)


@pytest.mark.slow
def test_tool_prints_the_training_network_and_its_student(capsys):
  model_stats_tool.main(['--config', 'configs/default.py:runlocal'])
  lines = capsys.readouterr().out.strip().splitlines()
  assert 'params (M)' in lines[0] and 'GMACs' in lines[0] and 'kind' in lines[0]
  assert len(lines) == 3
  assert lines[1].startswith('config: hourglass') and ' training ' in lines[1]
  assert 'student' in lines[2] and ' deployed ' in lines[2]
  model_stats_tool.main(['--config', 'configs/hg4_baseline.py:runlocal'])
  lines = capsys.readouterr().out.strip().splitlines()
  assert len(lines) == 2 and ' both ' in lines[1]


def test_all_needs_no_config(capsys, monkeypatch):
  every_variant = model_stats_tool.paper_variants
  monkeypatch.setattr(model_stats_tool, 'paper_variants', lambda: every_variant()[:1])
  model_stats_tool.main(['--all'])
  lines = capsys.readouterr().out.strip().splitlines()
  assert lines[1].split()[:2] == ['HG2', 'deployed']


def test_tool_lists_every_paper_variant():
  variants = model_stats_tool.paper_variants()
  names = [name for name, _, _ in variants]
  kinds = {name: kind for name, kind, _ in variants}
  assert kinds['HG4'] == 'deployed' and kinds['OKDHP-HG4 balanced fau=released'] == 'training'
  assert names[:3] == ['HG2', 'HG4', 'HG8']
  for fau in ('none', 'released', 'paper'):
    assert f'OKDHP-HG4 balanced fau={fau}' in names
    assert f'OKDHP-HG4 unbalanced fau={fau}' in names
  for backbone in ('resnet18', 'mobilenetv2', 'shufflenetv2'):
    assert f'MobilePose-{backbone}' in names


def test_tool_rejects_a_missing_config():
  with pytest.raises(FileNotFoundError, match='configs/nope.py'):
    model_stats_tool.main(['--config', 'configs/nope.py'])
