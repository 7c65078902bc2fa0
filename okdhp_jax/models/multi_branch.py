"""The OKDHP multi-branch hourglass: shared stacks, then private stacks per branch, plus FAU.

  stem -> shared_0 .. shared_{S-1} -> branch_b_stack_0 .. branch_b_stack_{n_b-1}  (per branch b)
  stem -> fau -> weights [batch, branches, joints]
  ensemble = sum_b fau_weights[:, b, j] * (branch b's LAST heatmaps)[..., j]

With `num_shared_stacks=0, branch_stacks=(N,), fau='none'` it is the plain N-stack hourglass.
A network with ONE branch names its stacks like `StackedHourglass` (`stem`, `stack_0` ..
`stack_{S+n-1}`, shared first), so the plain baseline, an exported branch and a converted
PyTorch model all share one variable layout. With several branches the names are `shared_k`
and `branch_{b}_stack_k`; exporting branch b is then a re-keying, shared_k -> stack_k and
branch_b_stack_k -> stack_{S+k} (see okdhp_jax/export/branch.py).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from okdhp_jax.models.fau import ensemble_heatmaps, make_fau
from okdhp_jax.models.hourglass import HourglassStack, Stem
from okdhp_jax.models.outputs import PoseOutputs
from okdhp_jax.precision import at_least_float32


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
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, images: jax.Array, *, train: bool) -> PoseOutputs:
    kw = dict(features=self.features, depth=self.depth, dtype=self.dtype,
              param_dtype=self.param_dtype)
    num_branches = len(self.branch_stacks)
    stem = Stem(self.features, self.dtype, self.param_dtype, name='stem')(images, train=train)
    x = stem
    shared = []
    for k in range(self.num_shared_stacks):
      # Every branch has at least one private stack, so shared stacks always feed a next one.
      name = shared_name(k, num_branches)
      x, score = HourglassStack(self.num_joints, has_next=True, name=name, **kw)(x, train=train)
      shared.append(at_least_float32(score))

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
