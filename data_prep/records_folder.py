"""The records folder a converter writes into: what it may already hold, and what is refused.

A folder may hold records of the same dataset (other splits converted earlier are kept and
merged into dataset_info.json). It must not hold records of another dataset, or converter
files no finished conversion lists, unless --overwrite; nor any file no converter writes, which
is never removed. Temporary folders of killed conversions are cleared.
"""

from __future__ import annotations

import json
import os
import re
import shutil

from okdhp_jax.data import records

# Files a converter writes besides shards and dataset_info.json (MPII/synthetic: PCKh ground
# truth; COCO: annotations for COCOeval and the detection boxes used).
CONVERTER_FILES = ('gt_valid.mat', 'annotations_valid.json', 'person_detection_results.json')
# dataset_info.json key: the CONVERTER_FILES this records folder holds.
EXTRA_FILES = 'extra_files'
TMP_PREFIX = '.incomplete-'
_SHARD = re.compile(r'^(?P<split>.+)-\d{5}-of-\d{5}\.tfrecord$')


def _listing(names: list[str], limit: int = 6) -> str:
  more = f' and {len(names) - limit} more' if len(names) > limit else ''
  return ', '.join(names[:limit]) + more


def read_old_info(out_dir: str) -> dict | None:
  path = os.path.join(out_dir, records.DATASET_INFO)
  if not os.path.exists(path):
    return None
  try:
    with open(path) as f:
      info = json.load(f)
  except (OSError, ValueError) as e:
    raise ValueError(f'{path} cannot be read ({e}); pass --overwrite to replace the records '
                     'folder, or choose another --out') from None
  if not isinstance(info, dict):
    raise ValueError(f'{path} is not a dataset_info object; pass --overwrite to replace it')
  return info


def remove_dead_tmp_dirs(out_dir: str):
  """Removes the temporary folders of conversions that were killed (their process is gone)."""
  for name in os.listdir(out_dir):
    pid = name[len(TMP_PREFIX):]
    if not name.startswith(TMP_PREFIX) or not pid.isdigit() or int(pid) == os.getpid():
      continue
    try:
      os.kill(int(pid), 0)
    except ProcessLookupError:
      shutil.rmtree(os.path.join(out_dir, name), ignore_errors=True)
    except OSError:  # alive, under another user: not ours to remove.
      pass


def check_out_dir(out_dir: str, info: dict, splits, extra_names, *,
                  overwrite: bool = False) -> list[str]:
  """Refuses an output folder the new records would be mixed up with; returns what to replace.

  A folder may hold records of the same dataset (other splits converted earlier are kept and
  merged into dataset_info.json). It must not hold records of another dataset or converter
  files that no finished conversion lists (shards of other splits left by an interrupted run)
  unless `overwrite`, nor any file no converter writes (never removed, even with `overwrite`).

  Args:
    out_dir: the records folder (existing).
    info: the new dataset_info (its 'dataset' and 'num_joints' are compared).
    splits: names of the splits this conversion writes.
    extra_names: names of the extra files it writes.
    overwrite: allow replacing every converter file in the folder.

  Returns:
    The converter files in the folder, which `overwrite` removes before installing.

  Raises:
    ValueError: one line naming the folder and the files in the way.
  """
  try:
    old = read_old_info(out_dir)
  except ValueError:
    if not overwrite:
      raise
    old = None  # an unreadable info file is replaced like the rest.
  same = old is not None and (old.get('dataset'), old.get('num_joints')) == (
      info.get('dataset'), info.get('num_joints'))
  kept_splits = set(old.get('splits', {})) if same else set()
  kept_extra = set(old.get(EXTRA_FILES, CONVERTER_FILES)) if same else set()
  ours, stale, unknown = [], [], []
  for name in sorted(os.listdir(out_dir)):
    if name.startswith(TMP_PREFIX):
      continue  # a running conversion's, or a killed one's (removed before writing)
    if name in (records.DATASET_INFO, records.DATASET_INFO + '.tmp'):
      ours.append(name)
      continue
    shard = _SHARD.match(name)
    if not shard and name not in CONVERTER_FILES and name not in extra_names:
      unknown.append(name)
      continue
    ours.append(name)
    if shard and shard['split'] not in splits and shard['split'] not in kept_splits:
      stale.append(name)
    elif not shard and name not in extra_names and name not in kept_extra:
      stale.append(name)
  where = f'--out {out_dir}'
  if unknown:
    raise ValueError(
        f'{where} holds files no converter writes: {_listing(unknown)}; move them away or choose '
        'another --out (--overwrite removes converter files only, never these)')
  if overwrite:
    return ours
  if old is not None and not same:
    raise ValueError(
        f'{where} holds {old.get("dataset")!r} records ({old.get("num_joints")} joints: '
        f'{_listing(ours)}), not {info.get("dataset")!r} ({info.get("num_joints")} joints); '
        'pass --overwrite to replace them, or choose another --out')
  if stale:
    why = (f'that its {records.DATASET_INFO} does not list' if old is not None else
           f'and no {records.DATASET_INFO} (an earlier conversion did not finish)')
    raise ValueError(f'{where} holds converter files {why}: {_listing(stale)}; pass '
                     '--overwrite to remove them, or choose another --out')
  return ours
