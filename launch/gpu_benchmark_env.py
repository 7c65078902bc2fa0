"""launch/gpu_benchmark.sh's first step: what the machine is, and whether the benchmarks import.

  python3 launch/gpu_benchmark_env.py RESULTS/run.jsonl

Appends one JSON line {"env": {...}} to the file: the date, the host's Python and the versions
of jax, jaxlib, its CUDA plugin, flax, optax and torch, JAX's devices, PyTorch's GPU, the GPU's
driver and XLA_FLAGS. Then imports what bench_step, bench_torch and gpu_program import when
they measure; a module that is missing ends the script here (exit 1) with the module's name and
the wheel to carry, before any device time goes into a step that cannot start.
"""

from __future__ import annotations

import datetime
import importlib
import importlib.metadata
import json
import os
import platform
import subprocess
import sys

PACKAGES = ('jax', 'jaxlib', 'jax-cuda13-plugin', 'jax-cuda12-plugin', 'flax', 'optax',
            'orbax-checkpoint', 'torch', 'ml_collections', 'clu', 'pycocotools', 'tensorflow',
            'tensorflow-cpu', 'numpy')
# What the measuring code paths import (bench_step.measure, gpu_program.compile_step,
# bench_torch.torch_train_step), so that a missing package shows before any step starts.
NEEDED = ('okdhp_jax.experiment', 'okdhp_jax.training.step', 'okdhp_jax.models.stats',
          'okdhp_jax.tools.bench_step', 'okdhp_jax.tools.gpu_program',
          'okdhp_jax.tools.config_file', 'configs.default')
# Where a package missing on a lent GPU comes from: carried wheels (launch/gpu_benchmark.sh's
# help gives the pip download command).
WHEELS = {'ml_collections': 'ml_collections==1.1.0', 'clu': 'clu==0.0.12',
          'pycocotools': 'pycocotools==2.0.11'}
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def versions() -> dict[str, str | None]:
  found = {}
  for name in PACKAGES:
    try:
      found[name] = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
      found[name] = None
  return found


def gpu_driver() -> str | None:
  """nvidia-smi's 'name, driver, memory' of each GPU, or None without one."""
  try:
    result = subprocess.run(['nvidia-smi', '--query-gpu=name,driver_version,memory.total',
                             '--format=csv,noheader'], capture_output=True, text=True,
                            timeout=30, check=True)
  except (OSError, subprocess.SubprocessError):
    return None
  return result.stdout.strip() or None


def main(argv: list[str]) -> int:
  if len(argv) != 1:
    print('usage: python3 launch/gpu_benchmark_env.py RESULTS/run.jsonl', file=sys.stderr)
    return 2
  env = {'date': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
         'python': platform.python_version(), 'host': platform.node(),
         'versions': versions(), 'nvidia_smi': gpu_driver(),
         'xla_flags': os.environ.get('XLA_FLAGS', ''),
         'jax_platforms': os.environ.get('JAX_PLATFORMS', '')}
  missing = None
  sys.path.insert(0, REPO_ROOT)  # okdhp_jax and configs, as `python -m` from the root finds them
  for module in NEEDED:
    try:
      importlib.import_module(module)
    except ImportError as error:
      missing = (module, error.name or str(error))
      break
  tensorflow = sys.modules.get('tensorflow')
  env['tensorflow'] = getattr(tensorflow, '__file__', None) if tensorflow else None
  try:
    import jax  # pylint: disable=g-import-not-at-top
    env['jax_devices'] = [f'{d.platform}: {d.device_kind}' for d in jax.devices()]
  except Exception as error:  # pylint: disable=broad-except  (recorded, then the steps fail)
    env['jax_devices'] = f'error: {error}'
  try:
    import torch  # pylint: disable=g-import-not-at-top
    env['torch_cuda'] = torch.cuda.get_device_name() if torch.cuda.is_available() else None
  except ImportError:
    env['torch_cuda'] = None
  if missing:
    env['missing'] = f'{missing[0]} needs {missing[1]}'
  with open(argv[0], 'a', encoding='utf-8') as f:
    f.write(json.dumps({'env': env}) + '\n')
  print(json.dumps(env, indent=1), flush=True)
  if missing:
    top = (missing[1] or '').split('.')[0]
    wheel = WHEELS.get(top, top)
    print(f'gpu_benchmark: error: {missing[0]} cannot be imported: {missing[1]} is missing. '
          f'Carry it as a wheel ({wheel}): see launch/gpu_benchmark.sh --help', file=sys.stderr)
    return 1
  return 0


if __name__ == '__main__':
  sys.exit(main(sys.argv[1:]))
