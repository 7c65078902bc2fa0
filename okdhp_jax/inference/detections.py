"""A COCO person-detections file in, COCO keypoint results out (the top-down test protocol).

Detections: a json list of {image_id, category_id, bbox [x, y, w, h], score}, as written by a
person detector (HRNet's COCO_val2017_detections_AP_H_56_person.json). Images are found by id
in one folder under COCO's names: `000000000785.jpg` (12 digits), else `785.jpg`.

Results: HRNet's protocol, as the evaluation scores it (evaluation/coco_eval.py): each person's
score is box score x mean of its joint scores above 0.2, and the people of one image go through
OKS-NMS at 0.9; the list can go straight to COCOeval or `tools/eval_coco --results`.
"""

from __future__ import annotations

import collections
import json
import os
from typing import Any

import numpy as np

from okdhp_jax import paths
from okdhp_jax.data import geometry
from okdhp_jax.evaluation import coco_eval, nms
from okdhp_jax.inference import images as images_lib

PERSON_CATEGORY_ID = 1


def read_detections(path: str) -> list[dict[str, Any]]:
  """The detections list of a json file, checked (check_detections)."""
  target = paths.resolve(path)
  if not target.exists():
    raise FileNotFoundError(f'detections file {path} does not exist')
  try:
    detections = json.loads(target.read_text())
  except (json.JSONDecodeError, UnicodeDecodeError) as error:
    raise ValueError(f'detections file {path} is not valid json ({error})') from None
  return check_detections(detections, path)


def check_detections(detections, source: str = 'detections') -> list[dict[str, Any]]:
  """Raises ValueError naming the first entry that is not {image_id, bbox [4], score}."""
  what = f'{source} is not a COCO detections file (a list of image_id, bbox, score)'
  if not isinstance(detections, list):
    raise ValueError(f'{what}: it holds a {type(detections).__name__}')
  for index, entry in enumerate(detections):
    try:
      ok = (isinstance(entry, dict) and isinstance(entry['image_id'], (int, str))
            and np.asarray(entry['bbox'], np.float64).shape == (4,)
            and np.isfinite(float(entry.get('score', 1.0))))
    except (KeyError, TypeError, ValueError):
      ok = False
    if not ok:
      raise ValueError(f'{what}: entry {index} needs an image_id, a bbox of 4 numbers and a '
                       f'finite score; got {entry!r:.200}')
  return detections


def image_path(image_dir: str, image_id) -> str:
  """The file of `image_id` in `image_dir` under COCO's names; FileNotFoundError naming both."""
  names = [f'{image_id:012d}.jpg', f'{image_id}.jpg'] if isinstance(image_id, int) else [
      str(image_id), f'{image_id}.jpg']
  for name in names:
    path = os.path.join(image_dir, name)
    if paths.resolve(path).exists():
      return path
  raise FileNotFoundError(f'image_id {image_id}: none of {", ".join(names)} is in {image_dir}')


def person_boxes(detections, score_threshold: float) -> dict[Any, list[int]]:
  """image_id -> indices of its person detections scoring >= score_threshold, in file order."""
  by_image = collections.defaultdict(list)
  for index, entry in enumerate(detections):
    if entry.get('category_id', PERSON_CATEGORY_ID) != PERSON_CATEGORY_ID:
      continue
    if float(entry.get('score', 1.0)) >= score_threshold:
      by_image[entry['image_id']].append(index)
  return dict(by_image)


def predict_detections(predictor, detections, image_dir: str, *, score_threshold: float = 0.0,
                       oks_nms_threshold: float = 0.9,
                       keypoint_score_threshold: float = 0.2) -> list[dict[str, Any]]:
  """COCO keypoint results for every person detection scoring >= score_threshold.

  Every image is found and every box checked before the network runs.

  Args:
    predictor: a PosePredictor.
    detections: a detections file path, or its list.
    image_dir: the folder of the images.
    score_threshold: detections scoring below it are skipped (HRNet keeps all: 0.0).
    oks_nms_threshold: OKS-NMS among the people of an image; skipped for layouts without OKS
      sigmas (MPII).
    keypoint_score_threshold: joints above it count in the person's score.

  Returns:
    [{'image_id', 'category_id': 1, 'keypoints': [x, y, score] * J, 'score'}, ...], image by
    image, highest score first within an image.
  """
  if isinstance(detections, str):
    source, detections = detections, read_detections(detections)
  else:
    source, detections = 'detections', check_detections(detections)
  if not paths.resolve(image_dir).is_dir():
    raise FileNotFoundError(f'image folder {image_dir} does not exist')
  chosen = person_boxes(detections, score_threshold)
  sources, boxes = [], []
  for image_id, indices in chosen.items():
    image = images_lib.open_image(image_path(image_dir, image_id))
    labels = [f'{source} entry {i} (image_id {image_id})' for i in indices]
    boxes.append(images_lib.check_boxes([detections[i]['bbox'] for i in indices], image,
                                        labels))
    sources.append(image)
  poses = predictor.predict_sources(sources, boxes)

  results = []
  for (image_id, indices), pose in zip(chosen.items(), poses):
    box_scores = np.array([float(detections[i].get('score', 1.0)) for i in indices])
    scores = coco_eval.rescore(box_scores, pose.scores, keypoint_score_threshold)
    sigmas = predictor.meta.oks_sigmas
    if sigmas is None:
      keep = np.argsort(-scores, kind='stable')
    else:
      keep = nms.oks_nms(pose.keypoints, scores, _padded_areas(pose.boxes, predictor), sigmas,
                         oks_nms_threshold)
    for row in keep:
      keypoints = np.concatenate([pose.keypoints[row], pose.scores[row][:, None]], axis=-1)
      results.append({'image_id': image_id, 'category_id': PERSON_CATEGORY_ID,
                      'keypoints': [round(float(v), 3) for v in keypoints.reshape(-1)],
                      'score': float(scores[row])})
  return results


def _padded_areas(boxes, predictor) -> np.ndarray:
  """HRNet's OKS-NMS areas: of the padded, aspect-fixed box the person was cropped from."""
  height, width = predictor.input_size
  scales = np.stack([geometry.box_to_center_scale(box, width / height, predictor.box_padding)[1]
                     for box in boxes])
  return coco_eval.area_from_scale(scales)
