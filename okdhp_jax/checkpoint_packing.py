"""The train state packed into one flat array per dtype, and a layout that names every leaf.

Why pack: Orbax writes each leaf of a pytree as an array of its own, with its own metadata
and write tasks, on threads that hold the GIL. The OKDHP-HG4 train state has about 5,000
leaves (four arrays per BatchNorm, Adam's two moments of every parameter), and an asynchronous
save of that many arrays slows the training loop's thread for seconds after each save, where
one array of the same bytes saves at once (docs/performance.md). So a checkpoint holds one
array per dtype (`float32`, `int32`, ...) and a JSON layout saying where each named leaf lies
in it; restoring cuts the arrays back into the live state's shapes and shardings.

Packing needs every leaf fully replicated, which `okdhp_jax.sharding` guarantees for the train
state (data parallelism only); a sharded leaf is refused rather than gathered.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import numpy as np

LAYOUT_FORMAT = 1


def leaf_name(path: tuple[Any, ...]) -> str:
  """'params/stack_0/conv/kernel', 'opt_state/0/mu/...': a pytree key path as a slash path."""
  parts = []
  for key in path:
    for attribute in ('key', 'name', 'idx'):  # DictKey, GetAttrKey, SequenceKey / FlattenedIndexKey
      if hasattr(key, attribute):
        parts.append(str(getattr(key, attribute)))
        break
    else:
      parts.append(str(key))
  return '/'.join(parts)


def layout(tree: Any) -> dict[str, Any]:
  """The JSON description of how `pack(tree)` lays out `tree`: per leaf, in flattening order,
  its name, shape, dtype and offset (in elements) into the packed array of its dtype."""
  leaves, treedef = jax.tree.flatten(tree)
  # Cached: naming 5,000 key paths costs more than the save's write, and the state's structure
  # never changes.
  return _layout(treedef, tuple((tuple(leaf.shape), np.dtype(leaf.dtype).name)
                                for leaf in leaves))


@functools.lru_cache(maxsize=8)
def _layout(treedef, specs) -> dict[str, Any]:
  tree = jax.tree.unflatten(treedef, [jax.ShapeDtypeStruct(s, d) for s, d in specs])
  offsets: dict[str, int] = {}
  leaves = []
  for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
    dtype = np.dtype(leaf.dtype).name
    size = int(np.prod(leaf.shape, dtype=np.int64))
    leaves.append({'name': leaf_name(path), 'shape': list(leaf.shape), 'dtype': dtype,
                   'offset': offsets.get(dtype, 0)})
    offsets[dtype] = offsets.get(dtype, 0) + size
  return {'format': LAYOUT_FORMAT, 'sizes': offsets, 'leaves': leaves}


def pack(tree: Any) -> dict[str, np.ndarray]:
  """{dtype name: [n] numpy array}: the leaves of `tree` raveled and concatenated in layout
  order, on the host. Orbax writes numpy arrays from process 0 alone, which is right for a
  replicated state."""
  paths_and_leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
  for path, leaf in paths_and_leaves:
    sharding = getattr(leaf, 'sharding', None)
    if sharding is not None and not sharding.is_fully_replicated:
      raise NotImplementedError(
          f'checkpoint packing needs a replicated train state; {leaf_name(path)} is sharded as '
          f'{sharding}')
  # One device_get for the whole tree: the transfers overlap instead of running one by one.
  host_leaves = jax.device_get([leaf for _, leaf in paths_and_leaves])
  groups: dict[str, list[np.ndarray]] = {}
  for leaf in host_leaves:
    leaf = np.asarray(leaf)
    groups.setdefault(leaf.dtype.name, []).append(leaf.reshape(-1))
  return {dtype: np.concatenate(parts) for dtype, parts in groups.items()}


def check_layout(saved: dict[str, Any], target: Any, where: str) -> None:
  """Raises ValueError naming the first leaf where the checkpoint at `where` and the live state
  `target` disagree (a config that changed the model or the optimiser since it was written)."""
  if saved.get('format') != LAYOUT_FORMAT:
    raise ValueError(f'{where}: packed-state layout format {saved.get("format")!r}; this '
                     f'version reads format {LAYOUT_FORMAT}')
  expected = {leaf['name']: leaf for leaf in layout(target)['leaves']}
  found = {leaf['name']: leaf for leaf in saved['leaves']}
  hint = 'was it written by a run with another model or optimiser config?'
  missing = [name for name in expected if name not in found]
  if missing:
    raise ValueError(f'{where} has no {missing[0]} ({len(missing)} leaves of this run\'s state '
                     f'missing); {hint}')
  extra = [name for name in found if name not in expected]
  if extra:
    raise ValueError(f'{where} holds {extra[0]}, which this run\'s state lacks ({len(extra)} '
                     f'such leaves); {hint}')
  for name, want in expected.items():
    have = found[name]
    if (have['dtype'], have['shape']) != (want['dtype'], want['shape']):
      raise ValueError(f'{where}: {name} is {have["dtype"]}{have["shape"]} in the checkpoint but '
                       f'{want["dtype"]}{want["shape"]} in this run\'s state; {hint}')
    if have['offset'] != want['offset']:
      raise ValueError(f'{where}: {name} lies at offset {have["offset"]} in the checkpoint but '
                       f'{want["offset"]} in this run\'s layout (leaves in another order)')


def unpack(packed: dict[str, np.ndarray], target: Any) -> Any:
  """The inverse of `pack`: `target`'s tree with each leaf cut from `packed` and placed in the
  target leaf's sharding (numpy where the target leaf has none). Call `check_layout` first;
  this trusts that the layouts agree.

  Cut on the host rather than in a jitted function: XLA is slow to compile 5,000 slices.
  `make_array_from_callback` gives each process's devices their copy without the cross-process
  equality check `device_put` makes for every leaf.
  """
  leaves, treedef = jax.tree.flatten(target)
  restored = []
  for leaf, entry in zip(leaves, layout(target)['leaves']):
    piece = _cut(packed, entry)
    sharding = getattr(leaf, 'sharding', None)
    restored.append(piece if sharding is None else jax.make_array_from_callback(
        piece.shape, sharding, lambda index, piece=piece: piece[index]))
  return jax.tree.unflatten(treedef, restored)


def _cut(packed: dict[str, np.ndarray], entry: dict[str, Any]) -> np.ndarray:
  """The leaf a layout entry describes, cut from the packed array of its dtype."""
  size = int(np.prod(entry['shape'], dtype=np.int64))
  flat = np.asarray(packed[entry['dtype']])[entry['offset']:entry['offset'] + size]
  return flat.reshape(entry['shape'])


def unpack_on_host(packed: dict[str, np.ndarray], saved_layout: dict[str, Any]
                   ) -> dict[str, Any]:
  """Nested dicts of numpy arrays keyed by the layout's names, without a model or a state to
  restore into ('params/a/kernel' -> result['params']['a']['kernel'])."""
  tree: dict[str, Any] = {}
  for entry in saved_layout['leaves']:
    *parents, last = entry['name'].split('/')
    node = tree
    for part in parents:
      node = node.setdefault(part, {})
    node[last] = _cut(packed, entry)
  return tree
