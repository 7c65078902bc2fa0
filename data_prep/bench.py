r"""Host input pipeline throughput: augmented training crops per second, per core and in total.

  python -m data_prep.bench --records DIR [--input-size 256 256] [--seconds 20]

Runs the real training pipeline (decode, crop, scale/rotation/flip, normalise, batch) twice:
once restricted to one thread (per-core rate) and once with all cores, and prints a table.
"""

from __future__ import annotations

import argparse
import os
import time

from configs import default
from okdhp_jax.data import meta as meta_lib
from okdhp_jax.data import records
from okdhp_jax.data.tf_host import tf


def measure(data_config, meta, *, batch_size: int, seconds: float, threads: int | None):
  """Images per second over `seconds` after one warm-up batch."""
  from okdhp_jax.data import pipeline  # imports JAX: not before --help is answered.
  ds = pipeline.build_train_dataset(data_config, meta, local_batch_size=batch_size, seed=0)
  if threads is not None:
    options = tf.data.Options()
    options.threading.private_threadpool_size = threads
    options.threading.max_intra_op_parallelism = 1
    ds = ds.with_options(options)
  iterator = iter(ds)
  next(iterator)
  count, start = 0, time.perf_counter()
  while time.perf_counter() - start < seconds:
    next(iterator)
    count += batch_size
  return count / (time.perf_counter() - start)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--records', required=True)
  parser.add_argument('--input-size', '--input_size', dest='input_size',
                      type=int, nargs=2, default=(256, 256), help='height width')
  parser.add_argument('--batch-size', '--batch_size', dest='batch_size', type=int, default=32)
  parser.add_argument('--seconds', type=float, default=20.0)
  args = parser.parse_args(argv)
  info = records.read_dataset_info(args.records)
  config = default.get_config()
  data = config.data
  data.records_dir = args.records
  data.dataset = info['dataset']
  data.input_size = tuple(args.input_size)
  data.shuffle_buffer = 256
  if info['dataset'] == 'coco':
    data.half_body_prob, data.scale_factor, data.rotation_factor = 0.3, 0.3, 40.0
  meta = meta_lib.get_meta(data.dataset)
  cores = os.cpu_count() or 1
  data.num_parallel_calls = 1
  one = measure(data, meta, batch_size=args.batch_size, seconds=args.seconds, threads=1)
  data.num_parallel_calls = -1
  total = measure(data, meta, batch_size=args.batch_size, seconds=args.seconds, threads=None)
  size = f'{args.input_size[0]}x{args.input_size[1]}'
  print(f'\nrecords {args.records} ({info["dataset"]}, {info["splits"]}), '
        f'{size} crops, augmentation on')
  print(f'| {"setting":<22} | {"images/s":>9} | {"per core":>9} |')
  print(f'|{"-" * 24}|{"-" * 11}|{"-" * 11}|')
  print(f'| {"1 thread":<22} | {one:9.1f} | {one:9.1f} |')
  print(f'| {f"all {cores} cores":<22} | {total:9.1f} | {total / cores:9.1f} |')


if __name__ == '__main__':
  main()
