r"""Prints the training throughput of a config's train step on the devices present.

  python -m okdhp_jax.tools.bench_step --config configs/default.py
  python -m okdhp_jax.tools.bench_step --config configs/default.py:runlocal --batch 8 --steps 5

Synthetic batches (random images and joints) on a `data` mesh over every device; parameters
are freshly initialised, and so is the method's frozen state (FPD: a random teacher of
config.fpd.teacher_num_stacks stacks). Reports images/s, ms per step, the first call's time
(trace + compile + one step) and peak device memory where the backend reports it (GPU, TPU).
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def synthetic_batch(config, batch_size: int, num_joints: int,
                    seed: int = 0) -> dict[str, np.ndarray]:
  height, width = config.data.input_size
  rng = np.random.default_rng(seed)
  joints = rng.uniform(0, 1, (batch_size, num_joints, 2)) * np.array([width, height])
  return {'image': rng.normal(size=(batch_size, height, width, 3)).astype(np.float32),
          'joints': joints.astype(np.float32),
          'joints_vis': np.ones((batch_size, num_joints), np.float32)}


def peak_memory_gib() -> str:
  import jax
  peaks = []
  for device in jax.local_devices():
    stats = device.memory_stats() or {}
    if 'peak_bytes_in_use' in stats:
      peaks.append(stats['peak_bytes_in_use'])
  return f'{max(peaks) / 2**30:.2f}' if peaks else 'n/a'


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--config', required=True, help='config file, optionally with :arg')
  parser.add_argument('--batch', type=int, default=None,
                      help='global batch (default: config.train.batch_size)')
  parser.add_argument('--steps', type=int, default=10, help='timed steps')
  parser.add_argument('--warmup', type=int, default=2, help='untimed steps after compiling')
  args = parser.parse_args(argv)

  # Imported after parsing, so --help answers at once.
  import jax
  from okdhp_jax import methods, sharding
  from okdhp_jax.data.meta import get_meta
  from okdhp_jax.models import build_model
  from okdhp_jax.tools.config_file import load_config
  from okdhp_jax.training import state as state_lib
  from okdhp_jax.training import step as step_lib

  config = load_config(args.config)
  if args.batch is not None:
    config.train.batch_size = args.batch
  batch_size = config.train.batch_size
  num_joints = get_meta(config.data.dataset).num_joints
  mesh = sharding.make_mesh()
  sharding.check_batch_divisible(batch_size, mesh, '--batch / config.train.batch_size')

  model = build_model(config.model, num_joints, tuple(config.data.input_size))
  # 'rbg' keys: initialisers compile much faster than with threefry; init is not timed.
  rng = jax.random.key(config.seed, impl='unsafe_rbg')
  state = state_lib.create_train_state(config, model, rng, mesh=mesh, steps_per_epoch=1000)
  method = methods.create(config, num_joints=num_joints)
  frozen = method.stand_in_frozen_state(mesh, rng)
  train_step = step_lib.make_train_step(config, model, method, mesh=mesh, steps_per_epoch=1000,
                                        num_joints=num_joints)
  batch = jax.device_put(synthetic_batch(config, batch_size, num_joints),
                         sharding.data_sharded(mesh))

  start = time.perf_counter()
  state, metrics = train_step(state, frozen, batch)
  jax.block_until_ready(metrics)
  first_call_s = time.perf_counter() - start
  for _ in range(args.warmup):
    state, metrics = train_step(state, frozen, batch)
  jax.block_until_ready(metrics)

  start = time.perf_counter()
  for _ in range(args.steps):
    state, metrics = train_step(state, frozen, batch)
  jax.block_until_ready((state, metrics))
  step_s = (time.perf_counter() - start) / args.steps

  devices = jax.devices()
  rows = [
      ('config', args.config),
      ('devices', f'{len(devices)} x {devices[0].device_kind} ({devices[0].platform})'),
      ('global batch', str(batch_size)),
      ('input size', 'x'.join(str(s) for s in config.data.input_size)),
      ('model dtype', str(config.model.dtype)),
      ('train images/s', f'{batch_size / step_s:.1f}'),
      ('step ms', f'{step_s * 1e3:.1f}'),
      ('compile s (first call)', f'{first_call_s:.1f}'),
      ('peak device memory GiB', peak_memory_gib()),
      ('loss (last step)', f'{float(metrics["loss"]):.6f}'),
  ]
  width = max(len(name) for name, _ in rows)
  for name, value in rows:
    print(f'{name:<{width}}  {value}')


if __name__ == '__main__':
  main()
