"""Abstract one-device meshes of other platforms, for tests on this CPU.

Traced under one (`jax.sharding.use_abstract_mesh`), `sharding.tracing_platform()` says that
platform, so a test sees the program the train step's `shard_map` would trace on a GPU or a TPU.
"""

from __future__ import annotations

import jax

from okdhp_jax import sharding

# platform: (device kind, cores) of the device described.
_DEVICES = {'gpu': ('NVIDIA H100 80GB HBM3', 132), 'tpu': ('TPU v5 lite', 1)}


def one_device_mesh(platform: str) -> jax.sharding.AbstractMesh:
  """A one-device `data` mesh of `platform` ('gpu' or 'tpu')."""
  kind, cores = _DEVICES[platform]
  return jax.sharding.AbstractMesh(
      (1,), (sharding.DATA_AXIS,), abstract_device=jax.sharding.AbstractDevice(
          device_kind=kind, num_cores=cores, platform=platform))
