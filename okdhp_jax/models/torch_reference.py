"""PyTorch twins of the project's hourglass networks, written independently of the JAX models.

The weight-import tests hold the JAX models to them (same weights, same outputs), and
tools/bench_torch.py times their eager train step beside the JAX one.

  HourglassNet  pytorch-pose's plain `hg` (keys hg.{s}.*, res.{s}.*, score.{s}, ...).
  OKDHPNet      the released OKDHP multi-branch key layout (ind_s_{i}, ind_b_{b}_s_{i},
                score_b_{b}_s_{i}, the FAU as convs.{k}, fc, fcs.{b}), with the ensemble over
                each branch's LAST head (the paper's teacher).

Widths scale with `features` (256 in the paper). Needs PyTorch (pip install -e '.[torch]'); tests
import it after pytest.importorskip('torch').
"""

import torch
from torch import nn
from torch.nn import functional as F


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


class _Stem(nn.Module):
  """conv1, bn1, layer1..3 as pytorch-pose names them; `stem(x)` is the 1/4-size feature."""

  def __init__(self, features):
    super().__init__()
    self.inplanes = features // 4
    self.num_feats = features // 2
    self.conv1 = nn.Conv2d(3, self.inplanes, kernel_size=7, stride=2, padding=3, bias=True)
    self.bn1 = nn.BatchNorm2d(self.inplanes)
    self.layer1 = self._make_residual(self.inplanes)
    self.layer2 = self._make_residual(self.inplanes)
    self.layer3 = self._make_residual(self.num_feats)

  def _make_residual(self, planes):
    downsample = None
    if self.inplanes != planes * 2:
      downsample = nn.Sequential(nn.Conv2d(self.inplanes, planes * 2, kernel_size=1, bias=True))
    layers = [Bottleneck(self.inplanes, planes, downsample)]
    self.inplanes = planes * 2
    return nn.Sequential(*layers)

  def stem(self, x):
    x = F.relu(self.bn1(self.conv1(x)))
    x = F.max_pool2d(self.layer1(x), 2, stride=2)
    return self.layer3(self.layer2(x))


class HourglassNet(_Stem):
  """pytorch-pose `hg`: a plain stacked hourglass; forward returns every stack's heatmaps."""

  def __init__(self, num_stacks, features, num_classes, depth):
    super().__init__(features)
    self.num_stacks = num_stacks
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

  def forward(self, x):
    out = []
    x = self.stem(x)
    for i in range(self.num_stacks):
      y = self.fc[i](self.res[i](self.hg[i](x)))
      score = self.score[i](y)
      out.append(score)
      if i < self.num_stacks - 1:
        x = x + self.fc_[i](y) + self.score_[i](score)
    return out


class OKDHPNet(_Stem):
  """The released OKDHP layout. forward -> (heads: shared stacks first, then branch by branch,
  fau_weights [B, branches, J], ensemble [B, J, h, w])."""

  def __init__(self, num_shared, branch_stacks, features, num_classes, depth, fau_hidden=8):
    super().__init__(features)
    self.num_shared, self.branch_stacks = num_shared, tuple(branch_stacks)
    self.depth = depth
    for i in range(num_shared):
      self._add_stack(f's_{i}', features, num_classes, has_next=True)
    for b, stacks in enumerate(self.branch_stacks):
      for i in range(stacks):
        self._add_stack(f'b_{b}_s_{i}', features, num_classes, has_next=i < stacks - 1)
    # FAU: one kxk conv + BN + ReLU path per branch (k = 3, 5, 7, ...), summed, pooled, then
    # Linear features -> hidden and one Linear hidden -> joints per branch.
    self.convs = nn.ModuleList([
        nn.Sequential(nn.Conv2d(features, features, 3 + 2 * k, padding=1 + k),
                      nn.BatchNorm2d(features), nn.ReLU())
        for k in range(len(self.branch_stacks))])
    self.fc = nn.Linear(features, fau_hidden)
    self.fcs = nn.ModuleList([nn.Linear(fau_hidden, num_classes)
                              for _ in self.branch_stacks])

  def _add_stack(self, tag, ch, num_classes, has_next):
    self.inplanes = ch
    setattr(self, f'ind_{tag}', nn.Sequential(
        Hourglass(ch // 2, self.depth), self._make_residual(ch // 2),
        nn.Sequential(nn.Conv2d(ch, ch, 1), nn.BatchNorm2d(ch), nn.ReLU())))
    setattr(self, f'score_{tag}', nn.Conv2d(ch, num_classes, 1))
    if has_next:
      setattr(self, f'_fc_{tag}', nn.Conv2d(ch, ch, 1))
      setattr(self, f'_score_{tag}', nn.Conv2d(num_classes, ch, 1))

  def _stack(self, tag, x, has_next):
    y = getattr(self, f'ind_{tag}')(x)
    score = getattr(self, f'score_{tag}')(y)
    if has_next:
      x = x + getattr(self, f'_fc_{tag}')(y) + getattr(self, f'_score_{tag}')(score)
    return x, score

  def forward(self, x):
    x = self.stem(x)
    fused = sum(conv(x) for conv in self.convs)
    hidden = self.fc(fused.mean(dim=(2, 3)))
    weights = torch.softmax(torch.stack([fc(hidden) for fc in self.fcs], dim=1), dim=1)
    heads = []
    for i in range(self.num_shared):
      x, score = self._stack(f's_{i}', x, True)
      heads.append(score)
    last = []
    for b, stacks in enumerate(self.branch_stacks):
      y = x
      for i in range(stacks):
        y, score = self._stack(f'b_{b}_s_{i}', y, i < stacks - 1)
        heads.append(score)
      last.append(score)
    ensemble = (torch.stack(last, dim=1) * weights[..., None, None]).sum(dim=1)
    return heads, weights, ensemble
