"""A damaged TFRecord shard is named with its byte offset: the run stops, or skips its end."""

from __future__ import annotations

import gc
import logging
import os

import numpy as np
import pytest

from configs import default
from data_prep import common
from okdhp_jax.data import image_files
from okdhp_jax.data import meta as meta_lib
from okdhp_jax.data import pipeline, records, shard_check

SIZE = 64


def _person(index):
  rng = np.random.default_rng(index)
  image = rng.integers(0, 255, (SIZE, SIZE, 3), dtype=np.uint8)
  joints = rng.uniform(16, 48, (16, 2))
  return records.PersonExample(
      image_bytes=image_files.encode_jpeg(image), image_filename=f'{index}.jpg', image_id=index,
      image_height=SIZE, image_width=SIZE, person_index=index, center=np.array([32.0, 32.0]),
      scale=np.array([0.3, 0.3]), joints=joints, joints_vis=np.ones(16, np.float32),
      box=np.array([0, 0, SIZE, SIZE], np.float64), score=1.0, area=float(SIZE * SIZE))


@pytest.fixture()
def damaged(tmp_path):
  """12 people in 3 train shards of 4; the second shard truncated inside its third record."""
  out = str(tmp_path / 'records')
  people = [_person(i) for i in range(12)]
  candidates = {s: [common.Candidate(str(i), '', '', lambda _, p=p: p) for i, p in
                    enumerate(people)] for s in ('train', 'valid')}
  common.write_records(out, candidates, {'dataset': 'mpii', 'num_joints': 16},
                       report=common.Report(strict=True), examples_per_shard=4,
                       show_progress=False)
  files = records.split_files(out, 'train')
  assert len(files) == 3
  sizes = [len(r) for r in _raw(files[1])]
  with open(files[1], 'r+b') as f:  # 16 bytes of framing per record
    f.truncate(sum(s + 16 for s in sizes[:2]) + 40)  # inside the third record's data
  config = default.get_config().data
  config.update(records_dir=out, input_size=(SIZE, SIZE), shuffle_buffer=4, scale_factor=0.0,
                rotation_factor=0.0, flip=False)
  return config, files


def _raw(path):
  from okdhp_jax.data.tf_host import tf  # pylint: disable=g-import-not-at-top
  return [r.numpy() for r in tf.data.TFRecordDataset(path)]


def test_find_damage_names_the_offset_and_the_readable_count(damaged):
  _, files = damaged
  assert shard_check.find_damage(files[0]) is None
  damage = shard_check.find_damage(files[1])
  assert damage.readable == 2 and damage.reason == 'truncated record' and damage.offset > 0
  assert shard_check.scan(files) == [damage]


def test_stop_names_the_shard_when_training_reaches_it(damaged):
  config, files = damaged
  ds = pipeline.build_train_dataset(config, meta_lib.get_meta('mpii'), local_batch_size=4,
                                    seed=0)
  with pytest.raises(shard_check.CorruptRecordsError) as error:
    for _ in pipeline.numpy_batches(ds.take(8), files=files, split='train'):
      pass
  message = str(error.value)
  assert os.path.basename(files[1]) in message and 'truncated record at byte' in message
  assert '2 records readable' in message and "on_corrupt_record='skip'" in message
  assert os.path.basename(files[0]) not in message


def test_stop_closes_the_pipeline_before_the_error_leaves(damaged):
  """The error outlives the loop (main keeps it to the end of the program): it must not keep
  the pipeline's workers running (tests/test_error_exits.py runs the program on such a shard)."""
  from tensorflow.python.data.ops import iterator_ops  # pylint: disable=g-import-not-at-top
  config, files = damaged
  def live():  # ids: iterators other tests of this worker left for the collector don't count
    return {id(o) for o in gc.get_objects() if isinstance(o, iterator_ops.OwnedIterator)}
  before = live()
  ds = pipeline.build_train_dataset(config, meta_lib.get_meta('mpii'), local_batch_size=4,
                                    seed=0)
  with pytest.raises(shard_check.CorruptRecordsError) as caught:
    for _ in pipeline.numpy_batches(ds, files=files, split='train'):
      pass
  assert caught.value.__traceback__ is not None and not live() - before


def test_skip_trains_on_the_readable_records_with_a_warning(damaged, caplog):
  config, files = damaged
  config.on_corrupt_record = 'skip'
  with caplog.at_level(logging.WARNING):
    ds = pipeline.build_train_dataset(config, meta_lib.get_meta('mpii'), local_batch_size=5,
                                      seed=0)
  warning = ' '.join(r.getMessage() for r in caplog.records)
  assert os.path.basename(files[1]) in warning and '2 records readable, 2 skipped' in warning
  # 10 readable people: four passes over them in batches of 5 meet the damaged shard often.
  batches = list(pipeline.numpy_batches(ds.take(8), files=files, split='train'))
  assert len(batches) == 8 and all(b['image'].shape == (5, SIZE, SIZE, 3) for b in batches)


def test_an_unknown_choice_is_refused(damaged):
  config, _ = damaged
  config.on_corrupt_record = 'ignore'
  with pytest.raises(ValueError, match=r"on_corrupt_record must be one of \('stop', 'skip'\)"):
    pipeline.build_train_dataset(config, meta_lib.get_meta('mpii'), local_batch_size=4, seed=0)
