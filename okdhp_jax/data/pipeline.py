"""tf.data input pipelines (train and eval) over person records, and global arrays for a mesh.

TensorFlow only runs on the host (okdhp_jax/data/tf_host.py hides accelerators from it).

Each process reads its own part of a split: whole shard files when there are at least as many
files as processes, otherwise every process_count-th record. Train batches are infinite,
shuffled, augmented and seeded (same seed, same batches); eval batches are finite, in record
order, padded to full batches with a 'valid' mask, and every process yields the same number of
batches (computed from the per-shard lengths in dataset_info.json), as global arrays require.
"""

from __future__ import annotations

import collections
import logging
from typing import Iterator

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from okdhp_jax.data import augment
from okdhp_jax.data import crop
from okdhp_jax.data import records, shard_check
from okdhp_jax.data.tf_host import tf

def _graph_only(fn):
  """`fn` without AutoGraph: the map functions are written in graph form (tf.cond, tf.where;
  Python `if` only on Python values), so its source conversion, seconds at every pipeline
  build, buys nothing. A function rather than an alias, so that importing this module does not
  start TensorFlow (a benchmark that reads no records never loads it)."""
  return tf.autograph.experimental.do_not_convert(fn)


def _autotune(value: int) -> int:
  return tf.data.AUTOTUNE if value is None or value < 0 else int(value)


def _without_model_thread(ds: tf.data.Dataset) -> tf.data.Dataset:
  """`ds` without tf.data's autotuning thread, which can make dropping an iterator take
  seconds.

  That thread sleeps between tunings for a period that doubles with the iterator's age, and a
  dropped iterator waits for it: measured here, up to 19 s after a two-process run's last
  step (before its export), and past main's 10 s exit watchdog after a SIGTERM on a busy
  machine, which turned the preemption's status 143 into 1 (3 stops of 3 with two busy loops
  beside the run; 0 of 4 without the thread). Without it an AUTOTUNE map runs at tf.data's
  fixed default parallelism for the host (config.data.num_parallel_calls sets another), and the
  prefetch depth is the config's: no slower on 2 cores (data_prep.bench: 857 / 1018 crops/s
  for MPII / COCO, 665 / 1035 with the thread).
  """
  options = tf.data.Options()
  options.autotune.enabled = False
  return ds.with_options(options)


def train_augmentation(data_config, meta) -> dict:
  """augment.train_example's keyword arguments from config.data."""
  return dict(
      input_size=tuple(data_config.input_size), scale_factor=data_config.scale_factor,
      rotation_factor=data_config.rotation_factor, rotation_prob=data_config.rotation_prob,
      flip=data_config.flip, half_body_prob=data_config.half_body_prob,
      half_body_min_joints=data_config.half_body_min_joints, meta=meta,
      max_decode_reduction=max_decode_reduction(data_config))


def max_decode_reduction(data_config) -> int:
  """config.data.max_decode_reduction, checked (okdhp_jax/data/crop.py says what it does)."""
  return crop.check_max_reduction(data_config.get('max_decode_reduction',
                                                  crop.DECODE_REDUCTIONS[-1]),
                                  'config.data.max_decode_reduction')


def _check_info(data_config, meta) -> dict:
  info = records.read_dataset_info(data_config.records_dir)
  if info.get('dataset') != meta.name or info.get('num_joints') != meta.num_joints:
    raise ValueError(
        f'config.data.records_dir={data_config.records_dir!r} holds {info.get("dataset")!r} '
        f'records with {info.get("num_joints")} joints, but config.data.dataset selects '
        f'{meta.name!r} ({meta.num_joints} joints)')
  return info


def _resolve_split(data_config, split: str, info: dict) -> str:
  """The eval split reads '<split>_det' (detection boxes) when config.data.detections is set."""
  detections = data_config.get('detections', '')
  if detections and split == data_config.eval_split:
    det_split = f'{split}_det'
    if det_split not in info.get('splits', {}):
      raise ValueError(
          f'config.data.detections={detections!r} is set but {data_config.records_dir!r} has no '
          f'{det_split!r} split; convert with `python -m data_prep.coco ... --detections '
          f'{detections}` or set config.data.detections=""')
    return det_split
  return split


def split_files(data_config, split: str) -> list[str]:
  """The shard files a pipeline of `split` reads (the eval split's '_det' twin with detections)."""
  info = records.read_dataset_info(data_config.records_dir)
  return records.split_files(data_config.records_dir, _resolve_split(data_config, split, info))


def count_examples(data_config, split: str) -> int:
  """Number of records of a split (all processes), from dataset_info.json."""
  info = records.read_dataset_info(data_config.records_dir)
  split = _resolve_split(data_config, split, info)
  if split not in info['splits']:
    raise ValueError(f'split {split!r} is not in {data_config.records_dir!r} '
                     f'(has {sorted(info["splits"])})')
  return int(info['splits'][split])


def _process_part(records_dir: str, split: str, info: dict, process_index: int,
                  process_count: int):
  """(files, record_sharded, per-process counts) for this process."""
  if not 0 <= process_index < process_count:
    raise ValueError(f'process_index {process_index} not in [0, {process_count})')
  files = records.split_files(records_dir, split)
  if len(files) >= process_count:
    lengths = info['shard_lengths'][split]
    counts = [sum(lengths[p::process_count]) for p in range(process_count)]
    return files[process_index::process_count], False, counts
  total = info['splits'][split]
  counts = [len(range(p, total, process_count)) for p in range(process_count)]
  return files, True, counts


def _records(files, *, record_sharded, process_index, process_count, shuffle_seed=None,
             readable=None):
  """Serialised records of `files`; interleaved when shuffling, in file order otherwise.

  `readable`: file -> records to read (a damaged shard's readable prefix); others are whole.
  """
  limits = [int((readable or {}).get(f, -1)) for f in files]  # take(-1): every record
  ds = tf.data.Dataset.from_tensor_slices((files, tf.constant(limits, tf.int64)))
  read = _graph_only(lambda f, n: tf.data.TFRecordDataset(f).take(n))
  if shuffle_seed is None:
    ds = ds.flat_map(read)
  else:
    ds = ds.shuffle(len(files), seed=shuffle_seed, reshuffle_each_iteration=False)
    ds = ds.interleave(read, cycle_length=min(len(files), 8),
                       num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  if record_sharded:
    ds = ds.shard(process_count, process_index)
  return ds


# Epoch e's shuffles are seeded with seed * _EPOCH_STRIDE + e: distinct for every (seed, epoch).
_EPOCH_STRIDE = 1_000_003
_NO_END = 2**62  # Dataset.range's stop for the epochs of an infinite stream.


def _epoch_size(counts, process_index: int, readable: dict | None, first_epoch) -> int:
  """Records per epoch for this process: from dataset_info.json's per-shard lengths, else
  (shards with a damaged end skipped) counted by reading one epoch."""
  if not readable:
    return int(counts[process_index])
  return int(first_epoch().reduce(tf.constant(0, tf.int64), lambda n, _: n + 1))


def build_train_dataset(data_config, meta, *, local_batch_size: int, seed: int,
                        process_index: int = 0, process_count: int = 1,
                        start_step: int = 0) -> tf.data.Dataset:
  """Infinite, shuffled, augmented batches for this process.

  The stream is a sequence of epochs, each a pass over this process's records in an order drawn
  from (seed, epoch). `start_step` resumes it exactly where a run stopped: the same order and
  the same augmentation draws as an uninterrupted run from batch `start_step` on. Whole epochs
  before it are skipped unread; only the records of the current epoch before the stop point
  are read again (not decoded or augmented).

  Yields dicts: 'image' uint8 [B, H, W, 3] (normalised on the device), 'joints' float32 [B, J, 2]
  in input pixels, 'joints_vis' float32 [B, J] (0 also outside the crop).
  """
  info = _check_info(data_config, meta)
  files, record_sharded, counts = _process_part(
      data_config.records_dir, data_config.train_split, info, process_index, process_count)
  if counts[process_index] == 0:
    raise ValueError(f'process {process_index} gets no {data_config.train_split!r} records from '
                     f'{data_config.records_dir!r}; write more shards or use fewer processes')
  if process_count > 1:
    part = (f'the records i with i % {process_count} == {process_index}' if record_sharded
            else f'{len(files)} shard files')
    logging.info('Process %d/%d reads %s of %r (%d examples).', process_index, process_count,
                 part, data_config.train_split, counts[process_index])
  readable = None
  if shard_check.check_choice(data_config.on_corrupt_record) == 'skip':
    lengths = dict(zip(records.split_files(data_config.records_dir, data_config.train_split),
                       info.get('shard_lengths', {}).get(data_config.train_split, [])))
    damage = shard_check.scan(files)
    for d in damage:
      logging.warning('Skipping the damaged end of a shard (config.data.on_corrupt_record='
                      "'skip'): %s", d.describe(lengths.get(d.file)))
    readable = {d.file: d.readable for d in damage}

  def epoch(number):
    """Epoch `number` (an int64 tensor) of this process's stream: its files and records in an
    order drawn from (seed, number) alone, so any epoch can be built without the ones before."""
    ds = _records(files, record_sharded=record_sharded, process_index=process_index,
                  process_count=process_count, shuffle_seed=seed * _EPOCH_STRIDE + number,
                  readable=readable)
    if data_config.shuffle_buffer > 1:
      ds = ds.shuffle(data_config.shuffle_buffer,
                      seed=(seed * 1009 + process_index + 1) * _EPOCH_STRIDE + number)
    return ds

  # A resumed run starts in the epoch it stopped in and reads (without decoding) only that
  # epoch's records before its stop point; the whole epochs before it are never read.
  epoch_size = _epoch_size(counts, process_index, readable,
                           lambda: epoch(tf.constant(0, tf.int64)))
  position = start_step * local_batch_size
  first, offset = divmod(position, epoch_size)
  later = tf.data.Dataset.range(first + 1, _NO_END).flat_map(_graph_only(epoch))
  ds = epoch(tf.constant(first, tf.int64)).skip(offset).concatenate(later)
  base_seed = tf.constant([seed, process_index], tf.int64)
  kwargs = train_augmentation(data_config, meta)

  @_graph_only
  def process(index, serialized):
    parsed = records.parse(serialized, meta.num_joints)
    example_seed = tf.random.experimental.stateless_fold_in(base_seed, index)
    return augment.train_example(parsed, example_seed, **kwargs)

  # Each example's draws come from its position in the stream, so a resumed stream, numbered
  # from where it starts, draws exactly what an uninterrupted run draws there.
  ds = ds.enumerate(start=position)
  ds = ds.map(process, num_parallel_calls=_autotune(data_config.num_parallel_calls),
              deterministic=True)
  ds = ds.batch(local_batch_size, drop_remainder=True)
  return _without_model_thread(ds.prefetch(_autotune(data_config.prefetch)))


def _pad_batch(batch: dict, batch_size: int) -> dict:
  n = tf.shape(batch['image'])[0]
  out = {}
  for key, value in batch.items():
    pad = [[0, batch_size - n]] + [[0, 0]] * (len(value.shape) - 1)
    value = tf.pad(value, pad)
    value.set_shape([batch_size] + value.shape[1:].as_list())
    out[key] = value
  out['valid'] = tf.range(batch_size) < n
  return out


def build_eval_dataset(data_config, meta, *, split: str, local_batch_size: int,
                       process_index: int = 0, process_count: int = 1) -> tf.data.Dataset:
  """Finite, unaugmented batches in record order, padded with a 'valid' bool [B] mask.

  Keys: image uint8 [B, H, W, 3], joints [B, J, 2], joints_vis [B, J], center [B, 2], scale [B, 2]
  (after the aspect-ratio fix: what the crop used), image_id int64 [B], person_index int64 [B],
  box [B, 4] xywh, score float32 [B], area float32 [B], valid bool [B]. Every process yields
  the same number of batches.
  """
  info = _check_info(data_config, meta)
  split = _resolve_split(data_config, split, info)
  files, record_sharded, counts = _process_part(
      data_config.records_dir, split, info, process_index, process_count)
  num_batches = max(-(-c // local_batch_size) for c in counts)
  ds = _records(files, record_sharded=record_sharded, process_index=process_index,
                process_count=process_count)
  input_size = tuple(data_config.input_size)
  reduction = max_decode_reduction(data_config)

  @_graph_only
  def process(serialized):
    return augment.eval_example(records.parse(serialized, meta.num_joints),
                                input_size=input_size, max_decode_reduction=reduction)

  ds = ds.map(process, num_parallel_calls=_autotune(data_config.num_parallel_calls),
              deterministic=True)
  threshold = float(data_config.get('det_score_threshold', 0.0))
  if split.endswith('_det') and threshold > 0:
    ds = ds.filter(_graph_only(lambda example: example['score'] >= threshold))
  ds = ds.batch(local_batch_size).map(_graph_only(lambda b: _pad_batch(b, local_batch_size)))
  # All-invalid batches so that every process runs the same number of steps.
  filler = tf.data.Dataset.from_tensors(
      {k: tf.zeros(spec.shape, spec.dtype) for k, spec in ds.element_spec.items()}).repeat()
  ds = ds.concatenate(filler).take(num_batches)
  return _without_model_thread(ds.prefetch(_autotune(data_config.prefetch)))


def make_global_batch(batch: dict[str, np.ndarray], mesh, data_axis: str = 'data'
                      ) -> dict[str, jax.Array]:
  """Process-local numpy batch -> global jax.Arrays sharded along `data_axis` of the mesh."""
  sharding = NamedSharding(mesh, PartitionSpec(data_axis))
  return {key: jax.make_array_from_process_local_data(sharding, np.asarray(value))
          for key, value in batch.items()}


def global_batches(ds: tf.data.Dataset, mesh, prefetch: int = 2, data_axis: str = 'data', *,
                   files: list[str] | None = None, split: str = ''
                   ) -> Iterator[dict[str, jax.Array]]:
  """Iterates a batched dataset as global arrays, keeping `prefetch` batches on device.

  A damaged record in `files` raises shard_check.CorruptRecordsError naming the shard.
  """
  queue = collections.deque()
  for batch in numpy_batches(ds, files=files, split=split):
    queue.append(make_global_batch(batch, mesh, data_axis))
    if len(queue) > prefetch:
      yield queue.popleft()
  while queue:
    yield queue.popleft()


def numpy_batches(ds: tf.data.Dataset, *, files: list[str] | None = None, split: str = ''
                  ) -> Iterator[dict[str, np.ndarray]]:
  """`ds.as_numpy_iterator()`, with TensorFlow's DataLossError (which names no file) turned
  into a CorruptRecordsError naming the damaged shards of `files` and their byte offsets.

  The iterator is closed before that error leaves: the error's traceback would otherwise keep
  the pipeline's workers running for as long as the error is kept (to the end of the program).
  """
  iterator = ds.as_numpy_iterator()
  while True:
    try:
      batch = next(iterator)
    except StopIteration:
      return
    except tf.errors.DataLossError as error:
      lost = error.with_traceback(None)  # its frames hold the iterator too
      lost.__context__ = None
      break
    yield batch
  del iterator
  raise shard_check.stop_error(files or [], split, lost) from None
