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
rearranged: tests/test_models_gpu_choices.py holds it to the per-branch network in float64.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp

COLLECTIONS = ('params', 'batch_stats')


def stack_trees(trees: Sequence[Any]) -> Any:
  """Leaves stacked along a new leading axis: [len(trees), *leaf.shape].

  The vectors (BatchNorm scales, biases and statistics, conv biases: most of a stack's leaves)
  are cut from one [len(trees), total] concatenation per dtype rather than stacked one by one:
  on a GPU one kernel instead of one per vector, and the running statistics that come back
  out need no copy into their donated buffers (OKDHP-HG4 on the H100 description: 2,970
  kernels and 208 copies where stacking each leaf gave 3,356 and 624).
  """
  columns = list(zip(*(jax.tree.leaves(tree) for tree in trees)))  # per leaf, its members'
  stacked: list[Any] = [None] * len(columns)
  vectors: dict[Any, list[int]] = {}
  for i, members in enumerate(columns):
    if members[0].ndim == 1:
      vectors.setdefault(jnp.dtype(members[0].dtype), []).append(i)
    else:
      stacked[i] = jnp.stack(members)
  for indices in vectors.values():
    rows = jnp.stack([jnp.concatenate([columns[i][m] for i in indices])
                      for m in range(len(trees))])
    offset = 0
    for i in indices:
      size = columns[i][0].shape[0]
      stacked[i] = rows[:, offset:offset + size]
      offset += size
  return jax.tree.unflatten(jax.tree.structure(trees[0]), stacked)


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
    'batch_stats' in training, else none).
  """
  count = len(variables)
  stacked = {col: stack_trees([v[col] for v in variables]) for col in COLLECTIONS
             if col in variables[0]}

  def one(member_variables, member_x):
    if not train:
      return module.apply(member_variables, member_x, train=False), {}
    return module.apply(member_variables, member_x, train=True, mutable=['batch_stats'])

  outputs, updates = jax.vmap(one, in_axes=(0, None if shared_input else 0))(stacked, x)
  if 'batch_stats' not in updates:
    return outputs, []
  return outputs, unstack_tree(updates['batch_stats'], count)


def groups_by(keys: Sequence[Any]) -> dict[Any, list[int]]:
  """{key: the indices holding it}, in first-seen order."""
  groups: dict[Any, list[int]] = {}
  for i, key in enumerate(keys):
    groups.setdefault(key, []).append(i)
  return groups
