"""OKS non-maximum suppression among the people predicted in one image (HRNet's rules).

Two detections of the same person give two near-identical poses; the one with the lower score
is dropped when its OKS with a kept pose exceeds the threshold (0.9 in HRNet and OKDHP). The
soft variant decays scores by exp(-oks^2 / threshold) instead and keeps at most `max_dets`.
"""

from __future__ import annotations

import numpy as np


def oks_overlap(reference, others, reference_area: float, other_areas, sigmas) -> np.ndarray:
  """OKS between one pose and several, as HRNet's `oks_iou` (all joints, no visibility test).

  Args:
    reference: [J, 2] joint (x, y).
    others: [M, J, 2].
    reference_area, other_areas: box areas (scalar, [M]); their mean is the OKS scale s^2.
    sigmas: [J] per-joint OKS sigmas (DatasetMeta.oks_sigmas).

  Returns:
    [M] OKS in [0, 1].
  """
  reference = np.asarray(reference, np.float64)
  others = np.asarray(others, np.float64).reshape(-1, *reference.shape)
  variances = (2.0 * np.asarray(sigmas, np.float64)) ** 2
  squared = np.sum((others - reference) ** 2, axis=-1)  # [M, J]
  mean_area = (reference_area + np.asarray(other_areas, np.float64)) / 2 + np.spacing(1)
  e = squared / variances / mean_area[:, None] / 2
  return np.mean(np.exp(-e), axis=-1)


def _validated(keypoints, scores, areas, sigmas):
  keypoints = np.asarray(keypoints, np.float64)
  scores = np.asarray(scores, np.float64).reshape(-1)
  areas = np.asarray(areas, np.float64).reshape(-1)
  if sigmas is None:
    raise ValueError('OKS-NMS needs per-joint OKS sigmas; this DatasetMeta has oks_sigmas=None')
  sigmas = np.asarray(sigmas, np.float64)
  n = keypoints.shape[0] if keypoints.ndim == 3 else -1
  if keypoints.ndim != 3 or keypoints.shape[1:] != (sigmas.size, 2) or scores.size != n or (
      areas.size != n):
    raise ValueError(f'OKS-NMS needs keypoints [N, {sigmas.size}, 2], scores [N], areas [N]; '
                     f'got {keypoints.shape}, {scores.shape}, {areas.shape}')
  return keypoints, scores, areas, sigmas


def oks_nms(keypoints, scores, areas, sigmas, threshold: float = 0.9) -> np.ndarray:
  """Greedy OKS-NMS.

  Args:
    keypoints: [N, J, 2]; scores: [N]; areas: [N]; sigmas: [J].
    threshold: a pose is dropped when its OKS with a higher-scored kept pose is > threshold.

  Returns:
    int indices of the kept poses, highest score first.
  """
  keypoints, scores, areas, sigmas = _validated(keypoints, scores, areas, sigmas)
  order = np.argsort(-scores, kind='stable')
  keep = []
  while order.size:
    i, rest = order[0], order[1:]
    keep.append(i)
    overlap = oks_overlap(keypoints[i], keypoints[rest], areas[i], areas[rest], sigmas)
    order = rest[overlap <= threshold]
  return np.asarray(keep, np.int64)


def soft_oks_nms(keypoints, scores, areas, sigmas, threshold: float = 0.9,
                 max_dets: int = 20) -> np.ndarray:
  """Soft OKS-NMS (HRNet/mmpose): Gaussian score decay exp(-oks^2 / threshold).

  Returns:
    int indices of at most `max_dets` poses in the order the decayed scores pick them; the
    results keep their original scores, as in HRNet.
  """
  keypoints, scores, areas, sigmas = _validated(keypoints, scores, areas, sigmas)
  order = np.argsort(-scores, kind='stable')
  decayed = scores[order]
  keep = []
  while order.size and len(keep) < max_dets:
    i, rest = order[0], order[1:]
    keep.append(i)
    overlap = oks_overlap(keypoints[i], keypoints[rest], areas[i], areas[rest], sigmas)
    decayed = decayed[1:] * np.exp(-overlap ** 2 / threshold)
    resort = np.argsort(-decayed, kind='stable')
    order, decayed = rest[resort], decayed[resort]
  return np.asarray(keep, np.int64)
