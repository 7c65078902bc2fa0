"""Released OKDHP multi-branch checkpoints import with every head, the FAU and the ensemble equal
to PyTorch's; training checkpoints load through the numpy allow-list and nothing else."""

from __future__ import annotations

import contextlib
import io
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

torch = pytest.importorskip('torch')

from okdhp_jax.export.store import load_exported  # pylint: disable=g-import-not-at-top
from okdhp_jax.models import build_model
from okdhp_jax.models import torch_checkpoint
from okdhp_jax.models.torch_import import state_dict_to_variables
from okdhp_jax.tools import convert_torch
from okdhp_jax.models.torch_reference import OKDHPNet

from model_helpers import randomize_torch

# Depth 2, not the released 4 (which made this module ~10 s slower on 2 cores): both kinds of
# hourglass level, the innermost with its fourth residual and one around it, and a depth that
# must be read off the keys, not the default 4; tests/test_torch_import.py imports depth 4.
FEATURES, J, DEPTH, SIZE = 32, 16, 2, 64
# (shared stacks, private stacks per branch): the released HG4 layout (2 shared + 3 x 2) scaled
# to 1 shared, and the released HG2 / hourglass_okd.py layout that shares nothing.
LAYOUTS = {'shared': (1, (2, 2, 2)), 'share_nothing': (0, (2, 2, 2))}


def training_checkpoint(model, path):
  """What the released code saves: DataParallel keys, Adam state, numpy scalars."""
  optimizer = torch.optim.Adam(model.parameters(), lr=2.5e-4)
  heads, _, ensemble = model(torch.zeros(1, 3, SIZE, SIZE))
  (sum(h.mean() for h in heads) + ensemble.mean()).backward()
  optimizer.step()
  optimizer.zero_grad()
  model.eval()
  torch.save({'epoch': 10, 'model': 'pose_okdhp', 'perf': np.float64(0.9012),
              'best_epoch': np.int64(9),
              'state_dict': {f'module.{k}': v for k, v in model.state_dict().items()},
              'optimizer': optimizer.state_dict()}, path)


@pytest.fixture(scope='module', params=[
    'shared', pytest.param('share_nothing', marks=pytest.mark.slow)])
def official(request, tmp_path_factory):
  num_shared, branch_stacks = LAYOUTS[request.param]
  torch.manual_seed(1)
  model = randomize_torch(OKDHPNet(num_shared, branch_stacks, FEATURES, J, DEPTH))
  path = str(tmp_path_factory.mktemp(request.param) / 'checkpoint.pth')
  training_checkpoint(model, path)  # after one Adam step: the weights the file holds.
  images = np.random.default_rng(0).normal(size=(2, SIZE, SIZE, 3)).astype(np.float32)
  with torch.no_grad():
    heads, weights, ensemble = model(torch.from_numpy(images.transpose(0, 3, 1, 2)))
  want = {'heads': [h.numpy().transpose(0, 2, 3, 1) for h in heads],
          'fau_weights': weights.numpy(), 'ensemble': ensemble.numpy().transpose(0, 2, 3, 1)}
  return request.param, model, images, want, path


def assert_close_relative(got, want, rtol=1e-4):
  error = np.max(np.abs(np.asarray(got) - want)) / np.max(np.abs(want))
  assert error < rtol, error


def apply(model_config, variables, images):
  model = build_model(ml_collections.ConfigDict(model_config), J, (SIZE, SIZE))
  return jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, jnp.asarray(images))


@pytest.fixture(scope='module')
def imported(official, tmp_path_factory):
  """convert_torch's export of the whole network, its model.json, its outputs and its log."""
  name, _, images, _, path = official
  out = str(tmp_path_factory.mktemp(f'{name}_export'))
  capture = io.StringIO()
  with contextlib.redirect_stdout(capture):
    convert_torch.main(['--checkpoint', path, '--out', out])
  variables, description = load_exported(out)
  return description, apply(description['model'], variables, images), capture.getvalue()


def test_every_head_the_fau_and_the_ensemble_match_pytorch(official, imported):
  name, _, _, want, _ = official
  num_shared, branch_stacks = LAYOUTS[name]
  description, outputs, log = imported
  assert (f'okdhp checkpoint -> {num_shared} shared + branches of (2, 2, 2) stacks, FAU released'
          in log)
  assert description['layout'] == 'okdhp' and description['dataset'] == 'mpii'
  model = description['model']
  hourglass = model['hourglass']
  assert (hourglass['num_shared_stacks'], tuple(hourglass['branch_stacks'])) == (num_shared,
                                                                                 branch_stacks)
  assert (model['fau'], model['fau_hidden'], hourglass['depth']) == ('released', 8, DEPTH)

  heads = list(outputs.shared) + [h for branch in outputs.branches for h in branch]
  assert len(heads) == len(want['heads']) == num_shared + sum(branch_stacks)
  for got, expected in zip(heads, want['heads']):
    assert_close_relative(got, expected)
  assert_close_relative(outputs.fau_weights, want['fau_weights'])
  assert_close_relative(outputs.ensemble, want['ensemble'])
  # The FAU weights differ across branches and joints: the check above is not of a constant.
  assert np.std(want['fau_weights']) > 1e-3


def test_exported_branch_is_a_plain_hourglass_with_that_branch_outputs(official, imported,
                                                                       tmp_path):
  name, _, images, _, path = official
  num_shared, branch_stacks = LAYOUTS[name]
  full = imported[1]

  convert_torch.main(['--checkpoint', path, '--branch', '1', '--out', str(tmp_path / 'b1')])
  variables, description = load_exported(str(tmp_path / 'b1'))
  assert description['branch'] == 1 and description['model']['fau'] == 'none'
  assert tuple(description['model']['hourglass']['branch_stacks']) == (
      num_shared + branch_stacks[1],)
  plain = apply(description['model'], variables, images)
  branch_heads = list(full.shared) + list(full.branches[1])
  assert len(plain.branches[0]) == len(branch_heads)
  for got, expected in zip(plain.branches[0], branch_heads):
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)


def test_missing_unexpected_and_mis_shaped_keys_are_named(official):
  state_dict = torch_checkpoint.load_state_dict(official[4])
  missing = dict(state_dict)
  del missing['fcs.2.bias']
  with pytest.raises(ValueError, match=r"missing keys \['fcs.2.bias'\], unexpected keys \[\]"):
    state_dict_to_variables(missing)
  extra = dict(state_dict, **{'ind_b_0_s_0.3.weight': np.zeros(3, np.float32)})
  with pytest.raises(ValueError, match=r"unexpected keys \['ind_b_0_s_0.3.weight'\]"):
    state_dict_to_variables(extra)
  bad = dict(state_dict)
  bad['score_b_2_s_1.weight'] = np.zeros((J, FEATURES, 3, 3), np.float32)
  with pytest.raises(ValueError, match=r"shape mismatch for 'score_b_2_s_1.weight'"):
    state_dict_to_variables(bad)
  gap = {k.replace('ind_b_2_', 'ind_b_3_'): v for k, v in state_dict.items()}
  with pytest.raises(ValueError, match=r'branches ind_b_\{b\}_s_\* are numbered \[0, 1, 3\]'):
    state_dict_to_variables(gap)
  with pytest.raises(ValueError, match='neither a pytorch-pose hourglass'):
    state_dict_to_variables({'backbone.conv.weight': np.zeros((1, 1, 1, 1), np.float32)})


def test_branch_of_a_plain_checkpoint_is_refused(tmp_path):
  from okdhp_jax.models.torch_reference import HourglassNet  # pylint: disable=g-import-not-at-top
  path = str(tmp_path / 'plain.pth')
  torch.save(HourglassNet(1, FEATURES, J, 1).state_dict(), path)
  with pytest.raises(ValueError, match='--branch picks a branch of a multi-branch'):
    convert_torch.convert_checkpoint(path, str(tmp_path / 'out'), branch=0)


def test_numpy_scalars_load_only_through_the_allow_list(official, tmp_path):
  path = official[4]
  with pytest.raises(Exception, match='numpy'):
    torch.load(path, map_location='cpu', weights_only=True)  # PyTorch alone refuses them.
  checkpoint = torch_checkpoint.load_checkpoint(path)
  assert checkpoint['perf'] == np.float64(0.9012) and checkpoint['epoch'] == 10
  assert 'state' in checkpoint['optimizer']

  # numpy 1 wrote `numpy.core.multiarray.scalar`; numpy 2 writes `numpy._core...`. The legacy
  # (pre-zip) format with protocol 2 names globals as plain text, so the older name can be set.
  legacy = str(tmp_path / 'legacy.pth')
  torch.save({'perf': np.float64(0.5), 'state_dict': {'w': torch.ones(2)}}, legacy,
             _use_new_zipfile_serialization=False, pickle_protocol=2)
  with open(legacy, 'rb') as f:
    data = f.read()
  with open(legacy, 'wb') as f:
    f.write(data.replace(b'numpy._core.multiarray\n', b'numpy.core.multiarray\n'))
  assert torch_checkpoint.load_checkpoint(legacy)['perf'] == 0.5


class _RunsCode:
  """A pickle payload that would create a file if it were ever unpickled."""

  def __init__(self, marker):
    self.marker = marker

  def __reduce__(self):
    return (open, (self.marker, 'w'))


def test_checkpoint_that_needs_code_is_refused_without_running_it(tmp_path, capsys):
  marker = str(tmp_path / 'payload_ran')
  path = str(tmp_path / 'evil.pth')
  torch.save({'state_dict': {'w': torch.ones(1)}, 'extra': _RunsCode(marker)}, path)
  with pytest.raises(SystemExit) as exit_info:
    convert_torch.main(['--checkpoint', path, '--out', str(tmp_path / 'out')])
  assert exit_info.value.code == 1
  error = capsys.readouterr().err
  assert f"{path} needs ['io.open']" in error or "['builtins.open']" in error, error
  assert 'would run code' in error
  assert not os.path.exists(marker) and not os.path.exists(tmp_path / 'out')
