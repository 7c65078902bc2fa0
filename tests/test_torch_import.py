"""PyTorch pytorch-pose hourglass weights load into StackedHourglass with equal outputs."""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

torch = pytest.importorskip('torch')
nn = torch.nn
F = torch.nn.functional

from okdhp_jax.export.store import load_exported  # pylint: disable=g-import-not-at-top
from okdhp_jax.models import build_model
from okdhp_jax.models.torch_import import load_torch_state_dict, state_dict_to_variables
from okdhp_jax.tools import convert_torch

NUM_STACKS = 2
FEATURES = 32  # pytorch-pose: 256 (num_feats 128 * expansion 2, stem 64)
J = 16
DEPTH = 4


# ---- The independent reference: pytorch-pose `hg`, widths scaled by FEATURES/256.
class Bottleneck(nn.Module):
  expansion = 2

  def __init__(self, inplanes, planes, downsample=None):
    super().__init__()
    self.bn1 = nn.BatchNorm2d(inplanes)
    self.conv1 = nn.Conv2d(inplanes, planes, kernel_size=1, bias=True)
    self.bn2 = nn.BatchNorm2d(planes)
    self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=1, padding=1, bias=True)
    self.bn3 = nn.BatchNorm2d(planes)
    self.conv3 = nn.Conv2d(planes, planes * 2, kernel_size=1, bias=True)
    self.downsample = downsample

  def forward(self, x):
    out = self.conv1(F.relu(self.bn1(x)))
    out = self.conv2(F.relu(self.bn2(out)))
    out = self.conv3(F.relu(self.bn3(out)))
    residual = x if self.downsample is None else self.downsample(x)
    return out + residual


class Hourglass(nn.Module):

  def __init__(self, planes, depth):
    super().__init__()
    self.depth = depth
    levels = []
    for i in range(depth):
      res = [nn.Sequential(Bottleneck(planes * 2, planes)) for _ in range(4 if i == 0 else 3)]
      levels.append(nn.ModuleList(res))
    self.hg = nn.ModuleList(levels)

  def _forward(self, n, x):
    up1 = self.hg[n - 1][0](x)
    low1 = self.hg[n - 1][1](F.max_pool2d(x, 2, stride=2))
    low2 = self._forward(n - 1, low1) if n > 1 else self.hg[n - 1][3](low1)
    low3 = self.hg[n - 1][2](low2)
    return up1 + F.interpolate(low3, scale_factor=2)

  def forward(self, x):
    return self._forward(self.depth, x)


class HourglassNet(nn.Module):

  def __init__(self, num_stacks, features, num_classes, depth):
    super().__init__()
    self.inplanes = features // 4
    self.num_feats = features // 2
    self.num_stacks = num_stacks
    self.conv1 = nn.Conv2d(3, self.inplanes, kernel_size=7, stride=2, padding=3, bias=True)
    self.bn1 = nn.BatchNorm2d(self.inplanes)
    self.layer1 = self._make_residual(self.inplanes)
    self.layer2 = self._make_residual(self.inplanes)
    self.layer3 = self._make_residual(self.num_feats)
    ch = self.num_feats * 2
    hg, res, fc, score, fc_, score_ = [], [], [], [], [], []
    for i in range(num_stacks):
      hg.append(Hourglass(self.num_feats, depth))
      res.append(self._make_residual(self.num_feats))
      fc.append(nn.Sequential(nn.Conv2d(ch, ch, kernel_size=1, bias=True), nn.BatchNorm2d(ch),
                              nn.ReLU()))
      score.append(nn.Conv2d(ch, num_classes, kernel_size=1, bias=True))
      if i < num_stacks - 1:
        fc_.append(nn.Conv2d(ch, ch, kernel_size=1, bias=True))
        score_.append(nn.Conv2d(num_classes, ch, kernel_size=1, bias=True))
    self.hg, self.res, self.fc = nn.ModuleList(hg), nn.ModuleList(res), nn.ModuleList(fc)
    self.score, self.fc_, self.score_ = (nn.ModuleList(score), nn.ModuleList(fc_),
                                         nn.ModuleList(score_))

  def _make_residual(self, planes):
    downsample = None
    if self.inplanes != planes * 2:
      downsample = nn.Sequential(nn.Conv2d(self.inplanes, planes * 2, kernel_size=1, bias=True))
    layers = [Bottleneck(self.inplanes, planes, downsample)]
    self.inplanes = planes * 2
    return nn.Sequential(*layers)

  def forward(self, x):
    out = []
    x = F.relu(self.bn1(self.conv1(x)))
    x = self.layer1(x)
    x = F.max_pool2d(x, 2, stride=2)
    x = self.layer3(self.layer2(x))
    for i in range(self.num_stacks):
      y = self.fc[i](self.res[i](self.hg[i](x)))
      score = self.score[i](y)
      out.append(score)
      if i < self.num_stacks - 1:
        x = x + self.fc_[i](y) + self.score_[i](score)
    return out


@pytest.fixture(scope='module')
def torch_model():
  torch.manual_seed(0)
  model = HourglassNet(NUM_STACKS, FEATURES, J, DEPTH)
  with torch.no_grad():
    for module in model.modules():
      if isinstance(module, nn.BatchNorm2d):
        module.weight.uniform_(0.5, 1.5)
        module.bias.normal_(0, 0.1)
        module.running_mean.normal_(0, 0.1)
        module.running_var.uniform_(0.5, 1.5)
      elif isinstance(module, nn.Conv2d):
        module.bias.normal_(0, 0.05)
  model.eval()
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
def test_converted_checkpoint_matches_pytorch(torch_model, tmp_path):
  model, images, heatmaps = torch_model
  # A training checkpoint saved from DataParallel: `module.` prefix, extra entries.
  state_dict = {f'module.{k}': v for k, v in model.state_dict().items()}
  path = os.path.join(tmp_path, 'model_best.pth.tar')
  torch.save({'epoch': 3, 'arch': 'hg', 'state_dict': state_dict}, path)

  convert_torch.main(['--checkpoint', path, '--num-stacks', str(NUM_STACKS),
                      '--out', os.path.join(tmp_path, 'export')])
  variables, description = load_exported(os.path.join(tmp_path, 'export'))
  assert description['num_joints'] == J and description['source'].endswith('.pth.tar')
  assert description['model']['features'] == FEATURES
  flax_model = build_model(ml_collections.ConfigDict(description['model']), J, (64, 64))
  outputs = jax.jit(lambda v, x: flax_model.apply(v, x, train=False))(variables,
                                                                       jnp.asarray(images))
  assert len(outputs.branches[0]) == NUM_STACKS
  for got, want in zip(outputs.branches[0], heatmaps):
    assert_close_relative(got, want)


def test_bare_state_dict_without_prefix(torch_model, tmp_path):
  path = os.path.join(tmp_path, 'bare.pth')
  torch.save(torch_model[0].state_dict(), path)
  state_dict = load_torch_state_dict(path)
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
  with pytest.raises(ValueError, match=r"missing keys \[.*'fc_.1.weight'"):
    state_dict_to_variables(state_dict, NUM_STACKS + 1)
  mismatched = dict(state_dict)
  mismatched['res.1.0.conv2.weight'] = np.zeros((16, 16, 5, 5), np.float32)
  with pytest.raises(ValueError, match=r"shape mismatch for 'res.1.0.conv2.weight'"):
    state_dict_to_variables(mismatched, NUM_STACKS)


def test_missing_checkpoint_file(tmp_path):
  with pytest.raises(FileNotFoundError, match='nope.pth'):
    load_torch_state_dict(os.path.join(tmp_path, 'nope.pth'))
