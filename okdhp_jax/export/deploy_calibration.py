"""Calibration crops for int8 quantisation (deploy_quantize.py): people of the training split.

A seeded sample of `count` records of config.data.train_split, each cropped as the evaluation
crops it (augment.eval_example: the person's box, unaugmented, through data/crop.py), uint8.
The int8 ranges are then those of the crops the file will see, and the same records give the
same crops, so the same export gives the same int8 files.

Why ~128 by default (config.export.calibration_crops): min/max ranges settle within about a
hundred typical crops (TensorFlow's guide asks for ~100-500), while each crop costs one float
pass of the network during conversion (~0.1-0.3 s for a paper-size student on a CPU core);
onnxruntime keeps every calibration output in memory too.
"""

from __future__ import annotations

import numpy as np

from okdhp_jax.data import augment, pipeline, records
from okdhp_jax.data.meta import DatasetMeta
from okdhp_jax.data.tf_host import tf

CALIBRATION_SEED = 0


def calibration_crops(data_config, meta: DatasetMeta, count: int, *,
                      seed: int = CALIBRATION_SEED) -> np.ndarray:
  """uint8 [min(count, records), H, W, 3] crops of training records, in record order.

  The records are min(count, records) distinct indices drawn with `seed` from the training
  split (record i: the i-th of its shards in order); only those are decoded.

  Raises:
    ValueError: count < 1, or no training records to draw from (the error names the folder,
      the split and config.export.formats).
    FileNotFoundError: no dataset_info.json in config.data.records_dir.
  """
  count = int(count)
  if count < 1:
    raise ValueError(f'config.export.calibration_crops={count}: the int8 formats need at least '
                     'one calibration crop (default 128)')
  records_dir, split = data_config.records_dir, data_config.train_split
  info = records.read_dataset_info(records_dir)
  total = int(info.get('splits', {}).get(split, 0))
  if total == 0:
    raise ValueError(
        f'the int8 formats in config.export.formats calibrate on crops of the training split, '
        f'but config.data.records_dir={records_dir!r} has no {split!r} records (it has '
        f'{sorted(info.get("splits", {}))}); point it at the training records, or leave '
        'tflite_int8 and onnx_int8 out of config.export.formats')
  chosen = np.sort(np.random.default_rng(seed).choice(total, min(count, total), replace=False))
  wanted = tf.constant(chosen, tf.int64)
  input_size = tuple(int(s) for s in data_config.input_size)
  reduction = pipeline.max_decode_reduction(data_config)

  # Graph-form functions: AutoGraph's conversion would cost seconds and buy nothing.
  @tf.autograph.experimental.do_not_convert
  def is_wanted(index, _):
    return tf.reduce_any(tf.equal(index, wanted))

  @tf.autograph.experimental.do_not_convert
  def crop(_, serialized):
    return augment.eval_example(records.parse(serialized, meta.num_joints),
                                input_size=input_size, max_decode_reduction=reduction)['image']

  # In file order, as the evaluation pipeline reads a split; nothing past the last index.
  dataset = tf.data.TFRecordDataset(records.split_files(records_dir, split))
  dataset = dataset.take(int(chosen[-1]) + 1).enumerate().filter(is_wanted)
  dataset = dataset.map(crop, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  return np.concatenate(list(dataset.batch(64).as_numpy_iterator()))
