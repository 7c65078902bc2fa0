"""Branch export: one branch of a multi-branch network as a plain one-branch network.

At deployment OKDHP keeps the shared stacks and one branch: a plain N-stack hourglass with the
same parameters. Because the multi-branch module names its stacks `shared_k` and
`branch_b_stack_k` (and a plain one names them `stack_k`, see models/multi_branch.py), export is
a re-keying of the variable tree, with no arithmetic on the values. MobilePose likewise: the
shared `encoder` and `decoder_b`, renamed `decoder_0`, are a one-branch MobilePose.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from okdhp_jax.models.multi_branch import branch_stack_name, shared_name

COLLECTIONS = ('params', 'batch_stats')


def export_branch(variables: Mapping[str, Any], branch: int, num_shared_stacks: int,
                  branch_stacks: Sequence[int]) -> dict[str, Any]:
  """Variables of `StackedHourglass(num_shared_stacks + branch_stacks[branch])`.

  Args:
    variables: {'params', 'batch_stats'} of `MultiBranchHourglass(num_shared_stacks=...,
      branch_stacks=...)` (the FAU, if any, is dropped).
    branch: which branch to keep, 0-based; negative counts from the end.
    num_shared_stacks, branch_stacks: the multi-branch network's `config.model` fields.

  Returns:
    {'params', 'batch_stats'} with keys 'stem', 'stack_0' .. 'stack_{N-1}'; the arrays are the
    input's (not copied), so the plain network's outputs equal that branch's outputs exactly.
  """
  branch_stacks = tuple(int(n) for n in branch_stacks)
  num_branches = len(branch_stacks)
  if not -num_branches <= branch < num_branches:
    raise ValueError(f'branch {branch} out of range for config.model.branch_stacks '
                     f'{branch_stacks} ({num_branches} branches)')
  branch %= num_branches
  renames = {'stem': 'stem'}
  for k in range(num_shared_stacks):
    renames[f'stack_{k}'] = shared_name(k, num_branches)
  for k in range(branch_stacks[branch]):
    renames[f'stack_{num_shared_stacks + k}'] = branch_stack_name(
        branch, k, num_shared_stacks, num_branches)

  exported = {}
  for collection in COLLECTIONS:
    if collection not in variables:
      raise ValueError(f'export_branch: variables have no {collection!r} collection; got '
                       f'{sorted(variables)}')
    tree = variables[collection]
    missing = sorted(old for old in renames.values() if old not in tree)
    if missing:
      raise ValueError(
          f'export_branch: {collection} lacks {missing}; do config.model.num_shared_stacks '
          f'({num_shared_stacks}) and config.model.branch_stacks ({branch_stacks}) describe the '
          f'network these variables came from? It has {sorted(tree)}')
    exported[collection] = {new: tree[old] for new, old in renames.items()}
  return exported


def export_mobilepose_branch(variables: Mapping[str, Any], branch: int,
                             num_branches: int) -> dict[str, Any]:
  """Variables of a one-branch MobilePose: the shared encoder and decoder `branch` (no FAU).

  Args:
    variables: {'params', 'batch_stats'} of `MobilePose(num_branches=num_branches)`.
    branch: which decoder to keep, 0-based; negative counts from the end.
    num_branches: len(config.model.branch_stacks).

  Returns:
    {'params', 'batch_stats'} with keys 'encoder' and 'decoder_0' (the input's arrays).
  """
  if not -num_branches <= branch < num_branches:
    raise ValueError(f'branch {branch} out of range for a MobilePose with {num_branches} '
                     'decoders (len(config.model.branch_stacks))')
  renames = {'encoder': 'encoder', 'decoder_0': f'decoder_{branch % num_branches}'}
  exported = {}
  for collection in COLLECTIONS:
    tree = variables.get(collection, {})
    missing = sorted(old for old in renames.values() if old not in tree)
    if missing:
      raise ValueError(f'export_mobilepose_branch: {collection} lacks {missing}; does '
                       f'config.model describe the network these variables came from? It has '
                       f'{sorted(tree)}')
    exported[collection] = {new: tree[old] for new, old in renames.items()}
  return exported


def export_student(variables: Mapping[str, Any], branch: int,
                   model_config: Mapping[str, Any]) -> dict[str, Any]:
  """The variables of `deployed_model_config(model_config, branch)`'s network.

  Hourglass: `export_branch`; MobilePose: `export_mobilepose_branch`.
  """
  branch_stacks = tuple(int(n) for n in model_config['branch_stacks'])
  if model_config['name'] == 'mobilepose':
    return export_mobilepose_branch(variables, branch, len(branch_stacks))
  return export_branch(variables, branch, int(model_config['num_shared_stacks']),
                       branch_stacks)


def exported_model_config(model_config: Mapping[str, Any], branch: int) -> dict[str, Any]:
  """The plain `config.model` (as a dict) of `export_branch(..., branch, ...)`'s network.

  Loading it with `build_model` gives a one-branch network whose variable tree is exactly the
  exported one.
  """
  branch_stacks = tuple(int(n) for n in model_config['branch_stacks'])
  if model_config['name'] != 'hourglass':
    raise ValueError(f'branch export supports config.model.name "hourglass", got '
                     f'{model_config["name"]!r}')
  if not -len(branch_stacks) <= branch < len(branch_stacks):
    raise ValueError(f'branch {branch} out of range for config.model.branch_stacks '
                     f'{branch_stacks}')
  num_stacks = int(model_config['num_shared_stacks']) + branch_stacks[branch]
  return plain_hourglass_config(num_stacks, features=int(model_config['features']),
                                depth=int(model_config['depth']),
                                dtype=str(model_config['dtype']),
                                param_dtype=str(model_config['param_dtype']))


def deployed_model_config(model_config: Mapping[str, Any], branch: int = 0) -> dict[str, Any]:
  """`config.model` (as a dict) of what is deployed from a training network: one branch.

  Hourglass: the shared stacks and the branch's private stacks as a plain hourglass
  (`exported_model_config`). MobilePose: the shared encoder and one decoder, no FAU.
  """
  if model_config['name'] == 'hourglass':
    return exported_model_config(model_config, branch)
  return dict(dict(model_config.items()), branch_stacks=(1,), fau='none')


def plain_hourglass_config(num_stacks: int, *, features: int = 256, depth: int = 4,
                           dtype: str = 'float32', param_dtype: str = 'float32') -> dict[str, Any]:
  """`config.model` fields (a dict) of a plain `num_stacks`-stack hourglass."""
  return {
      'name': 'hourglass',
      'num_shared_stacks': 0,
      'branch_stacks': (int(num_stacks),),
      'features': int(features),
      'depth': int(depth),
      'fau': 'none',
      'fau_hidden': 64,
      'backbone': 'resnet18',
      'dtype': dtype,
      'param_dtype': param_dtype,
  }
