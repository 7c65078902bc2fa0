r"""MPII (HRNet json format) -> sharded person TFRecords.

  python -m data_prep.mpii --annotations DIR --images DIR --out DIR [--strict] [--overwrite]

DIR of annotations holds HRNet's `train.json`, `valid.json` and `gt_valid.mat`. The box rules
of the MPII protocol are applied here, once, so records hold final 0-based boxes and joints:
c_y += 15 s; s *= 1.25; then centre and joints -= 1 (MATLAB is 1-based); scale stored [s, s].
`person/index` is the person's position in valid.json, i.e. its column in gt_valid.mat, which is
copied to OUT/gt_valid.mat for PCKh. A json that is not a list of MPII people (image, center,
scale, joints; 16 joints each) is refused as a whole; see data_prep/README.md.
"""

from __future__ import annotations

import argparse
import collections
import os
import sys

import numpy as np

from data_prep import common
from okdhp_jax.data import meta as meta_lib
from okdhp_jax.data import records

NUM_JOINTS = meta_lib.MPII.num_joints
REQUIRED = ('image', 'center', 'scale', 'joints')  # what makes a json entry an MPII person


def image_id_from_name(name: str) -> int:
  """'005808361.jpg' -> 5808361 (MPII names are digits); other names -> a stable hash."""
  stem = os.path.splitext(os.path.basename(name))[0]
  if stem.isdigit():
    return int(stem)
  return int.from_bytes(stem.encode('utf-8')[:7].ljust(7, b'\0'), 'big')


def parse_person(person, where: str):
  """One HRNet json entry -> (image name, centre [2], scale [2], joints [16, 2], vis [16]).

  Applies the MPII adjustments (see module docstring); raises BadInput when malformed.
  """
  if not isinstance(person, dict):
    raise common.BadInput('malformed annotation', f'{where} is {type(person).__name__}, not dict')
  missing = [k for k in ('image', 'center', 'scale', 'joints', 'joints_vis') if k not in person]
  if missing:
    raise common.BadInput('malformed annotation', f'{where} lacks {missing}')
  try:
    center = np.asarray(person['center'], np.float64).reshape(2)
    s = float(person['scale'])
    joints = np.asarray(person['joints'], np.float64).reshape(NUM_JOINTS, 2)
    vis = np.asarray(person['joints_vis'], np.float64).reshape(NUM_JOINTS)
  except (TypeError, ValueError) as e:
    raise common.BadInput('malformed annotation', f'{where}: {e}') from None
  common.check_finite(where, center=center, scale=s, joints=joints, joints_vis=vis)
  if s <= 0:
    raise common.BadInput('malformed annotation', f'{where}: scale {s} is not positive')
  if not isinstance(person['image'], str) or not person['image']:
    raise common.BadInput('malformed annotation', f'{where}: image name {person["image"]!r}')
  center = center.copy()
  center[1] += 15 * s
  s *= 1.25
  center -= 1.0
  joints = joints - 1.0
  vis = (vis > 0).astype(np.float32)
  return person['image'], center, np.array([s, s]), joints, vis


def candidates(people, images_dir: str, source: str) -> list[common.Candidate]:
  """HRNet json list -> one Candidate per person; person_index = position in the list."""
  out = []
  for index, person in enumerate(people):
    where = f'{source}[{index}]'
    try:
      parsed = parse_person(person, where)
    except common.BadInput as e:
      out.append(common.Candidate.failed(where, e))
      continue

    def build(image, parsed=parsed, index=index):
      image_name, center, scale, joints, vis = parsed
      half = 100.0 * scale[0]
      return records.PersonExample(
          image_bytes=image.jpeg_bytes, image_filename=image_name,
          image_id=image_id_from_name(image_name), image_height=image.height,
          image_width=image.width, person_index=index, center=center, scale=scale,
          joints=joints, joints_vis=vis,
          box=np.array([center[0] - half, center[1] - half, 2 * half, 2 * half]),
          score=1.0, area=(2 * half) ** 2)

    name = parsed[0]
    try:
      path = common.image_inside(images_dir, name, where)
    except common.BadInput as e:
      out.append(common.Candidate.failed(where, e))
      continue
    out.append(common.Candidate(where, path, name, build))
  return out


def _joint_count(joints) -> int | None:
  """Joints in [[x, y], ...] (HRNet) or a flat [x, y, ...] list; None for anything else."""
  if not isinstance(joints, list):
    return None
  return len(joints) if joints and isinstance(joints[0], list) else len(joints) // 2


def load_json_list(path: str) -> list:
  """Reads an HRNet MPII json; ValueError (one line) unless it is a list of 16-joint people.

  Single malformed people are skipped and counted later; a file with none is refused here.
  """
  data = common.load_json(path, 'MPII annotations (HRNet json)')
  what = f'{path} is not an MPII annotation file (a list of people, HRNet format)'
  if not isinstance(data, list):
    keys = f' with keys {sorted(data)}' if isinstance(data, dict) else ''
    raise ValueError(f'{what}: it holds a {type(data).__name__}{keys}')
  people = [p for p in data if isinstance(p, dict) and all(k in p for k in REQUIRED)]
  if not people:
    first = data[0] if data else None
    got = (f'first entry has keys {sorted(first)}' if isinstance(first, dict) else
           f'first entry is {type(first).__name__}' if data else 'it is empty')
    raise ValueError(f'{what}: no entry has {", ".join(REQUIRED)} ({got})')
  counts = collections.Counter(_joint_count(p['joints']) for p in people)
  found = counts.most_common(1)[0][0] if counts else None
  if found != NUM_JOINTS:
    raise ValueError(f'{path}: people have {found} joints each; MPII has {NUM_JOINTS}')
  return data


def convert(annotations_dir: str, images_dir: str, out_dir: str, *, strict: bool = False,
            examples_per_shard: int = 1024, show_progress: bool = True,
            train_json: str = 'train.json', valid_json: str = 'valid.json',
            gt_valid: str = 'gt_valid.mat', overwrite: bool = False,
            workers: int | None = None,
            restart_markers: bool = True) -> tuple[dict, common.Report]:
  """Converts train.json and valid.json; returns (dataset_info, report).

  Raises ValueError / FileNotFoundError (one line) for input that is refused as a whole.
  """
  report = common.Report(strict=strict)
  splits = {}
  for split, name in (('train', train_json), ('valid', valid_json)):
    path = os.path.join(annotations_dir, name)
    splits[split] = candidates(load_json_list(path), images_dir, name)
  gt_path = os.path.join(annotations_dir, gt_valid)
  if not os.path.exists(gt_path):
    raise FileNotFoundError(f'{gt_path!r} not found: PCKh needs gt_valid.mat beside valid.json')
  info = {'dataset': 'mpii', 'num_joints': NUM_JOINTS, 'source': 'mpii',
          'coordinates': '0-based image pixels; c_y += 15 s, s *= 1.25 applied'}
  info = common.write_records(out_dir, splits, info, report=report,
                              examples_per_shard=examples_per_shard,
                              extra_files={'gt_valid.mat': gt_path},
                              show_progress=show_progress, overwrite=overwrite,
                              workers=workers, restart_markers=restart_markers)
  return info, report


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--annotations', required=True,
                      help='folder with train.json, valid.json, gt_valid.mat (HRNet format)')
  parser.add_argument('--images', required=True, help='folder of MPII images')
  parser.add_argument('--out', required=True, help='records folder to write')
  parser.add_argument('--strict', action='store_true', help='stop at the first bad input')
  parser.add_argument('--overwrite', action='store_true',
                      help='replace the records (of any dataset) already in --out')
  parser.add_argument('--examples-per-shard', '--examples_per_shard', dest='examples_per_shard',
                      type=int, default=1024)
  common.add_workers_flag(parser)
  common.add_restart_markers_flag(parser)
  args = parser.parse_args(argv)
  try:
    _, report = convert(args.annotations, args.images, args.out, strict=args.strict,
                        examples_per_shard=args.examples_per_shard, overwrite=args.overwrite,
                        workers=args.workers,
                        restart_markers=args.restart_markers)
  except (common.ConversionError, OSError, ValueError) as e:
    print(f'error: {e}', file=sys.stderr)
    return 1
  common.finish(report, args.out)
  return 0


if __name__ == '__main__':
  sys.exit(main())
