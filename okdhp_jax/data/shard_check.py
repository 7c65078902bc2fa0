"""Damaged TFRecord shards: which file, from which byte, and how many records are readable.

TensorFlow reports a truncated or corrupted record as a DataLossError that names neither the
file nor, inside an interleave, the shard; and it cannot read past the damage (the record
framing is lost). So a damaged shard is read up to the damage and no further, and
`config.data.on_corrupt_record` decides what happens:

  'stop' (default)  the run stops at the first damaged batch with one line naming every damaged
                    shard and the byte offset where it breaks; the last good checkpoint stays.
  'skip'            the shards are checked when the pipeline is built (reading every record
                    once, without decoding images) and each damaged one is read up to its
                    damage: a warning names the file, the offset and how many records are
                    skipped, and training goes on with the rest.
"""

from __future__ import annotations

import dataclasses
import re

from okdhp_jax.data.tf_host import tf

CHOICES = ('stop', 'skip')


@dataclasses.dataclass(frozen=True)
class Damage:
  file: str
  readable: int           # records before the damage
  offset: int | None      # byte offset TensorFlow reports, if it does
  reason: str             # 'truncated record', 'corrupted record', ...

  def describe(self, expected: int | None = None) -> str:
    where = f'byte {self.offset}' if self.offset is not None else 'an unknown offset'
    skipped = '' if expected is None else f', {max(expected - self.readable, 0)} skipped'
    return (f'{self.file}: {self.reason} at {where} ({self.readable} records readable'
            f'{skipped})')


class CorruptRecordsError(ValueError):
  """Some shard of the records cannot be read to its end."""


def check_choice(value: str) -> str:
  if value not in CHOICES:
    raise ValueError(f'config.data.on_corrupt_record must be one of {CHOICES}, got {value!r}')
  return value


def find_damage(path: str) -> Damage | None:
  """Reads every record of `path` (no parsing); the damage found, or None if it reads whole."""
  count = 0
  try:
    for _ in tf.data.TFRecordDataset(path):
      count += 1
  except tf.errors.DataLossError as error:
    message = str(error)
    match = re.search(r'(\w+ record) at (\d+)', message)
    reason = match.group(1) if match else 'unreadable record'
    return Damage(path, count, int(match.group(2)) if match else None, reason)
  return None


def scan(files: list[str]) -> list[Damage]:
  return [d for d in (find_damage(f) for f in files) if d is not None]


def stop_error(files: list[str], split: str, error: Exception) -> CorruptRecordsError:
  """The one-line error for a DataLossError met while reading `files` of `split`."""
  damage = scan(files)
  found = '; '.join(d.describe() for d in damage) or (
      f'no shard fails when read alone ({" ".join(str(error).split())[:200]})')
  return CorruptRecordsError(
      f'the {split!r} records are damaged: {found}. Rebuild them with the converter, or set '
      "config.data.on_corrupt_record='skip' to train on what is readable.")
