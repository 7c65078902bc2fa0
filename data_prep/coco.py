r"""COCO person keypoints -> sharded person TFRecords.

  python -m data_prep.coco --annotations person_keypoints_train2017.json \
      person_keypoints_val2017.json --images DIR --out DIR [--detections dets.json]

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
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys

import numpy as np

from data_prep import common
from okdhp_jax.data import geometry
from okdhp_jax.data import meta as meta_lib
from okdhp_jax.data import records

NUM_JOINTS = meta_lib.COCO.num_joints


def split_of(path: str) -> str:
  name = os.path.basename(path).lower()
  if 'train' in name:
    return 'train'
  if 'val' in name or 'test' in name:
    return 'valid'
  raise ValueError(f'cannot tell the split of {path!r} from its name; pass --split train|valid')


def load_coco_json(path: str) -> dict:
  if not os.path.exists(path):
    raise FileNotFoundError(f'COCO annotations {path!r} not found')
  with open(path) as f:
    try:
      data = json.load(f)
    except json.JSONDecodeError as e:
      raise ValueError(f'{path} is not valid json: {e}') from None
  if not isinstance(data, dict) or 'images' not in data:
    raise ValueError(f'{path} is not a COCO annotation file (no "images" list)')
  return data


def image_resolver(images_dir: str, annotations_path: str):
  stem = os.path.splitext(os.path.basename(annotations_path))[0]
  subdir = re.sub(r'^person_keypoints_', '', stem)

  def resolve(file_name: str) -> str:
    direct = os.path.join(images_dir, file_name)
    nested = os.path.join(images_dir, subdir, file_name)
    return nested if not os.path.exists(direct) and os.path.exists(nested) else direct
  return resolve


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


def parse_keypoints(annotation, where: str):
  try:
    keypoints = np.asarray(annotation['keypoints'], np.float64).reshape(NUM_JOINTS, 3)
  except (KeyError, TypeError, ValueError) as e:
    raise common.BadInput('malformed annotation', f'{where}: keypoints ({e})') from None
  common.check_finite(where, keypoints=keypoints)
  return keypoints[:, :2].copy(), (keypoints[:, 2] > 0).astype(np.float32)


def gt_candidates(data: dict, resolve, source: str, aspect_ratio: float):
  images = {im.get('id'): im for im in data['images'] if isinstance(im, dict)}
  # HRNet (getAnnIds(iscrowd=False)) uses single people only; crowds are not bad input.
  annotations = [a for a in data.get('annotations', [])
                 if not isinstance(a, dict) or (a.get('category_id', 1) == 1
                                                and not a.get('iscrowd', 0))]
  annotations.sort(key=lambda a: (a.get('image_id', -1) if isinstance(a, dict) else -1))
  out = []
  for a in annotations:
    where = f'{source} annotation id={a.get("id") if isinstance(a, dict) else "?"}'
    image_entry = images.get(a.get('image_id')) if isinstance(a, dict) else None
    try:
      if image_entry is None or 'file_name' not in image_entry:
        raise common.BadInput('malformed annotation', f'{where}: unknown image_id')
      joints, vis = parse_keypoints(a, where)
      if 'bbox' not in a:
        raise common.BadInput('malformed annotation', f'{where}: no bbox')
    except common.BadInput as e:
      out.append(common.Candidate.failed(where, e))
      continue

    def build(image, a=a, image_entry=image_entry, joints=joints, vis=vis, where=where):
      box = clean_box(a['bbox'], image.width, image.height, where, a.get('area'))
      center, scale = geometry.box_to_center_scale(box, aspect_ratio)
      return records.PersonExample(
          image_bytes=image.jpeg_bytes, image_filename=image_entry['file_name'],
          image_id=int(a['image_id']), image_height=image.height, image_width=image.width,
          person_index=int(a.get('id', -1)), center=center, scale=scale, joints=joints,
          joints_vis=vis, box=box, score=1.0, area=float(a.get('area', box[2] * box[3])))

    file_name = image_entry['file_name']
    out.append(common.Candidate(f'{where} ({file_name})', resolve(file_name), file_name, build))
  return out


def detection_candidates(detections, data: dict, resolve, source: str, aspect_ratio: float,
                         threshold: float):
  images = {im.get('id'): im for im in data['images'] if isinstance(im, dict)}
  out = []
  order = sorted(range(len(detections)),
                 key=lambda i: detections[i].get('image_id', -1)
                 if isinstance(detections[i], dict) else -1)
  for index in order:
    det = detections[index]
    where = f'{source}[{index}]'
    try:
      if not isinstance(det, dict) or det.get('image_id') not in images:
        raise common.BadInput('malformed detection', f'{where}: unknown image_id')
      if det.get('category_id', 1) != 1:
        continue
      score = float(det.get('score', 1.0))
      bbox = np.asarray(det['bbox'], np.float64).reshape(4)
      common.check_finite(where, bbox=bbox, score=score)
      if bbox[2] <= 0 or bbox[3] <= 0:
        raise common.BadInput('empty box', f'{where}: bbox {bbox.tolist()}')
    except (KeyError, TypeError, ValueError) as e:
      out.append(common.Candidate.failed(where, common.BadInput('malformed detection',
                                                                f'{where}: {e}')))
      continue
    except common.BadInput as e:
      out.append(common.Candidate.failed(where, e))
      continue
    if score < threshold:
      continue
    image_entry = images[det['image_id']]

    def build(image, det=det, index=index, score=score, bbox=bbox, image_entry=image_entry):
      center, scale = geometry.box_to_center_scale(bbox, aspect_ratio)
      return records.PersonExample(
          image_bytes=image.jpeg_bytes, image_filename=image_entry['file_name'],
          image_id=int(det['image_id']), image_height=image.height, image_width=image.width,
          person_index=index, center=center, scale=scale,
          joints=np.zeros((NUM_JOINTS, 2)), joints_vis=np.zeros(NUM_JOINTS), box=bbox,
          score=score, area=float(bbox[2] * bbox[3]))

    file_name = image_entry['file_name']
    out.append(common.Candidate(f'{where} ({file_name})', resolve(file_name), file_name, build,
                                require_visible=False))
  return out


def convert(annotations: list[str], images_dir: str, out_dir: str, *, split: str = '',
            detections: str = '', det_score_threshold: float = 0.0,
            aspect_ratio: float = 192 / 256, strict: bool = False,
            examples_per_shard: int = 1024, show_progress: bool = True):
  """Converts the annotation files (and detections); returns (dataset_info, report)."""
  report = common.Report(strict=strict)
  splits, extra = {}, {}
  valid_data = valid_resolve = valid_path = None
  for path in annotations:
    name = split or split_of(path)
    if name in splits:
      raise ValueError(f'two annotation files map to split {name!r}; pass them separately')
    data = load_coco_json(path)
    resolve = image_resolver(images_dir, path)
    splits[name] = gt_candidates(data, resolve, os.path.basename(path), aspect_ratio)
    if name == 'valid':
      valid_data, valid_resolve, valid_path = data, resolve, path
      extra['annotations_valid.json'] = path
  if detections:
    if valid_data is None:
      raise ValueError('--detections needs a valid annotation file (its images and ids)')
    if not os.path.exists(detections):
      raise FileNotFoundError(f'detections {detections!r} not found')
    with open(detections) as f:
      dets = json.load(f)
    if not isinstance(dets, list):
      raise ValueError(f'{detections} must be a COCO results list of boxes')
    splits['valid_det'] = detection_candidates(dets, valid_data, valid_resolve,
                                               os.path.basename(detections), aspect_ratio,
                                               det_score_threshold)
    extra['person_detection_results.json'] = detections
  info = {'dataset': 'coco', 'num_joints': NUM_JOINTS, 'source': 'coco',
          'aspect_ratio': aspect_ratio,
          'annotations': {s: os.path.basename(p) for s, p in zip(splits, annotations)},
          'valid_annotations': os.path.basename(valid_path) if valid_path else None,
          'detections': os.path.basename(detections) if detections else None,
          'det_score_threshold': det_score_threshold}
  info = common.write_records(out_dir, splits, info, report=report,
                              examples_per_shard=examples_per_shard, extra_files=extra,
                              show_progress=show_progress)
  return info, report


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--annotations', nargs='+', required=True,
                      help='person_keypoints_*.json files (split from the name)')
  parser.add_argument('--images', required=True, help='images folder (or its parent)')
  parser.add_argument('--out', required=True, help='records folder to write')
  parser.add_argument('--split', default='', choices=['', 'train', 'valid'],
                      help='force the split of a single annotation file')
  parser.add_argument('--detections', default='', help='person detections (COCO results json)')
  parser.add_argument('--det-score-threshold', '--det_score_threshold', dest='det_score_threshold',
                      type=float, default=0.0)
  parser.add_argument('--aspect-ratio', '--aspect_ratio', dest='aspect_ratio',
                      type=float, default=192 / 256,
                      help='input width / height used for centre and scale')
  parser.add_argument('--strict', action='store_true', help='stop at the first bad input')
  parser.add_argument('--examples-per-shard', '--examples_per_shard', dest='examples_per_shard',
                      type=int, default=1024)
  args = parser.parse_args(argv)
  try:
    _, report = convert(args.annotations, args.images, args.out, split=args.split,
                        detections=args.detections,
                        det_score_threshold=args.det_score_threshold,
                        aspect_ratio=args.aspect_ratio, strict=args.strict,
                        examples_per_shard=args.examples_per_shard)
  except (common.ConversionError, FileNotFoundError, ValueError) as e:
    print(f'error: {e}', file=sys.stderr)
    return 1
  common.finish(report, args.out)
  return 0


if __name__ == '__main__':
  sys.exit(main())
