"""Described NVIDIA GPUs that XLA compiles for without one: GpuTargetConfigProto texts.

The figures are those of XLA's own device files (openxla/xla,
`xla/backends/gpu/target_config/specs/<file>`, which record what the CUDA driver reports on each
chip), checked against NVIDIA's data sheets; each target names both. The files' per-type
throughput tables and descriptive strings are left out, and so is what the installed XLA does
not parse: the OKDHP-HG4 step compiles to the same program with or without them. The software
versions (cuDNN, CUDA runtime) are those of the installed nvidia wheels, as on a GPU machine
with the same install: XLA reads them to decide which library features it may use.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata

# XLA's device files, which record what the CUDA driver reports on each chip.
XLA_SPECS = 'openxla/xla xla/backends/gpu/target_config/specs/'


@dataclasses.dataclass(frozen=True)
class GpuTarget:
  """One GPU as the CUDA driver reports it; byte counts in bytes, bandwidth in bytes/s."""
  name: str                          # what jax's device_kind says on the real chip
  source: str                        # where the figures come from
  compute_capability: tuple[int, int]
  accelerated_features: bool         # sm_90a: Hopper's wgmma / TMA instructions
  core_count: int                    # streaming multiprocessors
  fpus_per_core: int                 # float32 lanes per SM
  clock_rate_ghz: float
  memory_bandwidth: int
  device_memory_size: int
  l2_cache_size: int
  shared_memory_per_core: int
  shared_memory_per_block_optin: int


# The H100 SXM's figures are those of its XLA file; the H200 is the same die (GH100, 132 SMs)
# with 141 GB of HBM3e at 4.8 TB/s.
TARGETS = {
    'h100': GpuTarget(
        name='NVIDIA H100 80GB HBM3',
        source=XLA_SPECS + 'h100_sxm.txtpb; NVIDIA H100 Tensor Core GPU data sheet (SXM: 132 '
               'SMs, 80 GB HBM3, 3.35 TB/s, 50 MB L2)',
        compute_capability=(9, 0), accelerated_features=True, core_count=132,
        fpus_per_core=128, clock_rate_ghz=1.98, memory_bandwidth=3_352_320_000_000,
        device_memory_size=84_942_979_072, l2_cache_size=52_428_800,
        shared_memory_per_core=233_472, shared_memory_per_block_optin=232_448),
    'h200': GpuTarget(
        name='NVIDIA H200',
        source=XLA_SPECS + 'h200.txtpb; NVIDIA H200 Tensor Core GPU data sheet (SXM: 141 GB '
               'HBM3e, 4.8 TB/s)',
        compute_capability=(9, 0), accelerated_features=True, core_count=132,
        fpus_per_core=128, clock_rate_ghz=1.98, memory_bandwidth=4_800_000_000_000,
        device_memory_size=151_397_597_184, l2_cache_size=52_428_800,
        shared_memory_per_core=233_472, shared_memory_per_block_optin=232_448),
    'a100': GpuTarget(
        name='NVIDIA A100-SXM4-80GB',
        source=XLA_SPECS + 'a100_sxm_80.txtpb; NVIDIA A100 Tensor Core GPU data sheet (SXM 80GB: '
               '108 SMs, 2.039 TB/s, 40 MB L2, 164 KB shared memory per SM)',
        compute_capability=(8, 0), accelerated_features=False, core_count=108,
        fpus_per_core=64, clock_rate_ghz=1.41, memory_bandwidth=2_039_040_000_000,
        device_memory_size=85_100_068_864, l2_cache_size=41_943_040,
        shared_memory_per_core=167_936, shared_memory_per_block_optin=166_912),
}

# What every NVIDIA GPU from Volta on reports alike (CUDA programming guide, "Compute
# capabilities": limits per block, warp and SM).
COMMON_LIMITS = '''\
  threads_per_block_limit: 1024
  threads_per_warp: 32
  shared_memory_per_block: 49152
  threads_per_core_limit: 2048
  block_dim_limit_x: 2147483647
  block_dim_limit_y: 65535
  block_dim_limit_z: 65535
  thread_dim_limit_x: 1024
  thread_dim_limit_y: 1024
  thread_dim_limit_z: 64
  registers_per_core_limit: 65536
  registers_per_block_limit: 65536
'''


def installed_version(package: str) -> tuple[int, int, int]:
  """(major, minor, patch) of an installed wheel; LookupError when it is missing."""
  try:
    text = importlib.metadata.version(package)
  except importlib.metadata.PackageNotFoundError:
    raise LookupError(f'{package} is not installed') from None
  numbers = [int(part) for part in text.split('.')[:3] if part.isdigit()]
  return tuple(numbers + [0] * (3 - len(numbers)))


def target_config(target: GpuTarget, cudnn: tuple[int, int, int],
                  cuda: tuple[int, int, int]) -> str:
  """The GpuTargetConfigProto text for `target` with cuDNN and CUDA `(major, minor, patch)`."""
  major, minor = target.compute_capability
  extension = 'ACCELERATED_FEATURES' if target.accelerated_features else 'NONE'
  cuda_text = '.'.join(map(str, cuda))
  # The driver is the oldest that runs this CUDA runtime: the same version.
  return f'''gpu_device_info {{
{COMMON_LIMITS}  core_count: {target.core_count}
  fpus_per_core: {target.fpus_per_core}
  clock_rate_ghz: {target.clock_rate_ghz}
  memory_bandwidth: {target.memory_bandwidth}
  device_memory_size: {target.device_memory_size}
  l2_cache_size: {target.l2_cache_size}
  shared_memory_per_core: {target.shared_memory_per_core}
  shared_memory_per_block_optin: {target.shared_memory_per_block_optin}
  cuda_compute_capability {{ major: {major} minor: {minor} feature_extension: {extension} }}
  name: "{target.name}"
  device_vendor: "NVIDIA Corporation"
  dnn_version: "{'.'.join(map(str, cudnn))}"
  driver_version: "{cuda_text}"
  runtime_version: "{cuda_text}"
  compile_time_toolkit_version: "{cuda_text}"
}}
platform_name: "CUDA"
dnn_version_info {{ major: {cudnn[0]} minor: {cudnn[1]} patch: {cudnn[2]} }}
device_description_str: "{target.name}"
'''


def installed_target_config(key: str) -> str:
  """`target_config` of TARGETS[key] with the installed cuDNN and CUDA runtime wheels."""
  return target_config(TARGETS[key], installed_version('nvidia-cudnn-cu12'),
                       installed_version('nvidia-cuda-runtime-cu12'))
