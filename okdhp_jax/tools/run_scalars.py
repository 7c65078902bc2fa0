"""A run's scalars read back from its TensorBoard event files (what the loop wrote with clu)."""

from __future__ import annotations

import glob
import os


def read_scalars(workdir: str, tags) -> dict[int, dict[str, float]]:
  """{step: {tag: value}} of the scalars named in `tags`, from WORKDIR/events.out.tfevents.*.

  TensorBoard's own reader would do, but it needs the whole tensorboard package at run time;
  the events are TFRecords of Event protos, which TensorFlow (already here) reads.
  """
  from tensorboard.compat.proto import event_pb2
  from okdhp_jax.data.tf_host import tf
  tags = set(tags)
  rows: dict[int, dict[str, float]] = {}
  for path in sorted(glob.glob(os.path.join(workdir, 'events.out.tfevents.*'))):
    for record in tf.data.TFRecordDataset(path):
      event = event_pb2.Event.FromString(record.numpy())
      for value in event.summary.value:
        if value.tag in tags:
          number = (float(tf.make_ndarray(value.tensor)) if value.HasField('tensor')
                    else value.simple_value)
          rows.setdefault(event.step, {})[value.tag] = number
  return rows


def timed_windows(workdir: str, tags) -> dict[int, dict[str, float]]:
  """read_scalars, keeping only the log steps that have every tag (the timed windows)."""
  tags = tuple(tags)
  return {step: row for step, row in read_scalars(workdir, tags).items()
          if len(row) == len(tags)}
