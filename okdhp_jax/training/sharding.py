"""Device mesh and shardings: data parallelism over one `data` axis.

The same code runs on 1 CPU, 8 fake CPU devices, one GPU or a TPU pod: the batch is split over
the `data` axis, everything else (parameters, optimiser state, BatchNorm statistics) is
replicated. Under `jax.jit` the compiler inserts the cross-device reductions itself, so a
BatchNorm mean over the batch axis is a mean over the GLOBAL batch, as on one device.
"""

from __future__ import annotations

import jax
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

DATA_AXIS = 'data'


def make_mesh(num_devices: int | None = None) -> Mesh:
  """A 1-D mesh over the first `num_devices` devices (all devices when None).

  The axis is `Auto` (not the `Explicit` default of recent jax): sharding is given only at the
  jit boundary and propagated by the compiler, which Linen modules need.
  """
  available = jax.device_count()
  num_devices = available if num_devices is None else num_devices
  if not 1 <= num_devices <= available:
    raise ValueError(f'asked for a mesh of {num_devices} devices; {available} are present')
  return jax.make_mesh((num_devices,), (DATA_AXIS,), axis_types=(AxisType.Auto,),
                       devices=jax.devices()[:num_devices])


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
