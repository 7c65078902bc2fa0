"""Device mesh, shardings, and rows gathered across processes: data parallelism over `data`.

The same code runs on 1 CPU, 8 fake CPU devices, one GPU, a TPU pod or several pods joined by
the data-centre network: the batch is split over the `data` axis, everything else (parameters,
optimiser state, BatchNorm statistics) is replicated. The train step runs per device and names
its cross-device reductions itself (okdhp_jax/training/step.py); the evaluation's predict step
is partitioned by the compiler.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import numpy as np
from jax.experimental import mesh_utils, multihost_utils
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

DATA_AXIS = 'data'


def tracing_platform() -> str:
  """The platform ('cpu', 'gpu', 'tpu') of the program being traced.

  The enclosing `shard_map`'s mesh says (the train step's; `gpu_program` and `tpu_program`
  describe a GPU or a TPU slice on a CPU machine that way), else JAX's default backend.
  """
  device = jax.sharding.get_abstract_mesh().abstract_device
  return device.platform if device is not None else jax.default_backend()


def tracing_for_gpu() -> bool:
  """Whether the program being traced is a GPU's (`tracing_platform`)."""
  return tracing_platform() == 'gpu'


GPU_CHOICES = ('gpu', 'always', 'never')


def chosen_for_gpu(choice: str) -> bool:
  """A program choice worth making where launches cost (e.g. config.model.hourglass
  .fuse_branches): 'gpu' while tracing for a GPU (`tracing_for_gpu`), 'always', 'never'."""
  if choice == 'gpu':
    return tracing_for_gpu()
  return choice == 'always'


def for_gpu(on_gpu: Callable[..., Any], elsewhere: Callable[..., Any], *args) -> Any:
  """`on_gpu(*args)` while tracing a program for a GPU (`tracing_for_gpu`), else
  `elsewhere(*args)`. Only the chosen function is traced: a CPU or TPU program is what it was
  before `on_gpu` existed.
  """
  return (on_gpu if tracing_for_gpu() else elsewhere)(*args)


def make_mesh(num_devices: int | None = None) -> Mesh:
  """A 1-D mesh over the first `num_devices` devices (all devices when None).

  The axis is `Auto` (not the `Explicit` default of recent jax): sharding is given only at the
  jit boundary and propagated by the compiler, which Linen modules need.
  """
  available = jax.device_count()
  num_devices = available if num_devices is None else num_devices
  if not 1 <= num_devices <= available:
    raise ValueError(f'asked for a mesh of {num_devices} devices; {available} are present')
  return mesh_over(jax.devices()[:num_devices])


def mesh_over(devices) -> Mesh:
  """The `data` mesh over `devices`, ordered for their links: within a TPU slice by its
  interconnect; over several slices (multi-slice, joined by the data-centre network) slice
  after slice, through jax's hybrid mesh, since jax.make_mesh refuses multi-slice devices."""
  slices = len({getattr(d, 'slice_index', 0) for d in devices})
  if slices > 1:
    grid = mesh_utils.create_hybrid_device_mesh((len(devices) // slices,), (slices,),
                                                devices=devices)
    return Mesh(np.asarray(grid).reshape(-1), (DATA_AXIS,), axis_types=(AxisType.Auto,))
  return jax.make_mesh((len(devices),), (DATA_AXIS,), axis_types=(AxisType.Auto,),
                       devices=devices)


def replicated(mesh: Mesh) -> NamedSharding:
  """Every device holds the whole array (parameters, optimiser state, scalars)."""
  return NamedSharding(mesh, PartitionSpec())


def data_sharded(mesh: Mesh) -> NamedSharding:
  """The leading (batch) axis is split over the `data` axis."""
  return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def check_batch_divisible(batch_size: int, mesh: Mesh,
                          config_key: str = 'config.train.batch_size') -> None:
  """Raises a ValueError naming `config_key` when the batch cannot be split evenly."""
  num_devices = mesh.shape[DATA_AXIS]
  if batch_size % num_devices:
    raise ValueError(
        f'{config_key}={batch_size} (the global batch) must be divisible by the number of '
        f'devices in the mesh ({num_devices})')


def local_rows(array: jax.Array) -> np.ndarray:
  """The rows of a batch-sharded global array that belong to this process."""
  if jax.process_count() == 1:
    return np.asarray(jax.device_get(array))
  shards = sorted(array.addressable_shards, key=lambda s: s.index[0].start or 0)
  return np.concatenate([np.asarray(s.data) for s in shards], axis=0)


def gather_rows(local):
  """Every process's rows of each array of a pytree, in process order.

  All arrays of one process have the same number of rows, but processes may have different
  numbers (the split's shards differ by a record or more). The collective needs equal shapes,
  so rows are padded to the largest count and cut back afterwards. Rows travel as raw bytes:
  without 64-bit JAX, float64 coordinates and int64 ids would arrive as 32-bit values.
  """
  if jax.process_count() == 1:
    return local
  count = len(jax.tree.leaves(local)[0])
  counts = np.asarray(multihost_utils.process_allgather(np.array([count]))).reshape(-1)
  most = int(counts.max())

  def to_padded_bytes(a):
    rows = np.ascontiguousarray(a).reshape(len(a), -1).view(np.uint8)
    return np.concatenate([rows, np.zeros((most - len(a), rows.shape[1]), np.uint8)])

  def from_bytes(gathered, like):
    rows = np.concatenate([np.asarray(gathered[p])[:n] for p, n in enumerate(counts)])
    return rows.view(like.dtype).reshape((len(rows),) + like.shape[1:])

  # [processes, most, bytes per row] per leaf.
  gathered = multihost_utils.process_allgather(jax.tree.map(to_padded_bytes, local),
                                               tiled=False)
  return jax.tree.map(from_bytes, gathered, local)
