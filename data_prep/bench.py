r"""Host input pipeline throughput on full-size photos: augmented crops per second, per core and
on all cores, where the time goes, and what a resumed run pays before its first batch.

  python -m data_prep.bench                     # builds realistic MPII and COCO records first
  python -m data_prep.bench --records DIR [DIR ...] [--seconds 10] [--resume-step 10000]

Without --records it writes, under --build-dir, records of the bundled full-size photos (MPII
1280x720 and COCO 640x~420, data_prep/samples) repeated to --people people with their real
boxes, through the real converters, and measures MPII at 256x256 and COCO at 256x192 with the
augmentation of configs/hg4.py and configs/coco_hg4.py (PAPER.md 5).

Every measurement runs in its own process: '1 core' is pinned to one CPU (sched_setaffinity,
as `taskset -c 0` does) and runs the pipeline on one thread; 'all cores' uses every CPU, at
the training pipeline's parallelism (tf.data's default for the host: its tuning thread is off,
okdhp_jax/data/pipeline.py). The time split is measured on one core with four pipelines that each do
one stage more, from the same records:
  read    TFRecord reading and parsing
  decode  + the augmentation's crop matrix, the region join and the JPEG window decode
          (okdhp_jax/data/crop.py, jpeg_window.py)
  warp    + the bilinear warp to the crop
  rest    the training pipeline's remainder: joints, shuffling, numbering, batching
The resume column is the time from building a stream that resumes at --resume-step to its first
batch (global batch --batch-size, one process), which reads the current epoch's records before
the stop point.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time

SAMPLES = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'samples')
STAGES = ('read', 'decode', 'warp', 'rest')


def build_realistic_records(build_dir: str, people: int) -> list[str]:
  """MPII and COCO records of the bundled full-size photos repeated to `people` training people
  (and the 5 MPII people as the valid split); reused when already built with that
  count by this converter version."""
  from data_prep import coco, mpii  # TensorFlow: not before --help is answered.
  from okdhp_jax.data import records
  out = []
  for name in ('mpii', 'coco'):
    folder = os.path.join(build_dir, f'{name}_{people}')
    out.append(folder)
    try:
      info = records.read_dataset_info(folder)
      if info['splits']['train'] == people:
        continue
    except (FileNotFoundError, KeyError):
      pass
    work = os.path.join(build_dir, f'{name}_annotations')
    os.makedirs(work, exist_ok=True)
    print(f'Writing {people} {name.upper()} people to {folder} ...', flush=True)
    if name == 'mpii':
      samples = json.load(open(os.path.join(SAMPLES, 'mpii', 'test_mpii.json')))
      repeated = [samples[i % len(samples)] for i in range(people)]
      json.dump(repeated, open(os.path.join(work, 'train.json'), 'w'))
      json.dump(samples, open(os.path.join(work, 'valid.json'), 'w'))
      shutil.copy(os.path.join(SAMPLES, 'mpii', 'gt_valid_first5.mat'),
                  os.path.join(work, 'gt_valid.mat'))
      mpii.convert(work, os.path.join(SAMPLES, 'mpii'), folder, show_progress=False,
                   overwrite=True)
    else:
      data = json.load(open(os.path.join(SAMPLES, 'coco', 'test_coco.json')))
      annotated = [a for a in data['annotations'] if a.get('num_keypoints', 0) > 0]
      data['annotations'] = [dict(annotated[i % len(annotated)], id=i + 1)
                             for i in range(people)]
      path = os.path.join(work, 'person_keypoints_train.json')
      json.dump(data, open(path, 'w'))
      coco.convert([path], os.path.join(SAMPLES, 'coco'), folder, show_progress=False,
                   overwrite=True)
  return out


def data_config_for(records_dir: str, input_size=None):
  """config.data of the paper's config for the records' dataset, reading `records_dir`."""
  from okdhp_jax.data import records
  info = records.read_dataset_info(records_dir)
  if info['dataset'] == 'coco':
    from configs import coco_hg4 as paper_config
  else:
    from configs import hg4 as paper_config
  data = paper_config.get_config().data
  data.records_dir = records_dir
  data.dataset = info['dataset']
  if input_size:
    data.input_size = tuple(input_size)
  return data


def _rate(ds, batch_size: int, seconds: float, one_thread: bool) -> float:
  """Examples per second over `seconds`, after one warm-up batch."""
  from okdhp_jax.data.tf_host import tf
  if one_thread:
    options = tf.data.Options()
    options.threading.private_threadpool_size = 1
    options.threading.max_intra_op_parallelism = 1
    ds = ds.with_options(options)
  iterator = iter(ds)
  next(iterator)
  count, start = 0, time.perf_counter()
  while time.perf_counter() - start < seconds:
    next(iterator)
    count += batch_size
  return count / (time.perf_counter() - start)


def _stage_pipelines(data, meta, batch_size: int):
  """{stage: dataset} for read, decode and warp, each one stage more than the one before."""
  from okdhp_jax.data import augment, crop, pipeline, records
  from okdhp_jax.data.tf_host import tf
  kwargs = pipeline.train_augmentation(data, meta)
  reduction_cap = kwargs.pop('max_decode_reduction')
  input_size = kwargs['input_size']
  files = records.split_files(data.records_dir, data.train_split)

  def decoded(index, serialized):
    parsed = records.parse(serialized, meta.num_joints)
    seed = tf.random.experimental.stateless_fold_in(tf.constant([0, 0], tf.int64), index)
    matrix, _ = augment.augmentation_matrix(parsed, seed, **kwargs)
    patch, to_window, empty = crop.decode_for_crop(
        parsed['image/encoded'], parsed['image/height'], parsed['image/width'], matrix,
        input_size, reduction_cap, parsed['image/restart_layout'],
        parsed['image/restart_offsets'])
    return patch, (to_window, empty)

  def read(index, serialized):
    return records.parse(serialized, meta.num_joints)['image/height'] + index

  def decode(index, serialized):
    patch, _ = decoded(index, serialized)
    return tf.reduce_max(patch)

  def warp(index, serialized):
    patch, (to_window, empty) = decoded(index, serialized)
    return crop.warp(patch, to_window, empty, input_size)

  base = tf.data.TFRecordDataset(files).repeat().enumerate()
  return {name: base.map(fn, num_parallel_calls=1).batch(batch_size)
          for name, fn in (('read', read), ('decode', decode), ('warp', warp))}


def measure(records_dir: str, *, input_size, batch_size: int, seconds: float, one_core: bool,
            resume_step: int) -> dict:
  """One row's numbers (run in a child process, pinned or not)."""
  from okdhp_jax.data import meta as meta_lib
  from okdhp_jax.data import pipeline
  data = data_config_for(records_dir, input_size)
  meta = meta_lib.get_meta(data.dataset)
  if one_core:
    data.num_parallel_calls = 1
  row = {'input_size': list(data.input_size)}
  if one_core:
    milliseconds = {}
    for name, ds in _stage_pipelines(data, meta, batch_size).items():
      milliseconds[name] = 1000 / _rate(ds, batch_size, seconds, one_thread=True)
    full = pipeline.build_train_dataset(data, meta, local_batch_size=batch_size, seed=0)
    row['crops_per_s'] = _rate(full, batch_size, seconds, one_thread=True)
    total = 1000 / row['crops_per_s']
    # Each stage's time is what it adds to the one before.
    row['ms'] = {'read': milliseconds['read'],
                 'decode': milliseconds['decode'] - milliseconds['read'],
                 'warp': milliseconds['warp'] - milliseconds['decode'],
                 'rest': total - milliseconds['warp']}
  else:
    full = pipeline.build_train_dataset(data, meta, local_batch_size=batch_size, seed=0)
    row['crops_per_s'] = _rate(full, batch_size, seconds, one_thread=False)
  if resume_step:
    start = time.perf_counter()
    resumed = pipeline.build_train_dataset(data, meta, local_batch_size=batch_size, seed=0,
                                           start_step=resume_step)
    next(iter(resumed))
    row['resume_s'] = time.perf_counter() - start
  return row


def _measure_in_child(records_dir: str, args, one_core: bool) -> dict:
  request = dict(records_dir=records_dir, input_size=args.input_size,
                 batch_size=args.batch_size, seconds=args.seconds, one_core=one_core,
                 resume_step=args.resume_step if one_core else 0)
  core = sorted(os.sched_getaffinity(0))[0]
  pin = (lambda: os.sched_setaffinity(0, {core})) if one_core else None
  done = subprocess.run([sys.executable, '-m', 'data_prep.bench', '--child', json.dumps(request)],
                        capture_output=True, text=True, preexec_fn=pin, check=False)
  if done.returncode != 0:
    raise SystemExit(f'error: measuring {records_dir} failed:\n{done.stderr[-3000:]}')
  return json.loads(done.stdout.strip().splitlines()[-1])


def print_table(rows: list[dict], cores: int) -> None:
  print('\n| records | crop | cores | crops/s | per core | ms per crop: read | decode | warp | '
        'rest | resume (s) |')
  print('|---|---|---|---:|---:|---:|---:|---:|---:|---:|')
  for row in rows:
    used = 1 if row['one_core'] else cores
    split = ([f'{row["ms"][s]:.2f}' for s in STAGES] if 'ms' in row else ['', '', '', ''])
    resume = f'{row["resume_s"]:.1f}' if 'resume_s' in row else ''
    size = 'x'.join(str(s) for s in row['input_size'])
    print(f'| {row["name"]} | {size} | {used} | {row["crops_per_s"]:.1f} | '
          f'{row["crops_per_s"] / used:.1f} | {" | ".join(split)} | {resume} |')


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--records', nargs='+', help='records folders (default: build them)')
  parser.add_argument('--build-dir', '--build_dir', dest='build_dir',
                      default=os.path.join('/tmp', 'okdhp_bench_records'))
  parser.add_argument('--people', type=int, default=1000, help='people per built split')
  parser.add_argument('--input-size', '--input_size', dest='input_size', type=int, nargs=2,
                      default=None, help='height width (default: the paper config\'s)')
  parser.add_argument('--batch-size', '--batch_size', dest='batch_size', type=int, default=32)
  parser.add_argument('--seconds', type=float, default=10.0, help='per measurement')
  parser.add_argument('--resume-step', '--resume_step', dest='resume_step', type=int,
                      default=10000, help='0 skips the resume measurement')
  parser.add_argument('--child', help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  if args.child:
    print(json.dumps(measure(**json.loads(args.child))))
    return
  folders = args.records or build_realistic_records(args.build_dir, args.people)
  cores = len(os.sched_getaffinity(0))
  rows = []
  for folder in folders:
    for one_core in (True, False):
      row = _measure_in_child(folder, args, one_core)
      row.update(name=os.path.basename(os.path.normpath(folder)), one_core=one_core)
      rows.append(row)
      print(f'{row["name"]}, {"1 core" if one_core else f"{cores} cores"}: '
            f'{row["crops_per_s"]:.1f} crops/s', flush=True)
  print(f'\nHost input pipeline, global batch {args.batch_size}, {args.seconds:g} s per '
        f'measurement; "ms per crop" on 1 core (read, + decode, + warp, the rest of training\'s '
        f'pipeline); resume: seconds to the first batch at step {args.resume_step}.')
  print_table(rows, cores)


if __name__ == '__main__':
  main()
