"""PyTorch hourglass weights -> this project's variables: plain pytorch-pose and released OKDHP.

Two key layouts, told apart by their keys (`detect_layout`):

- 'pytorch-pose': the plain `hg` model (pytorch-pose, HRNet-style code). conv1, bn1,
  layer{1,2,3}.0.*, then per stack s: hg.{s}.hg.{level}.{j}.0.*, res.{s}.0.*, fc.{s}.0 (conv),
  fc.{s}.1 (BN), score.{s}, fc_.{s}, score_.{s}. Becomes a plain (one-branch) hourglass.
- 'okdhp': the released OKDHP multi-branch network (`hourglass_okd_share_less.py`, and
  `hourglass_okd.py`, which shares nothing). The same stem; shared stack i is `ind_s_{i}`
  (a Sequential: .0 hourglass, .1 residual, .2 conv + BN) with `score_s_{i}`, `_fc_s_{i}`,
  `_score_s_{i}`; branch b's private stack i is `ind_b_{b}_s_{i}` with `score_b_{b}_s_{i}` and,
  when a stack follows, `_fc_b_{b}_s_{i}`, `_score_b_{b}_s_{i}`; the FAU is `convs.{k}.0`
  (conv) / `convs.{k}.1` (BN), `fc`, `fcs.{b}`. Becomes a `MultiBranchHourglass` whose shared
  and private stack counts are read off the keys (the released HG2, HG4 and HG8 share 0, 2
  and 6 stacks, with 2 private stacks per branch).

Conv weights OIHW -> HWIO, Linear [out, in] -> Dense [in, out]; BN weight/bias -> params
scale/bias, running_mean/var -> batch_stats mean/var; num_batches_tracked is ignored. Every
expected key must be present with the expected shape and no other key may be left over, so a
wrong layout fails with the offending names instead of loading half a model.

Not reproduced from the released code: its ensemble reads out[-3], out[-2], out[-1] (branch 1's
last head and branch 2's two heads); an imported network's ensemble weights every branch's
LAST head, as the paper describes (README, fidelity notes).
"""

from __future__ import annotations

import functools
import json
import re
from typing import Any, Mapping

import flax.traverse_util
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from okdhp_jax.models.factory import build_model, input_divisor
from okdhp_jax.models.multi_branch import plain_hourglass_config
from okdhp_jax.models.torch_checkpoint import load_state_dict, strip_module_prefix

__all__ = ['LAYOUTS', 'detect_layout', 'describe_state_dict', 'state_dict_to_variables',
           'load_state_dict']

LAYOUTS = ('pytorch-pose', 'okdhp')
IGNORED_SUFFIXES = ('num_batches_tracked',)
# Flax leaf -> PyTorch tensor name, per collection.
_LEAF_NAMES = {
    ('params', 'kernel'): 'weight',
    ('params', 'bias'): 'bias',
    ('params', 'scale'): 'weight',
    ('batch_stats', 'mean'): 'running_mean',
    ('batch_stats', 'var'): 'running_var',
}
# Where each part of one stack (models/hourglass.py HourglassStack) lives, per layout; {s} is
# the stack's index (pytorch-pose) or tag `s_3` / `b_1_s_0` (okdhp).
_STACK_PARTS = {
    'pytorch-pose': {'hg': 'hg.{s}', 'res': 'res.{s}.0', 'fc': 'fc.{s}.0', 'fc_bn': 'fc.{s}.1',
                     'score': 'score.{s}', 'fc_': 'fc_.{s}', 'score_': 'score_.{s}'},
    'okdhp': {'hg': 'ind_{s}.0', 'res': 'ind_{s}.1.0', 'fc': 'ind_{s}.2.0',
              'fc_bn': 'ind_{s}.2.1', 'score': 'score_{s}', 'fc_': '_fc_{s}',
              'score_': '_score_{s}'},
}
_SHARED = re.compile(r'ind_s_(\d+)\.')
_PRIVATE = re.compile(r'ind_b_(\d+)_s_(\d+)\.')


def detect_layout(state_dict: Mapping[str, Any]) -> str:
  """'pytorch-pose' or 'okdhp', from the keys; ValueError naming the keys seen otherwise."""
  if any(_PRIVATE.match(k) for k in state_dict):
    return 'okdhp'
  if 'score.0.weight' in state_dict:
    return 'pytorch-pose'
  raise ValueError(
      'the state_dict is neither a pytorch-pose hourglass (no score.0.weight) nor a released '
      f'OKDHP multi-branch hourglass (no ind_b_0_s_0.*); first keys: {sorted(state_dict)[:8]}')


def _count(indices: set[int], what: str) -> int:
  if indices != set(range(len(indices))):
    raise ValueError(f'{what} are numbered {sorted(indices)}, expected 0..{len(indices) - 1}')
  return len(indices)


def describe_state_dict(state_dict: Mapping[str, Any],
                        num_stacks: int | None = None) -> tuple[str, dict[str, Any], int]:
  """(layout, `config.model` as a dict, num_joints) of the network the state_dict holds.

  `num_stacks` (pytorch-pose only) is checked against the stacks found, when given.
  """
  layout = detect_layout(state_dict)
  if layout == 'pytorch-pose':
    num_joints, features = np.shape(state_dict['score.0.weight'])[:2]
    found = _count({int(m.group(1)) for k in state_dict if (m := re.match(r'score\.(\d+)\.', k))},
                   'score.{s} heads')
    if num_stacks is not None and num_stacks != found:
      raise ValueError(f'--num-stacks {num_stacks} given, but the state_dict has {found} stacks '
                       f'(score.0 .. score.{found - 1})')
    first = 'hg.0.hg.'
    model = plain_hourglass_config(found, features=int(features), depth=_depth(state_dict, first))
    return layout, model, int(num_joints)

  shared = _count({int(m.group(1)) for k in state_dict if (m := _SHARED.match(k))},
                  'shared stacks ind_s_{i}')
  private: dict[int, set[int]] = {}
  for key in state_dict:
    if m := _PRIVATE.match(key):
      private.setdefault(int(m.group(1)), set()).add(int(m.group(2)))
  num_branches = _count(set(private), 'branches ind_b_{b}_s_*')
  if num_branches < 2:
    raise ValueError(f'an OKDHP state_dict needs at least 2 branches, found {num_branches}')
  branch_stacks = tuple(_count(private[b], f'stacks ind_b_{b}_s_{{i}}')
                        for b in range(num_branches))
  num_joints, features = np.shape(state_dict['score_b_0_s_0.weight'])[:2]
  has_fau = any(k.startswith(('convs.', 'fcs.')) for k in state_dict)
  model = plain_hourglass_config(1, features=int(features),
                                 depth=_depth(state_dict, 'ind_b_0_s_0.0.hg.'))
  model['hourglass'].update(num_shared_stacks=shared, branch_stacks=branch_stacks)
  if has_fau:
    model.update(fau='released', fau_hidden=int(np.shape(state_dict['fc.weight'])[0]))
  return layout, model, int(num_joints)


def _depth(state_dict: Mapping[str, Any], prefix: str) -> int:
  pattern = re.compile(re.escape(prefix) + r'(\d+)\.')
  levels = {int(m.group(1)) for k in state_dict if (m := pattern.match(k))}
  if not levels:
    raise ValueError(f'state_dict has no {prefix}{{level}}.* keys: cannot read the hourglass '
                     'depth')
  return _count(levels, f'hourglass levels {prefix}{{level}}')


def _stack_tag(module: str, layout: str) -> str:
  """Flax stack module name -> the {s} of `_STACK_PARTS`."""
  if layout == 'pytorch-pose':
    return module.removeprefix('stack_')
  if m := re.fullmatch(r'shared_(\d+)', module):
    return f's_{m.group(1)}'
  if m := re.fullmatch(r'branch_(\d+)_stack_(\d+)', module):
    return f'b_{m.group(1)}_s_{m.group(2)}'
  raise ValueError(f'no PyTorch name for the Flax module {module!r} in the {layout} layout')


def _torch_module_name(path: tuple[str, ...], layout: str) -> str:
  """Flax module path (without the leaf) -> PyTorch module name."""
  head, rest = path[0], list(path[1:])
  if head == 'stem':
    prefix = [rest.pop(0)]
    if prefix[0].startswith('layer'):
      prefix.append('0')
  elif head == 'fau':  # models/fau.py ReleasedFAU: conv_b, bn_b, head/fc, head/branch_fc_b.
    part = rest.pop(0)
    if part == 'head':
      part = rest.pop(0)
      prefix = ['fc'] if part == 'fc' else ['fcs', part.removeprefix('branch_fc_')]
    else:
      kind, k = part.split('_')
      prefix = ['convs', k, '0' if kind == 'conv' else '1']
  else:
    part = rest.pop(0)
    prefix = [_STACK_PARTS[layout][part].format(s=_stack_tag(head, layout))]
    if part == 'hg':
      level, j = rest.pop(0).removeprefix('hg_').split('_')
      prefix += ['hg', level, j, '0']
  if rest == ['downsample']:
    rest = ['downsample', '0']
  return '.'.join(prefix + rest)


def state_dict_to_variables(state_dict: Mapping[str, Any],
                            num_stacks: int | None = None) -> dict[str, Any]:
  """{'params', 'batch_stats'} of the network `describe_state_dict` names.

  Args:
    state_dict: name -> array (numpy or torch tensors), `module.` prefix allowed.
    num_stacks: pytorch-pose only, optional: the stacks the caller expects.

  Raises:
    ValueError naming every missing key, every unexpected key, or the first shape mismatch.
  """
  state_dict = strip_module_prefix(
      {k: np.asarray(v.detach().cpu().numpy() if hasattr(v, 'detach') else v)
       for k, v in state_dict.items()})
  layout, model_config, num_joints = describe_state_dict(state_dict, num_stacks)
  abstract = _abstract_variables(json.dumps(model_config, sort_keys=True), num_joints)

  plan = {}  # torch key -> (collection, flax path, expected flax shape)
  for collection in ('params', 'batch_stats'):
    for path, leaf in flax.traverse_util.flatten_dict(abstract[collection]).items():
      torch_key = f'{_torch_module_name(path[:-1], layout)}.{_LEAF_NAMES[(collection, path[-1])]}'
      plan[torch_key] = (collection, path, tuple(leaf.shape))

  given = {k for k in state_dict if not k.endswith(IGNORED_SUFFIXES)}
  missing, unexpected = sorted(set(plan) - given), sorted(given - set(plan))
  if missing or unexpected:
    raise ValueError(
        f'state_dict does not match the {layout} network its keys describe '
        f'({_summary(model_config)}, {num_joints} joints): missing keys {missing}, unexpected '
        f'keys {unexpected}')

  flat = {'params': {}, 'batch_stats': {}}
  for torch_key, (collection, path, shape) in plan.items():
    value = state_dict[torch_key]
    if value.ndim == 4:  # conv OIHW -> HWIO
      value = value.transpose(2, 3, 1, 0)
    elif value.ndim == 2:  # Linear [out, in] -> Dense [in, out]
      value = value.T
    if tuple(value.shape) != shape:
      raise ValueError(
          f'shape mismatch for {torch_key!r}: got {tuple(state_dict[torch_key].shape)} (as Flax '
          f'{tuple(value.shape)}), expected Flax {shape} at {"/".join(path)}')
    flat[collection][path] = jnp.asarray(value, jnp.float32)
  return {c: flax.traverse_util.unflatten_dict(tree) for c, tree in flat.items()}


@functools.lru_cache(maxsize=8)
def _abstract_variables(model_json: str, num_joints: int):
  """Shapes of the variables of the network `model_json` (config.model as JSON, a hashable
  cache key) describes; traced once per network: tracing HG8 takes seconds."""
  model_config = json.loads(model_json)
  size = input_divisor(model_config)
  model = build_model(ml_collections.ConfigDict(model_config), num_joints, (size, size))
  return jax.eval_shape(lambda: model.init(
      jax.random.key(0), jnp.zeros((1, size, size, 3)), train=False))


def _summary(model_config: Mapping[str, Any]) -> str:
  hourglass = model_config['hourglass']
  return (f'{hourglass["num_shared_stacks"]} shared stacks, branches of '
          f'{tuple(hourglass["branch_stacks"])} stacks, features {hourglass["features"]}, '
          f'depth {hourglass["depth"]}, FAU {model_config["fau"]}')
