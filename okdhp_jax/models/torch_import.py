"""PyTorch (pytorch-pose `hg`) hourglass weights -> `StackedHourglass` variables.

Keys (pytorch-pose layout): conv1, bn1, layer{1,2,3}.0.*, hg.{s}.hg.{level}.{j}.0.*, res.{s}.0.*,
fc.{s}.0 (conv), fc.{s}.1 (BN), score.{s}, fc_.{s}, score_.{s}; an optional `module.` prefix
(DataParallel). Conv weights OIHW -> HWIO; BN weight/bias -> params scale/bias, running_mean/var
-> batch_stats mean/var; num_batches_tracked is ignored. Every expected key must be present
with the expected shape and no other key may be left over, so a wrong stack count or layout
fails with the offending names instead of loading half a model.
"""

from __future__ import annotations

import re
from typing import Any, Mapping

import flax.traverse_util
import jax
import jax.numpy as jnp
import numpy as np

from okdhp_jax.models.hourglass import StackedHourglass

IGNORED_SUFFIXES = ('num_batches_tracked',)
# Flax leaf -> PyTorch tensor name, per collection.
_LEAF_NAMES = {
    ('params', 'kernel'): 'weight',
    ('params', 'bias'): 'bias',
    ('params', 'scale'): 'weight',
    ('batch_stats', 'mean'): 'running_mean',
    ('batch_stats', 'var'): 'running_var',
}


def load_torch_state_dict(path: str) -> dict[str, np.ndarray]:
  """Reads a .pth / .pth.tar without executing pickled code; strips a `module.` prefix.

  A training checkpoint ({'state_dict': ..., 'epoch': ...}) and a bare state_dict both work.
  """
  try:
    import torch  # pylint: disable=g-import-not-at-top  (optional dependency)
  except ModuleNotFoundError:
    raise ValueError('reading PyTorch checkpoints needs PyTorch: pip install "okdhp_jax[torch]" '
                     '(or pip install torch; the CPU build is enough)') from None

  try:
    checkpoint = torch.load(path, map_location='cpu', weights_only=True)
  except FileNotFoundError:
    raise FileNotFoundError(f'PyTorch checkpoint {path} does not exist') from None
  except Exception as e:  # pickle.UnpicklingError and friends: not a plain weights file.
    raise ValueError(f'cannot read {path} with torch.load(weights_only=True): {e}') from e
  if isinstance(checkpoint, Mapping) and 'state_dict' in checkpoint:
    checkpoint = checkpoint['state_dict']
  if not isinstance(checkpoint, Mapping):
    raise ValueError(f'{path} holds a {type(checkpoint).__name__}, not a state_dict')
  return strip_module_prefix(
      {k: v.detach().cpu().numpy() for k, v in checkpoint.items() if hasattr(v, 'detach')})


def strip_module_prefix(state_dict: Mapping[str, Any]) -> dict[str, Any]:
  """Removes DataParallel's `module.` prefix when every key has it."""
  if state_dict and all(k.startswith('module.') for k in state_dict):
    return {k[len('module.'):]: v for k, v in state_dict.items()}
  return dict(state_dict)


def infer_hourglass_dims(state_dict: Mapping[str, Any]) -> tuple[int, int, int]:
  """(features, num_joints, depth) read off the shapes and keys of a state_dict."""
  for key in ('score.0.weight', 'hg.0.hg.0.3.0.conv1.weight'):
    if key not in state_dict:
      raise ValueError(f'state_dict lacks {key!r}: not a pytorch-pose hourglass '
                       f'(first keys: {sorted(state_dict)[:8]})')
  num_joints, features = np.shape(state_dict['score.0.weight'])[:2]
  levels = {int(m.group(1)) for k in state_dict if (m := re.match(r'hg\.0\.hg\.(\d+)\.', k))}
  return int(features), int(num_joints), max(levels) + 1


def _torch_module_name(path: tuple[str, ...]) -> str:
  """Flax module path (without the leaf) -> PyTorch module name."""
  head, rest = path[0], list(path[1:])
  if head == 'stem':
    prefix = [rest.pop(0)]
    if prefix[0].startswith('layer'):
      prefix.append('0')
  else:
    stack = head.removeprefix('stack_')
    part = rest.pop(0)
    if part == 'hg':
      level, j = rest.pop(0).removeprefix('hg_').split('_')
      prefix = ['hg', stack, 'hg', level, j, '0']
    elif part == 'res':
      prefix = ['res', stack, '0']
    elif part == 'fc_bn':
      prefix = ['fc', stack, '1']
    elif part == 'fc':
      prefix = ['fc', stack, '0']
    else:  # score, fc_, score_
      prefix = [part, stack]
  if rest == ['downsample']:
    rest = ['downsample', '0']
  return '.'.join(prefix + rest)


def state_dict_to_variables(state_dict: Mapping[str, Any], num_stacks: int) -> dict[str, Any]:
  """{'params', 'batch_stats'} of `StackedHourglass(num_stacks, features, num_joints, depth)`.

  Args:
    state_dict: name -> array (numpy or torch tensors), `module.` prefix allowed.
    num_stacks: stacks of the PyTorch model.

  Raises:
    ValueError naming every missing key, every unexpected key, or the first shape mismatch.
  """
  state_dict = strip_module_prefix(
      {k: np.asarray(v.detach().cpu().numpy() if hasattr(v, 'detach') else v)
       for k, v in state_dict.items()})
  features, num_joints, depth = infer_hourglass_dims(state_dict)
  model = StackedHourglass(num_stacks, features=features, num_joints=num_joints, depth=depth)
  size = 4 * 2 ** depth
  abstract = jax.eval_shape(lambda: model.init(
      jax.random.key(0), jnp.zeros((1, size, size, 3)), train=False))

  plan = {}  # torch key -> (collection, flax path, expected flax shape)
  for collection in ('params', 'batch_stats'):
    for path, leaf in flax.traverse_util.flatten_dict(abstract[collection]).items():
      module, name = path[:-1], path[-1]
      torch_key = f'{_torch_module_name(module)}.{_LEAF_NAMES[(collection, name)]}'
      plan[torch_key] = (collection, path, tuple(leaf.shape))

  given = {k for k in state_dict if not k.endswith(IGNORED_SUFFIXES)}
  missing, unexpected = sorted(set(plan) - given), sorted(given - set(plan))
  if missing or unexpected:
    raise ValueError(
        f'state_dict does not match a {num_stacks}-stack hourglass (features {features}, '
        f'{num_joints} joints, depth {depth}): missing keys {missing}, unexpected keys '
        f'{unexpected}')

  flat = {'params': {}, 'batch_stats': {}}
  for torch_key, (collection, path, shape) in plan.items():
    value = state_dict[torch_key]
    if value.ndim == 4:  # OIHW -> HWIO
      value = value.transpose(2, 3, 1, 0)
    if tuple(value.shape) != shape:
      raise ValueError(
          f'shape mismatch for {torch_key!r}: got {tuple(state_dict[torch_key].shape)} (as Flax '
          f'{tuple(value.shape)}), expected Flax {shape} at {"/".join(path)}')
    flat[collection][path] = jnp.asarray(value, jnp.float32)
  return {c: flax.traverse_util.unflatten_dict(tree) for c, tree in flat.items()}
