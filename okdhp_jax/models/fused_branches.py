"""The branches' private stacks as one vmapped computation (a GPU's one kernel for three).

OKDHP-HG4 runs three private hourglass stacks of one shape side by side at every level: six
of its eight stacks. Written as three calls, a GPU launches every kernel three times. `jax.vmap`
over the branches makes each conv one grouped convolution (`feature_group_count` = branches,
one cuDNN call), the first conv of a level one convolution with the branches' filters side by
side (its input is the same for all), and each BatchNorm's statistics one reduction over
[branches x channels] columns (`python -m okdhp_jax.tools.gpu_program` counts them).

The variables keep their per-branch layout (`branch_{b}_stack_{k}`, what checkpoints, the
PyTorch import and the export read): the step stacks each level's parameters and batch
statistics along a new leading axis (XLA fuses the stacking into the bfloat16 cast the step
makes anyway), and autodiff slices the gradients back. The computation is the per-branch one,
rearranged: tests/test_models_fused_branches.py holds it to the per-branch network in float64.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp

COLLECTIONS = ('params', 'batch_stats')


def stack_trees(trees: Sequence[Any]) -> Any:
  """Leaves stacked along a new leading axis: [len(trees), *leaf.shape]."""
  return jax.tree.map(lambda *leaves: jnp.stack(leaves), *trees)


def unstack_tree(tree: Any, count: int) -> list[Any]:
  """`stack_trees`'s inverse: `count` trees of the leading axis's slices."""
  return [jax.tree.map(lambda leaf, i=i: leaf[i], tree) for i in range(count)]


def apply_stacked(module, variables: Sequence[Mapping[str, Any]], x: jax.Array, *,
                  shared_input: bool, train: bool
                  ) -> tuple[Any, list[dict[str, Any]]]:
  """`module.apply` for each of several variable sets at once, vmapped over them.

  Args:
    module: an unbound Linen module, `__call__(x, *, train) -> outputs (a pytree of arrays)`.
    variables: one {'params', 'batch_stats'} per member, all of one structure.
    x: the input, the same for every member when `shared_input` (e.g. [b, h, w, c]); else
      stacked per member ([members, b, h, w, c]).
    train: training mode: the batch statistics are updated.

  Returns:
    (outputs with a leading [members] axis on every leaf, each member's updated
    'batch_stats' (its given ones when not training)).
  """
  count = len(variables)
  stacked = {col: stack_trees([v[col] for v in variables]) for col in COLLECTIONS
             if col in variables[0]}

  def one(member_variables, member_x):
    if not train:
      return module.apply(member_variables, member_x, train=False), {}
    return module.apply(member_variables, member_x, train=True, mutable=['batch_stats'])

  outputs, updates = jax.vmap(one, in_axes=(0, None if shared_input else 0))(stacked, x)
  if not train or 'batch_stats' not in updates:
    return outputs, [dict(v.get('batch_stats', {})) for v in variables]
  return outputs, unstack_tree(updates['batch_stats'], count)


def groups_by(keys: Sequence[Any]) -> dict[Any, list[int]]:
  """{key: the indices holding it}, in first-seen order."""
  groups: dict[Any, list[int]] = {}
  for i, key in enumerate(keys):
    groups.setdefault(key, []).append(i)
  return groups
