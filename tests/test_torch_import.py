"""PyTorch pytorch-pose hourglass weights load into a plain hourglass with equal outputs."""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

torch = pytest.importorskip('torch')

from okdhp_jax.export.store import load_exported  # pylint: disable=g-import-not-at-top
from okdhp_jax.models import build_model
from okdhp_jax.models.torch_import import load_state_dict, state_dict_to_variables
from okdhp_jax.tools import convert_torch
from okdhp_jax.models.torch_reference import HourglassNet  # pylint: disable=g-import-not-at-top

from model_helpers import randomize_torch

NUM_STACKS = 2
FEATURES = 32  # pytorch-pose: 256 (num_feats 128 * expansion 2, stem 64)
J = 16
DEPTH = 4


@pytest.fixture(scope='module')
def torch_model():
  torch.manual_seed(0)
  model = randomize_torch(HourglassNet(NUM_STACKS, FEATURES, J, DEPTH))
  images = np.random.default_rng(0).normal(size=(2, 64, 64, 3)).astype(np.float32)
  with torch.no_grad():
    outputs = model(torch.from_numpy(images.transpose(0, 3, 1, 2)))
  heatmaps = [o.numpy().transpose(0, 2, 3, 1) for o in outputs]  # NCHW -> NHWC
  return model, images, heatmaps


def test_reference_has_the_pytorch_pose_key_layout(torch_model):
  keys = set(torch_model[0].state_dict())
  for key in ('conv1.weight', 'bn1.running_var', 'layer1.0.downsample.0.weight',
              'layer3.0.conv3.bias', 'hg.1.hg.0.3.0.bn1.weight', 'hg.0.hg.3.2.0.conv2.weight',
              'res.1.0.conv1.weight', 'fc.0.0.weight', 'fc.1.1.running_mean', 'score.1.bias',
              'fc_.0.weight', 'score_.0.weight'):
    assert key in keys, key
  assert 'fc_.1.weight' not in keys and 'layer3.0.downsample.0.weight' not in keys


def assert_close_relative(got, want, rtol=1e-4):
  error = np.max(np.abs(np.asarray(got) - want)) / np.max(np.abs(want))
  assert error < rtol, error


@pytest.mark.slow
def test_converted_checkpoint_matches_pytorch(torch_model, tmp_path, capsys):
  model, images, heatmaps = torch_model
  # A training checkpoint saved from DataParallel: `module.` prefix, extra entries.
  state_dict = {f'module.{k}': v for k, v in model.state_dict().items()}
  path = os.path.join(tmp_path, 'model_best.pth.tar')
  torch.save({'epoch': 3, 'arch': 'hg', 'state_dict': state_dict}, path)

  convert_torch.main(['--checkpoint', path, '--num-stacks', str(NUM_STACKS),
                      '--out', os.path.join(tmp_path, 'export')])
  assert 'pytorch-pose checkpoint -> plain 2-stack hourglass, 16 joints (mpii)' in (
      capsys.readouterr().out)
  variables, description = load_exported(os.path.join(tmp_path, 'export'))
  assert description['num_joints'] == J and description['source'].endswith('.pth.tar')
  assert description['model']['hourglass']['features'] == FEATURES
  flax_model = build_model(ml_collections.ConfigDict(description['model']), J, (64, 64))
  outputs = jax.jit(lambda v, x: flax_model.apply(v, x, train=False))(variables,
                                                                       jnp.asarray(images))
  assert len(outputs.branches[0]) == NUM_STACKS
  for got, want in zip(outputs.branches[0], heatmaps):
    assert_close_relative(got, want)


def test_bare_state_dict_without_prefix(torch_model, tmp_path):
  path = os.path.join(tmp_path, 'bare.pth')
  torch.save(torch_model[0].state_dict(), path)
  state_dict = load_state_dict(path)
  assert 'conv1.weight' in state_dict
  variables = state_dict_to_variables(state_dict, NUM_STACKS)
  np.testing.assert_array_equal(
      variables['params']['stack_1']['hg']['hg_0_3']['conv2']['kernel'],
      state_dict['hg.1.hg.0.3.0.conv2.weight'].transpose(2, 3, 1, 0))
  np.testing.assert_array_equal(variables['batch_stats']['stack_0']['fc_bn']['var'],
                                state_dict['fc.0.1.running_var'])


@pytest.mark.slow
def test_missing_unexpected_and_mismatched_keys_are_named(torch_model):
  state_dict = {k: v.numpy() for k, v in torch_model[0].state_dict().items()}
  missing = dict(state_dict)
  del missing['hg.0.hg.2.1.0.bn2.running_mean']
  with pytest.raises(ValueError, match=r"missing keys \['hg.0.hg.2.1.0.bn2.running_mean'\]"):
    state_dict_to_variables(missing, NUM_STACKS)
  unexpected = dict(state_dict, **{'extra.weight': np.zeros(3)})
  with pytest.raises(ValueError, match=r"unexpected keys \['extra.weight'\]"):
    state_dict_to_variables(unexpected, NUM_STACKS)
  with pytest.raises(ValueError, match=r'--num-stacks 3 given, but the state_dict has 2 stacks'):
    state_dict_to_variables(state_dict, NUM_STACKS + 1)
  mismatched = dict(state_dict)
  mismatched['res.1.0.conv2.weight'] = np.zeros((16, 16, 5, 5), np.float32)
  with pytest.raises(ValueError, match=r"shape mismatch for 'res.1.0.conv2.weight'"):
    state_dict_to_variables(mismatched, NUM_STACKS)


def test_missing_checkpoint_file(tmp_path):
  with pytest.raises(FileNotFoundError, match='nope.pth'):
    load_state_dict(os.path.join(tmp_path, 'nope.pth'))
