"""The OKDHP multi-branch hourglass: shared stacks, then private stacks per branch, plus FAU.

  stem -> shared_0 .. shared_{S-1} -> branch_b_stack_0 .. branch_b_stack_{n_b-1}  (per branch b)
  stem -> fau -> weights [batch, branches, joints]
  ensemble = sum_b fau_weights[:, b, j] * (branch b's LAST heatmaps)[..., j]

With `num_shared_stacks=0, branch_stacks=(N,), fau='none'` it is the plain N-stack hourglass.
A network with ONE branch names its stacks `stem`, `stack_0` .. `stack_{S+n-1}` (shared first),
so the plain baseline, an exported branch and a converted PyTorch model (pytorch-pose `hg`)
share one variable layout. With several branches the names are `shared_k` and
`branch_{b}_stack_k`; exporting branch b is then a re-keying, shared_k -> stack_k and
branch_b_stack_k -> stack_{S+k} (`HourglassSpec.export_branch`).

`HourglassSpec` registers it as `config.model.name='hourglass'`, with its fields in
`config.model.hourglass`: num_shared_stacks, branch_stacks, features, depth, fuse_branches
(whether the branches' stacks run as one vmapped computation: models/fused_branches.py),
pointwise_matmul (whether 1x1 convs are matrix products: models/hourglass.py `conv`) and remat
(whether a training step's bottlenecks recompute their convolutions' inputs: `RematBottleneck`).
"""

from __future__ import annotations

from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp

from okdhp_jax import sharding
from okdhp_jax.models.fau import ensemble_heatmaps, make_fau
from okdhp_jax.models.fused_branches import apply_stacked, groups_by
from okdhp_jax.models.hourglass import HourglassStack, Stem
from okdhp_jax.models.outputs import PoseOutputs
from okdhp_jax.models.registry import (NetworkSpec, compute_dtypes, network_config, register,
                                       rename_variables)
from okdhp_jax.precision import at_least_float32


# config.model.hourglass.fuse_branches: whether the branches' private stacks run as one
# vmapped computation, .pointwise_matmul: whether 1x1 convs are matrix products (models/
# hourglass.py `conv`), and .remat: whether a training step's bottlenecks recompute their
# convolutions' inputs in the backward pass (`RematBottleneck`). 'gpu' (the default of all
# three) while tracing for a GPU, where launches cost and memory is what bounds the batch; a CPU
# keeps the per-branch convolutions (XLA's CPU backend computes a grouped convolution slower
# than its groups one by one) and a CPU and a TPU keep their programs. None changes the
# variables or the outputs.
GPU_CHOICES = sharding.GPU_CHOICES


def shared_name(k: int, num_branches: int) -> str:
  return f'stack_{k}' if num_branches == 1 else f'shared_{k}'


def branch_stack_name(branch: int, k: int, num_shared_stacks: int, num_branches: int) -> str:
  if num_branches == 1:
    return f'stack_{num_shared_stacks + k}'
  return f'branch_{branch}_stack_{k}'


class MultiBranchHourglass(nn.Module):
  """`images [b, H, W, 3] -> PoseOutputs`; heatmaps [b, H/4, W/4, J], float32 (float64 for
  a float64 network: numerical checks keep their precision end to end)."""

  num_joints: int
  num_shared_stacks: int = 2
  branch_stacks: tuple[int, ...] = (2, 2, 2)
  features: int = 256
  depth: int = 4
  fau: str = 'released'
  fau_hidden: int = 64
  fuse_branches: str = 'gpu'
  pointwise_matmul: str = 'gpu'
  remat: str = 'gpu'  # a training step's bottlenecks recompute their convolutions' inputs
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, images: jax.Array, *, train: bool) -> PoseOutputs:
    # Only a backward pass recomputes: evaluation and export run the plain bottlenecks.
    remat = train and sharding.chosen_for_gpu(self.remat)
    kw = dict(features=self.features, depth=self.depth, dtype=self.dtype,
              param_dtype=self.param_dtype,
              matmul_1x1=sharding.chosen_for_gpu(self.pointwise_matmul), remat=remat)
    num_branches = len(self.branch_stacks)
    stem = Stem(self.features, dtype=self.dtype, param_dtype=self.param_dtype,
                matmul_1x1=kw['matmul_1x1'], remat=remat, name='stem')(images, train=train)
    x = stem
    shared = []
    for k in range(self.num_shared_stacks):
      # Every branch has at least one private stack, so shared stacks always feed a next one.
      name = shared_name(k, num_branches)
      x, score = HourglassStack(self.num_joints, has_next=True, name=name, **kw)(x, train=train)
      shared.append(at_least_float32(score))

    fuse = sharding.chosen_for_gpu(self.fuse_branches)
    if num_branches > 1 and not self.is_initializing() and fuse:
      branches = self._fused_private_stacks(x, kw, train)
    else:
      # Inline rather than a method: Flax names a method's operations after it, and the
      # per-branch program (every CPU's, every export's) keeps the names it had.
      branches = []
      for b, num_private in enumerate(self.branch_stacks):
        y = x
        heatmaps = []
        for k in range(num_private):
          name = branch_stack_name(b, k, self.num_shared_stacks, num_branches)
          y, score = HourglassStack(self.num_joints, has_next=k < num_private - 1, name=name,
                                    **kw)(y, train=train)
          heatmaps.append(at_least_float32(score))
        branches.append(tuple(heatmaps))

    fau = make_fau(self.fau, num_branches=num_branches, num_joints=self.num_joints,
                   features=self.features, hidden=self.fau_hidden, dtype=self.dtype,
                   param_dtype=self.param_dtype)
    weights = None if fau is None else fau(stem, train=train)
    last = tuple(h[-1] for h in branches)
    return PoseOutputs(shared=tuple(shared), branches=tuple(branches), fau_weights=weights,
                       ensemble=ensemble_heatmaps(last, weights))

  def _fused_private_stacks(self, x, kw, train) -> tuple[tuple[jax.Array, ...], ...]:
    """The branches' heatmaps (one per private stack), as the per-branch loop in `__call__`
    computes them, each level's stacks of one shape as one vmapped computation
    (models/fused_branches.py) that reads and writes the same per-branch variables.

    At level k the branches with more than k private stacks run; those with a next stack and
    those ending there (no `fc_`/`score_` convs) are two groups. Between levels the inputs stay
    stacked along a leading [branches] axis.
    """
    num_branches = len(self.branch_stacks)
    heatmaps = [[] for _ in range(num_branches)]
    members, stacked = list(range(num_branches)), None  # None: every member reads x
    for k in range(max(self.branch_stacks)):
      has_next = [k < self.branch_stacks[b] - 1 for b in members]
      next_members, next_stacked = [], None
      for flag, rows in groups_by(has_next).items():
        group = [members[i] for i in rows]
        names = [branch_stack_name(b, k, self.num_shared_stacks, num_branches) for b in group]
        variables = [{col: tree[name] for col, tree in self.variables.items() if name in tree}
                     for name in names]
        if stacked is None:
          inputs = x
        else:
          inputs = stacked if len(rows) == len(members) else stacked[jnp.asarray(rows)]
        stack = HourglassStack(self.num_joints, has_next=flag, parent=None, **kw)
        (y, score), statistics = apply_stacked(stack, variables, inputs,
                                               shared_input=stacked is None, train=train)
        for name, values in zip(names, statistics):  # none unless training
          self.put_variable('batch_stats', name, values)
        for i, b in enumerate(group):
          heatmaps[b].append(at_least_float32(score[i]))
        if flag:
          next_members, next_stacked = group, y
      members, stacked = next_members, next_stacked
    return tuple(tuple(h) for h in heatmaps)


STEM_STRIDE = 4


def plain_hourglass_config(num_stacks: int, *, features: int = 256, depth: int = 4,
                           dtype: str = 'float32', param_dtype: str = 'float32') -> dict[str, Any]:
  """`config.model` (a dict) of a plain `num_stacks`-stack hourglass: one branch, no FAU."""
  return network_config('hourglass', dtype=dtype, param_dtype=param_dtype, num_shared_stacks=0,
                        branch_stacks=(int(num_stacks),), features=int(features),
                        depth=int(depth))


def _gpu_choice(fields: Mapping[str, Any], key: str) -> str:
  # An export's model.json from before the field existed has none: the default. One from
  # before remat was a GPU choice has True or False.
  value = fields.get(key, 'gpu')
  if isinstance(value, bool):
    return 'always' if value else 'never'
  return value


def _branch_stacks(fields: Mapping[str, Any]) -> tuple[int, ...]:
  return tuple(int(n) for n in fields['branch_stacks'])


@register('hourglass')
class HourglassSpec(NetworkSpec):
  """`MultiBranchHourglass` from `config.model.hourglass`; deploys as a plain hourglass."""

  def default_config(self) -> dict[str, Any]:
    # OKDHP-HG4 as the paper trains it: half of the 4 stacks shared, three branches.
    # fuse_branches, pointwise_matmul, remat: see GPU_CHOICES; they change the program, never
    # the variables or the outputs.
    return {'num_shared_stacks': 2, 'branch_stacks': (2, 2, 2), 'features': 256, 'depth': 4,
            'fuse_branches': 'gpu', 'pointwise_matmul': 'gpu', 'remat': 'gpu'}

  def check(self, model_config, num_joints, input_size) -> None:
    del num_joints, input_size
    fields = self.fields(model_config)
    branch_stacks = _branch_stacks(fields)
    if not branch_stacks:
      raise ValueError('config.model.hourglass.branch_stacks must be non-empty: one entry '
                       '(private stack count) per branch, e.g. (2, 2, 2), or (N,) for a plain '
                       'network')
    if any(n < 1 for n in branch_stacks):
      raise ValueError(
          f'config.model.hourglass.branch_stacks entries must be >= 1 (every branch needs a '
          f'private stack; share stacks with config.model.hourglass.num_shared_stacks), got '
          f'{branch_stacks}')
    if int(fields['num_shared_stacks']) < 0:
      raise ValueError(f'config.model.hourglass.num_shared_stacks must be >= 0, got '
                       f'{fields["num_shared_stacks"]}')
    features = int(fields['features'])
    if features < 4 or features % 4:
      raise ValueError(f'config.model.hourglass.features must be a positive multiple of 4, '
                       f'got {features}')
    if int(fields['depth']) < 1:
      raise ValueError(f'config.model.hourglass.depth must be >= 1, got {fields["depth"]}')
    for key in ('fuse_branches', 'pointwise_matmul', 'remat'):
      if _gpu_choice(fields, key) not in GPU_CHOICES:
        raise ValueError(f'config.model.hourglass.{key} must be one of {GPU_CHOICES}, '
                         f'got {fields[key]!r}')

  def input_divisor(self, model_config) -> int:
    return STEM_STRIDE * 2 ** int(self.fields(model_config)['depth'])

  def divisor_reason(self, model_config) -> str:
    depth = int(self.fields(model_config)['depth'])
    return (f'the stem (stride {STEM_STRIDE}) and {depth} hourglass halvings, '
            'config.model.hourglass.depth')

  def num_branches(self, model_config) -> int:
    return len(_branch_stacks(self.fields(model_config)))

  def build(self, model_config, num_joints: int) -> MultiBranchHourglass:
    fields = self.fields(model_config)
    return MultiBranchHourglass(
        num_joints=num_joints, num_shared_stacks=int(fields['num_shared_stacks']),
        branch_stacks=_branch_stacks(fields), features=int(fields['features']),
        depth=int(fields['depth']), fuse_branches=_gpu_choice(fields, 'fuse_branches'),
        pointwise_matmul=_gpu_choice(fields, 'pointwise_matmul'),
        remat=_gpu_choice(fields, 'remat'),
        fau=model_config['fau'], fau_hidden=int(model_config['fau_hidden']),
        **compute_dtypes(model_config))

  def export_branch(self, variables, branch: int, model_config) -> dict[str, Any]:
    """'stem', 'stack_0' .. 'stack_{S+n_b-1}': the shared stacks, then branch b's (no FAU)."""
    fields = self.fields(model_config)
    num_shared, branch_stacks = int(fields['num_shared_stacks']), _branch_stacks(fields)
    count = len(branch_stacks)
    renames = {'stem': 'stem'}
    for k in range(num_shared):
      renames[f'stack_{k}'] = shared_name(k, count)
    for k in range(branch_stacks[branch]):
      renames[f'stack_{num_shared + k}'] = branch_stack_name(branch, k, num_shared, count)
    hint = (f'do config.model.hourglass.num_shared_stacks ({num_shared}) and '
            f'config.model.hourglass.branch_stacks ({branch_stacks}) describe the network '
            'these variables came from')
    return rename_variables(variables, renames, hint)

  def deployed_config(self, model_config, branch: int) -> dict[str, Any]:
    fields = self.fields(model_config)
    num_stacks = int(fields['num_shared_stacks']) + _branch_stacks(fields)[branch]
    return plain_hourglass_config(num_stacks, features=int(fields['features']),
                                  depth=int(fields['depth']), dtype=str(model_config['dtype']),
                                  param_dtype=str(model_config['param_dtype']))

  def describe(self, model_config) -> str:
    fields = self.fields(model_config)
    num_shared, branch_stacks = int(fields['num_shared_stacks']), _branch_stacks(fields)
    width = f'{int(fields["features"])} ch'
    if len(branch_stacks) == 1:
      return f'HG{num_shared + branch_stacks[0]} ({width})'
    return f'OKDHP-HG, {num_shared} shared + branches of {branch_stacks} stacks ({width})'
