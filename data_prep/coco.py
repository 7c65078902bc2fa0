r"""COCO person keypoints -> sharded person TFRecords.

  python -m data_prep.coco --annotations person_keypoints_train2017.json \
      person_keypoints_val2017.json --images DIR --out DIR [--detections dets.json] \
      [--dataset coco|crowdpose] [--overwrite]

Each annotation file becomes a split: 'train' when its name contains 'train', 'valid' when it
contains 'val' (or force one with --split). Images are looked up as DIR/file_name, then
DIR/val2017/file_name (the part of the json name after 'person_keypoints_'). GT boxes are
cleaned as in HRNet (crowds left out, boxes clipped to the image, people with an empty box or a
zero area skipped) and turned into centre and scale with the aspect ratio of the input
(--aspect-ratio, w / h; the pipeline re-applies the fix for its own input size) and 1.25
padding. The valid annotations are copied to OUT/annotations_valid.json for COCOeval.

With --detections (COCO results json of person boxes), a split 'valid_det' holds one record per
detection with score >= --det-score-threshold (no joints, box score kept); the json is copied to
OUT/person_detection_results.json. The eval pipeline reads 'valid_det' instead of 'valid' when
config.data.detections is set.

--dataset crowdpose reads CrowdPose's files (the same layout, 14 joints). A file that is not a
keypoint file of the chosen dataset (a detections list, an instances file, 14 keypoints read as
COCO), or whose images share an id, is refused as a whole; see data_prep/README.md.
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import sys

import numpy as np

from data_prep import common
from okdhp_jax.data import geometry
from okdhp_jax.data import meta as meta_lib
from okdhp_jax.data import records

NUM_JOINTS = meta_lib.COCO.num_joints
# Datasets whose files have the COCO layout (images, annotations with x, y, v keypoints).
DATASETS = {meta.name: meta for meta in (meta_lib.COCO, meta_lib.CROWDPOSE)}


def split_of(path: str) -> str:
  name = os.path.basename(path).lower()
  if 'train' in name:
    return 'train'
  if 'val' in name or 'test' in name:
    return 'valid'
  raise ValueError(f'cannot tell the split of {path!r} from its name; pass --split train|valid')


def _key(value):
  """An id usable as a dict key; None for lists, dicts and missing ids (no TypeError later)."""
  return value if isinstance(value, (int, float, str)) else None


def _order(value):
  """Sort key for ids of any json type: numbers first, then the rest by their text."""
  return (0, value, '') if isinstance(value, (int, float)) else (1, 0, str(value))


def person_category(data: dict):
  """(index, keypoint names or None) of the person category (id 1, as HRNet reads it)."""
  categories = [c if isinstance(c, dict) else {} for c in data.get('categories') or []]
  for index, category in enumerate(categories):
    names = category.get('keypoints')
    if category.get('id') == 1 and isinstance(names, list):
      return index, [str(n) for n in names]
  return None, None


def check_layout(data: dict, path: str, people: list, meta) -> None:
  """Refuses a file whose people do not have `meta`'s joints (e.g. CrowdPose read as COCO).

  Per-person keypoint errors are skipped and counted later; a whole file of them is not.
  """
  counts = collections.Counter(len(a['keypoints']) // 3 for a in people
                               if isinstance(a.get('keypoints'), list)
                               and len(a['keypoints']) % 3 == 0)
  if not counts:
    raise ValueError(f'{path}: no person annotation has a list of (x, y, v) keypoint triples')
  found = counts.most_common(1)[0][0]
  index, names = person_category(data)
  listed = '' if names is None else f' (categories[{index}].keypoints lists {len(names)})'
  if found != meta.num_joints or (names is not None and len(names) != meta.num_joints):
    others = [m.name for m in DATASETS.values() if m.num_joints == found and m is not meta]
    hint = f'; for {others[0]} files pass --dataset {others[0]}' if others else ''
    raise ValueError(f'{path}: annotations have {found} keypoints per person{listed}; '
                     f'{meta.name} has {meta.num_joints}{hint}')
  for i, (name, expected) in enumerate(zip(names or [], meta.joint_names)):
    if name != expected:
      raise ValueError(f'{path}: categories[{index}].keypoints[{i}] is {name!r} where '
                       f'{meta.name} has {expected!r}: another joint order or dataset')


def load_coco_json(path: str, meta=meta_lib.COCO) -> dict:
  """Reads a keypoint annotation file of `meta`'s dataset; ValueError (one line) otherwise."""
  data = common.load_json(path, f'{meta.name} annotations')
  what = f'{path} is not a {meta.name} keypoint annotation file'
  if isinstance(data, list):
    raise ValueError(f'{what}: it holds a list (a results or detections file?), not an object '
                     'with "images", "annotations" and "categories"')
  if not isinstance(data, dict):
    raise ValueError(f'{what}: it holds a {type(data).__name__}')
  for key in ('images', 'annotations'):
    if not isinstance(data.get(key), list):
      raise ValueError(f'{what}: no "{key}" list (its keys: {sorted(data)})')
  people = [a for a in data['annotations']
            if isinstance(a, dict) and a.get('category_id', 1) == 1]
  if not any('keypoints' in a for a in people):
    raise ValueError(f'{what}: none of its {len(people)} person annotations has "keypoints" '
                     '(an instances or image-info file?)')
  check_layout(data, path, people, meta)
  return data


def image_table(data: dict, path: str) -> dict:
  """image id -> images entry; ValueError when two entries share an id but not a file.

  Records are built from the id, so a shared id would give one person the other's pixels.
  """
  table, first = {}, {}
  for index, entry in enumerate(data['images']):
    image_id = _key(entry.get('id')) if isinstance(entry, dict) else None
    if image_id is None:
      continue  # annotations on it are skipped as 'unknown image_id'
    if image_id in table and table[image_id].get('file_name') != entry.get('file_name'):
      raise ValueError(
          f'{path}: images[{first[image_id]}] and images[{index}] share id {image_id!r} '
          f'({table[image_id].get("file_name")!r} and {entry.get("file_name")!r}); '
          'image ids must be unique')
    table.setdefault(image_id, entry)
    first.setdefault(image_id, index)
  return table


def load_detections(path: str, images: dict, annotations_path: str) -> list:
  """Reads a COCO results list of person boxes on the images of `annotations_path`."""
  dets = common.load_json(path, 'detections')
  what = f'{path} is not a COCO detections file (a list of image_id, bbox, score)'
  if not isinstance(dets, list):
    hint = ' (an annotation file?)' if isinstance(dets, dict) and 'images' in dets else ''
    raise ValueError(f'{what}: it holds a {type(dets).__name__}{hint}')
  boxes = [d for d in dets if isinstance(d, dict) and 'bbox' in d and 'image_id' in d]
  if not boxes:
    raise ValueError(f'{what}: none of its {len(dets)} entries has "image_id" and "bbox"')
  if all(_key(d['image_id']) not in images for d in boxes):
    raise ValueError(f'{path}: none of its {len(boxes)} boxes is on an image of '
                     f'{annotations_path} (detections of another split?)')
  return dets


def image_resolver(images_dir: str, annotations_path: str):
  """file_name, where -> path in images_dir or images_dir/<split folder>; BadInput outside."""
  stem = os.path.splitext(os.path.basename(annotations_path))[0]
  subdir = os.path.join(images_dir, re.sub(r'^person_keypoints_', '', stem))

  def resolve(file_name, where: str) -> str:
    direct = common.image_inside(images_dir, file_name, where)
    if not os.path.exists(direct) and os.path.exists(os.path.join(subdir, file_name)):
      return common.image_inside(subdir, file_name, where)
    return direct
  return resolve


def _as_int(value, what: str, where: str) -> int:
  try:
    return int(value)
  except (TypeError, ValueError):
    raise common.BadInput('malformed annotation', f'{where}: {what} {value!r}') from None


def clean_box(bbox, width: int, height: int, where: str, area=None) -> np.ndarray:
  """HRNet's GT box cleaning: xywh clipped to the image -> [4]; BadInput when nothing is left.

  `area` is the annotation's segment area; HRNet drops people whose area is not positive.
  """
  try:
    x, y, w, h = (float(v) for v in bbox)
  except (TypeError, ValueError):
    raise common.BadInput('malformed annotation', f'{where}: bbox {bbox!r}') from None
  common.check_finite(where, bbox=[x, y, w, h])
  x1, y1 = max(0.0, x), max(0.0, y)
  x2 = min(width - 1.0, x1 + max(0.0, w - 1.0))
  y2 = min(height - 1.0, y1 + max(0.0, h - 1.0))
  if not (x2 >= x1 and y2 >= y1) or w <= 0 or h <= 0:
    raise common.BadInput('empty box', f'{where}: bbox {bbox} in a {width}x{height} image')
  if area is not None:
    try:
      area = float(area)
    except (TypeError, ValueError):
      raise common.BadInput('malformed annotation', f'{where}: area {area!r}') from None
    if not area > 0:
      raise common.BadInput('empty box', f'{where}: area {area}')
  return np.array([x1, y1, x2 - x1, y2 - y1])


def parse_keypoints(annotation, where: str, num_joints: int = NUM_JOINTS):
  """COCO keypoints [x, y, v] * J -> joints [J, 2], visibility [J] (v > 0)."""
  try:
    keypoints = np.asarray(annotation['keypoints'], np.float64).reshape(num_joints, 3)
  except (KeyError, TypeError, ValueError) as e:
    raise common.BadInput('malformed annotation', f'{where}: keypoints ({e})') from None
  common.check_finite(where, keypoints=keypoints)
  return keypoints[:, :2].copy(), (keypoints[:, 2] > 0).astype(np.float32)


def gt_candidates(data: dict, images: dict, resolve, source: str, aspect_ratio: float,
                  num_joints: int = NUM_JOINTS):
  """One Candidate per single person (GT box); `images` from image_table."""
  # HRNet (getAnnIds(iscrowd=False)) uses single people only; crowds are not bad input.
  annotations = [a for a in data.get('annotations', [])
                 if not isinstance(a, dict) or (a.get('category_id', 1) == 1
                                                and not a.get('iscrowd', 0))]
  annotations.sort(key=lambda a: _order(a.get('image_id', -1) if isinstance(a, dict) else -1))
  out = []
  for a in annotations:
    where = f'{source} annotation id={a.get("id") if isinstance(a, dict) else "?"}'
    image_entry = images.get(_key(a.get('image_id'))) if isinstance(a, dict) else None
    try:
      if image_entry is None or 'file_name' not in image_entry:
        raise common.BadInput('malformed annotation', f'{where}: unknown image_id')
      joints, vis = parse_keypoints(a, where, num_joints)
      if 'bbox' not in a:
        raise common.BadInput('malformed annotation', f'{where}: no bbox')
      image_id = _as_int(a['image_id'], 'image_id', where)
      person_index = _as_int(a.get('id', -1), 'id', where)
      file_name = image_entry['file_name']
      path = resolve(file_name, where)
      where = f'{where} ({file_name})'
    except common.BadInput as e:
      out.append(common.Candidate.failed(where, e))
      continue

    def build(image, a=a, joints=joints, vis=vis, where=where, image_id=image_id,
              person_index=person_index, file_name=file_name):
      box = clean_box(a['bbox'], image.width, image.height, where, a.get('area'))
      center, scale = geometry.box_to_center_scale(box, aspect_ratio)
      return records.PersonExample(
          image_bytes=image.jpeg_bytes, image_filename=file_name,
          image_id=image_id, image_height=image.height, image_width=image.width,
          person_index=person_index, center=center, scale=scale, joints=joints,
          joints_vis=vis, box=box, score=1.0, area=float(a.get('area', box[2] * box[3])))

    out.append(common.Candidate(where, path, file_name, build))
  return out


def detection_candidates(detections, images: dict, resolve, source: str, aspect_ratio: float,
                         threshold: float, num_joints: int = NUM_JOINTS):
  """One Candidate per person box with score >= threshold (no joints; the score is kept)."""
  out = []
  order = sorted(range(len(detections)),
                 key=lambda i: _order(detections[i].get('image_id', -1)
                                      if isinstance(detections[i], dict) else -1))
  for index in order:
    det = detections[index]
    where = f'{source}[{index}]'
    try:
      if not isinstance(det, dict) or _key(det.get('image_id')) not in images:
        raise common.BadInput('malformed detection', f'{where}: unknown image_id')
      if det.get('category_id', 1) != 1:
        continue
      score = float(det.get('score', 1.0))
      bbox = np.asarray(det['bbox'], np.float64).reshape(4)
      common.check_finite(where, bbox=bbox, score=score)
      if bbox[2] <= 0 or bbox[3] <= 0:
        raise common.BadInput('empty box', f'{where}: bbox {bbox.tolist()}')
      if score < threshold:
        continue
      image_entry = images[_key(det['image_id'])]
      image_id = _as_int(det['image_id'], 'image_id', where)
      file_name = image_entry.get('file_name')
      path = resolve(file_name, where)
      where = f'{where} ({file_name})'
    except (KeyError, TypeError, ValueError) as e:
      out.append(common.Candidate.failed(where, common.BadInput('malformed detection',
                                                                f'{where}: {e}')))
      continue
    except common.BadInput as e:
      out.append(common.Candidate.failed(where, e))
      continue

    def build(image, index=index, score=score, bbox=bbox, image_id=image_id,
              file_name=file_name):
      center, scale = geometry.box_to_center_scale(bbox, aspect_ratio)
      return records.PersonExample(
          image_bytes=image.jpeg_bytes, image_filename=file_name,
          image_id=image_id, image_height=image.height, image_width=image.width,
          person_index=index, center=center, scale=scale,
          joints=np.zeros((num_joints, 2)), joints_vis=np.zeros(num_joints), box=bbox,
          score=score, area=float(bbox[2] * bbox[3]))

    out.append(common.Candidate(where, path, file_name, build, require_visible=False))
  return out


def convert(annotations: list[str], images_dir: str, out_dir: str, *, split: str = '',
            detections: str = '', det_score_threshold: float = 0.0,
            aspect_ratio: float = 192 / 256, strict: bool = False,
            examples_per_shard: int = 1024, show_progress: bool = True,
            dataset: str = 'coco', overwrite: bool = False, workers: int | None = None,
            restart_markers: bool = True):
  """Converts the annotation files (and detections); returns (dataset_info, report).

  Raises ValueError / FileNotFoundError (one line) for input that is refused as a whole.
  """
  if dataset not in DATASETS:
    raise ValueError(f'dataset {dataset!r} is not in the COCO layout; choose one of '
                     f'{sorted(DATASETS)}')
  meta = DATASETS[dataset]
  report = common.Report(strict=strict)
  splits, extra = {}, {}
  valid_images = valid_resolve = valid_path = None
  for path in annotations:
    name = split or split_of(path)
    if name in splits:
      raise ValueError(f'two annotation files map to split {name!r}; pass them separately')
    data = load_coco_json(path, meta)
    images = image_table(data, path)
    resolve = image_resolver(images_dir, path)
    splits[name] = gt_candidates(data, images, resolve, os.path.basename(path), aspect_ratio,
                                 meta.num_joints)
    if name == 'valid':
      valid_images, valid_resolve, valid_path = images, resolve, path
      extra['annotations_valid.json'] = path
  if detections:
    if valid_images is None:
      raise ValueError('--detections needs a valid annotation file (its images and ids)')
    dets = load_detections(detections, valid_images, valid_path)
    splits['valid_det'] = detection_candidates(dets, valid_images, valid_resolve,
                                               os.path.basename(detections), aspect_ratio,
                                               det_score_threshold, meta.num_joints)
    extra['person_detection_results.json'] = detections
  info = {'dataset': meta.name, 'num_joints': meta.num_joints, 'source': meta.name,
          'aspect_ratio': aspect_ratio,
          'annotations': {s: os.path.basename(p) for s, p in zip(splits, annotations)},
          'valid_annotations': os.path.basename(valid_path) if valid_path else None,
          'detections': os.path.basename(detections) if detections else None,
          'det_score_threshold': det_score_threshold}
  info = common.write_records(out_dir, splits, info, report=report,
                              examples_per_shard=examples_per_shard, extra_files=extra,
                              show_progress=show_progress, overwrite=overwrite,
                              workers=workers, restart_markers=restart_markers)
  return info, report


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--annotations', nargs='+', required=True,
                      help='person_keypoints_*.json files (split from the name)')
  parser.add_argument('--images', required=True, help='images folder (or its parent)')
  parser.add_argument('--out', required=True, help='records folder to write')
  parser.add_argument('--dataset', default='coco', choices=sorted(DATASETS),
                      help='keypoint layout of the files (crowdpose: 14 joints)')
  parser.add_argument('--split', default='', choices=['', 'train', 'valid'],
                      help='force the split of a single annotation file')
  parser.add_argument('--detections', default='', help='person detections (COCO results json)')
  parser.add_argument('--det-score-threshold', '--det_score_threshold', dest='det_score_threshold',
                      type=float, default=0.0)
  parser.add_argument('--aspect-ratio', '--aspect_ratio', dest='aspect_ratio',
                      type=float, default=192 / 256,
                      help='input width / height used for centre and scale')
  parser.add_argument('--strict', action='store_true', help='stop at the first bad input')
  parser.add_argument('--overwrite', action='store_true',
                      help='replace the records (of any dataset) already in --out')
  parser.add_argument('--examples-per-shard', '--examples_per_shard', dest='examples_per_shard',
                      type=int, default=1024)
  common.add_workers_flag(parser)
  common.add_restart_markers_flag(parser)
  args = parser.parse_args(argv)
  try:
    _, report = convert(args.annotations, args.images, args.out, split=args.split,
                        detections=args.detections,
                        det_score_threshold=args.det_score_threshold,
                        aspect_ratio=args.aspect_ratio, strict=args.strict,
                        examples_per_shard=args.examples_per_shard, dataset=args.dataset,
                        overwrite=args.overwrite, workers=args.workers,
                        restart_markers=args.restart_markers)
  except (common.ConversionError, OSError, ValueError) as e:
    print(f'error: {e}', file=sys.stderr)
    return 1
  common.finish(report, args.out)
  return 0


if __name__ == '__main__':
  sys.exit(main())
