"""The train state kept between steps as one flat array per dtype (on a GPU, by default).

Why: the parameters of OKDHP-HG4 are 1,476 arrays and its BatchNorm statistics 714. XLA's GPU
compiler (jaxlib 0.10.2) has no horizontal loop fusion, so Adam updated them in about 620
kernels and the running averages were cut back into their arrays by about 130 more. Kept as
one float32 vector each (and Adam's moments likewise), Adam is a handful of kernels and the
new statistics are one concatenation; `python -m okdhp_jax.tools.gpu_program` counts both.
The network still sees its per-array trees: the step cuts them out of the vectors (slices XLA
fuses into their first reader), and the gradients are concatenated in the same order.

Why only on a GPU (config.train.flat_state, sharding.GPU_CHOICES): XLA's CPU compiler shares
one compiled kernel between fusions that differ only in which same-shaped array they read;
a slice at its own offset makes every reader a kernel of its own. The quickstart's CPU step
falls from 3,521 fusions to 2,221, yet takes 23 s to compile instead of 14. A TPU keeps the
per-array state its compiled programs in the README were measured with.

Only elementwise optimisers can run on the vectors (Adam, L2 decay: `optimizer.make_optimizer`),
with their per-parameter state in the parameters' dtypes (`flatten` finds it by the parameters'
structure and lays it out by their dtypes); one that treats each array apart (LARS, LAMB,
per-layer clipping) would need the per-array state.

A checkpoint does not change: packing the state into one array per dtype
(`checkpoint_packing`) gives the same arrays from either form, since the vectors hold the
leaves in the per-array state's order, and its layout names the per-array leaves
(`per_array_shapes`), so a checkpoint written on a GPU restores on a CPU and back.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.sharding import Mesh

from okdhp_jax import sharding as sharding_lib
from okdhp_jax.training.state import TrainState

# dtype name -> [n]: every array of a tree of that dtype, raveled and concatenated in the
# tree's flattening order.
Flat = dict[str, Any]


@dataclasses.dataclass(frozen=True)
class FlatLayout:
  """Where each array of a tree lies in its dtype's vector. Hashable: a static field."""
  treedef: Any
  shapes: tuple[tuple[int, ...], ...]
  dtypes: tuple[str, ...]

  @classmethod
  def of(cls, tree: Any) -> FlatLayout:
    leaves, treedef = jax.tree.flatten(tree)
    return cls(treedef, tuple(tuple(leaf.shape) for leaf in leaves),
               tuple(np.dtype(leaf.dtype).name for leaf in leaves))

  def ravel(self, tree: Any) -> Flat:
    """{dtype: [n]} of `tree` (this layout's structure): jnp inside a trace, numpy on the
    host, ShapeDtypeStructs for ShapeDtypeStructs."""
    self.check(tree)
    groups: dict[str, list[Any]] = {}
    for leaf, dtype in zip(jax.tree.leaves(tree), self.dtypes):
      groups.setdefault(dtype, []).append(leaf)
    return {dtype: _concatenate(parts) for dtype, parts in groups.items()}

  def check(self, tree: Any) -> None:
    """ValueError unless `tree` has this layout's structure and dtypes."""
    leaves, treedef = jax.tree.flatten(tree)
    if treedef != self.treedef:
      raise ValueError(f'a tree of structure {treedef} cannot be laid out as {self.treedef}')
    for leaf, dtype in zip(leaves, self.dtypes):
      if np.dtype(leaf.dtype).name != dtype:  # e.g. Adam's moments kept in another dtype
        raise ValueError(f'a {np.dtype(leaf.dtype).name} array where the layout holds {dtype}: '
                         'a flat state needs optimiser states in the parameters\' dtypes '
                         '(config.train.flat_state=never keeps them per array)')

  def unravel(self, flat: Flat) -> Any:
    """The tree `ravel` laid out: static slices of `flat`'s vectors, reshaped."""
    offsets: dict[str, int] = {}
    leaves = []
    for shape, dtype in zip(self.shapes, self.dtypes):
      start = offsets.get(dtype, 0)
      offsets[dtype] = start + math.prod(shape)
      leaves.append(flat[dtype][start:offsets[dtype]].reshape(shape))
    return jax.tree.unflatten(self.treedef, leaves)

  def abstract(self, sharding_of: dict[str, Any] | None = None) -> Any:
    """The tree this layout describes as ShapeDtypeStructs, placed as `sharding_of[dtype]`."""
    sharding_of = sharding_of or {}
    return jax.tree.unflatten(self.treedef, [
        jax.ShapeDtypeStruct(shape, dtype, sharding=sharding_of.get(dtype))
        for shape, dtype in zip(self.shapes, self.dtypes)])

  def describes(self, tree: Any) -> bool:
    """Whether `tree` has this layout's structure and shapes (e.g. one of Adam's moments
    beside the parameters)."""
    return jax.tree.structure(tree) == self.treedef and all(
        np.shape(leaf) == shape for leaf, shape in zip(jax.tree.leaves(tree), self.shapes))

  def matches(self, tree: Any) -> bool:
    """Whether `tree` is a Flat of this layout (e.g. one of Adam's moments)."""
    if not isinstance(tree, dict) or set(tree) != set(self.dtypes):
      return False
    sizes: dict[str, int] = {}
    for shape, dtype in zip(self.shapes, self.dtypes):
      sizes[dtype] = sizes.get(dtype, 0) + math.prod(shape)
    return all(getattr(tree[dtype], 'shape', None) == (size,) for dtype, size in sizes.items())


def _concatenate(parts: list[Any]) -> Any:
  if all(isinstance(part, jax.ShapeDtypeStruct) for part in parts):
    return jax.ShapeDtypeStruct((sum(math.prod(p.shape) for p in parts),), parts[0].dtype,
                                sharding=parts[0].sharding)
  if all(isinstance(part, np.ndarray) for part in parts):
    return np.concatenate([part.reshape(-1) for part in parts])
  return jnp.concatenate([jnp.ravel(part) for part in parts])


@flax.struct.dataclass
class FlatTrainState:
  """TrainState's arrays with params, batch_stats and the optimiser's per-parameter state as
  Flats; the same methods as TrainState, so the train step, checkpoints and evaluation take
  either."""
  step: jax.Array        # int32 scalar: optimiser updates done.
  params: Flat
  batch_stats: Flat
  opt_state: Any         # the optimiser's state over `params` (Adam: mu and nu are Flats).
  param_layout: FlatLayout = flax.struct.field(pytree_node=False)
  stats_layout: FlatLayout = flax.struct.field(pytree_node=False)

  def params_tree(self) -> Any:
    return self.param_layout.unravel(self.params)

  def stats_tree(self) -> Any:
    return self.stats_layout.unravel(self.batch_stats)

  def arrange_params(self, tree: Any) -> Flat:
    """A tree shaped like the parameters (their gradients) as this state holds parameters."""
    return self.param_layout.ravel(tree)

  def arrange_stats(self, tree: Any) -> Flat:
    return self.stats_layout.ravel(tree)

  @property
  def variables(self) -> dict[str, Any]:
    """{'params', 'batch_stats'} as per-array trees on the state's devices (cut on the host;
    the optimiser's state is left alone)."""
    return {'params': _cut(self.params, self.param_layout),
            'batch_stats': _cut(self.batch_stats, self.stats_layout)}

  def per_array(self) -> TrainState:
    """The same state as a TrainState, cut on the host and placed as this state is placed."""
    opt_state = jax.tree.map(lambda x: _cut(x, self.param_layout) if self.param_layout.matches(x)
                             else x, self.opt_state, is_leaf=self.param_layout.matches)
    return TrainState(step=self.step, params=_cut(self.params, self.param_layout),
                      batch_stats=_cut(self.batch_stats, self.stats_layout), opt_state=opt_state)

  def per_array_shapes(self) -> TrainState:
    """The per-array state's shapes and dtypes: what a checkpoint's layout names."""
    opt_state = jax.tree.map(lambda x: self.param_layout.abstract()
                             if self.param_layout.matches(x)
                             else jax.ShapeDtypeStruct(np.shape(x), x.dtype), self.opt_state,
                             is_leaf=self.param_layout.matches)
    return TrainState(step=jax.ShapeDtypeStruct((), self.step.dtype),
                      params=self.param_layout.abstract(),
                      batch_stats=self.stats_layout.abstract(), opt_state=opt_state)


def _cut(flat: Flat, layout: FlatLayout) -> Any:
  """`layout`'s tree cut from `flat` on the host, each array placed as its vector is."""
  host = {dtype: np.asarray(vector) for dtype, vector in jax.device_get(flat).items()}
  placement = {dtype: getattr(vector, 'sharding', None) for dtype, vector in flat.items()}
  return jax.tree.map(lambda leaf: _place(leaf, placement[leaf.dtype.name]),
                      layout.unravel(host))


def _place(array: np.ndarray, sharding) -> Any:
  # make_array_from_callback, as checkpoint_packing.unpack: each process gives its own devices
  # their copy, without device_put's cross-process check of every array.
  if sharding is None:
    return array
  return jax.make_array_from_callback(array.shape, sharding, lambda index: array[index])


def flatten(state: TrainState) -> FlatTrainState:
  """`state` as a FlatTrainState: concrete arrays are joined on the host and placed as they
  were (replicated); ShapeDtypeStructs give ShapeDtypeStructs."""
  param_layout = FlatLayout.of(state.params)
  stats_layout = FlatLayout.of(state.batch_stats)

  def join(tree: Any, layout: FlatLayout) -> Flat:
    leaves = jax.tree.leaves(tree)
    if not leaves or isinstance(leaves[0], jax.ShapeDtypeStruct):
      return layout.ravel(tree)
    placement = {np.dtype(leaf.dtype).name: getattr(leaf, 'sharding', None) for leaf in leaves}
    flat = layout.ravel(jax.tree.map(np.asarray, jax.device_get(tree)))
    return {dtype: _place(vector, placement[dtype]) for dtype, vector in flat.items()}

  opt_state = jax.tree.map(lambda x: join(x, param_layout) if param_layout.describes(x) else x,
                           state.opt_state, is_leaf=param_layout.describes)
  return FlatTrainState(step=state.step, params=join(state.params, param_layout),
                        batch_stats=join(state.batch_stats, stats_layout), opt_state=opt_state,
                        param_layout=param_layout, stats_layout=stats_layout)


def uses_flat_state(train_config: ml_collections.ConfigDict, platform: str) -> bool:
  """config.train.flat_state ('gpu', 'always', 'never') for a mesh of `platform` devices."""
  choice = train_config.get('flat_state', 'gpu')
  if choice not in sharding_lib.GPU_CHOICES:
    raise ValueError(f'config.train.flat_state={choice!r}; choose from '
                     f'{sharding_lib.GPU_CHOICES}')
  return choice == 'always' or (choice == 'gpu' and platform == 'gpu')


def arranged_for(train_config: ml_collections.ConfigDict,
                 state: TrainState | FlatTrainState, mesh: Mesh
                 ) -> TrainState | FlatTrainState:
  """`state` as the train step on `mesh` keeps it: flat or per array (`uses_flat_state`)."""
  flat = uses_flat_state(train_config, mesh.devices.flat[0].platform)
  if isinstance(state, FlatTrainState):
    return state if flat else state.per_array()
  return flatten(state) if flat else state
