"""The structured output every pose network in okdhp_jax returns.

Losses, evaluation and export read named fields instead of indexing a flat list of heatmaps, so
the meaning of an output never depends on index arithmetic (the released OKDHP code built its
teacher from `out[-3], out[-2], out[-1]` and silently left branch 0 out).
"""

from __future__ import annotations

import flax.struct
import jax


@flax.struct.dataclass
class PoseOutputs:
  """Heatmaps of a (multi-branch) pose network. All heatmaps are [batch, height, width, joints].

  Attributes:
    shared: heatmaps of the shared stacks, first to last (empty for MobilePose).
    branches: per branch, the heatmaps of its private stacks, first to last. A plain network
      is one branch.
    fau_weights: [batch, branches, joints] softmax weights of the FAU (sum to 1 over branches),
      or None when the network has no FAU.
    ensemble: the teacher, sum_b fau_weights[:, b, j] * branches[b][-1][..., j]; for a network
      with one branch and no FAU it is that branch's last heatmap.
  """

  shared: tuple[jax.Array, ...]
  branches: tuple[tuple[jax.Array, ...], ...]
  fau_weights: jax.Array | None
  ensemble: jax.Array

  @property
  def num_branches(self) -> int:
    return len(self.branches)

  @property
  def branch_heatmaps(self) -> tuple[jax.Array, ...]:
    """Each branch's final heatmaps: what each student predicts at test time."""
    return tuple(stacks[-1] for stacks in self.branches)

  @property
  def all_stack_heatmaps(self) -> tuple[jax.Array, ...]:
    """Every stack's heatmaps (shared, then branch by branch): all receive supervision."""
    return self.shared + tuple(h for stacks in self.branches for h in stacks)
