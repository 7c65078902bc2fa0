"""Dataset meta-information as data: joints, flip pairs, skeleton, metric, OKS sigmas.

Augmentation (flip swap, half body), evaluation (which metric scores it, OKS sigmas) and drawing
(skeleton, colours) all read the same `DatasetMeta`, so a new dataset is one entry here rather
than constants in many files.
"""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class DatasetMeta:
  """Static description of a keypoint layout.

  Attributes:
    name: registry key ('mpii', 'coco', 'crowdpose').
    joint_names: one name per joint, in the dataset's order.
    flip_pairs: (left, right) index pairs swapped by a horizontal flip.
    skeleton: (a, b) index pairs drawn as limbs.
    metric: the protocol that scores it, a name registered in okdhp_jax/evaluation/metrics.py
      ('pckh', 'coco_ap').
    oks_sigmas: per-joint OKS sigmas (COCO, CrowdPose), or None.
    upper_body: indices used by half-body augmentation as the upper body.
    lower_body: indices used by half-body augmentation as the lower body.
  """

  name: str
  joint_names: tuple[str, ...]
  flip_pairs: tuple[tuple[int, int], ...]
  skeleton: tuple[tuple[int, int], ...]
  metric: str
  oks_sigmas: tuple[float, ...] | None = None
  upper_body: tuple[int, ...] = ()
  lower_body: tuple[int, ...] = ()

  @property
  def num_joints(self) -> int:
    return len(self.joint_names)

  def flip_permutation(self) -> np.ndarray:
    """Index array `perm` such that `flipped_joints = joints[perm]` after mirroring.

    Returns:
      int32 array [num_joints]; perm[i] is the joint whose mirror image becomes joint i.
    """
    perm = np.arange(self.num_joints, dtype=np.int32)
    for left, right in self.flip_pairs:
      perm[left], perm[right] = right, left
    return perm

  @property
  def joint_sides(self) -> tuple[str, ...]:
    """'left', 'right' or 'centre' per joint, read from the joint names (for drawing)."""
    def side(name: str) -> str:
      if name.startswith(('l_', 'left_')):
        return 'left'
      if name.startswith(('r_', 'right_')):
        return 'right'
      return 'centre'
    return tuple(side(name) for name in self.joint_names)


MPII = DatasetMeta(
    name='mpii',
    joint_names=(
        'r_ankle', 'r_knee', 'r_hip', 'l_hip', 'l_knee', 'l_ankle', 'pelvis', 'thorax',
        'upper_neck', 'head_top', 'r_wrist', 'r_elbow', 'r_shoulder', 'l_shoulder',
        'l_elbow', 'l_wrist',
    ),
    flip_pairs=((0, 5), (1, 4), (2, 3), (10, 15), (11, 14), (12, 13)),
    skeleton=(
        (0, 1), (1, 2), (2, 6), (6, 3), (3, 4), (4, 5), (6, 7), (7, 8), (8, 9),
        (7, 12), (12, 11), (11, 10), (7, 13), (13, 14), (14, 15),
    ),
    metric='pckh',
    upper_body=(7, 8, 9, 10, 11, 12, 13, 14, 15),
    lower_body=(0, 1, 2, 3, 4, 5, 6),
)

COCO = DatasetMeta(
    name='coco',
    joint_names=(
        'nose', 'left_eye', 'right_eye', 'left_ear', 'right_ear', 'left_shoulder',
        'right_shoulder', 'left_elbow', 'right_elbow', 'left_wrist', 'right_wrist', 'left_hip',
        'right_hip', 'left_knee', 'right_knee', 'left_ankle', 'right_ankle',
    ),
    flip_pairs=((1, 2), (3, 4), (5, 6), (7, 8), (9, 10), (11, 12), (13, 14), (15, 16)),
    skeleton=(
        (15, 13), (13, 11), (16, 14), (14, 12), (11, 12), (5, 11), (6, 12), (5, 6), (5, 7),
        (6, 8), (7, 9), (8, 10), (1, 2), (0, 1), (0, 2), (1, 3), (2, 4), (3, 5), (4, 6),
    ),
    metric='coco_ap',
    oks_sigmas=(
        .026, .025, .025, .035, .035, .079, .079, .072, .072, .062, .062, .107, .107, .087,
        .087, .089, .089,
    ),
    upper_body=(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10),
    lower_body=(11, 12, 13, 14, 15, 16),
)

# CrowdPose (Li et al., CVPR 2019; github.com/Jeff-sjtu/CrowdPose): COCO's 12 limb joints in
# COCO order, then head top and neck; the sigmas are those of its crowdpose-api.
CROWDPOSE = DatasetMeta(
    name='crowdpose',
    joint_names=(
        'left_shoulder', 'right_shoulder', 'left_elbow', 'right_elbow', 'left_wrist',
        'right_wrist', 'left_hip', 'right_hip', 'left_knee', 'right_knee', 'left_ankle',
        'right_ankle', 'head', 'neck',
    ),
    flip_pairs=((0, 1), (2, 3), (4, 5), (6, 7), (8, 9), (10, 11)),
    skeleton=(
        (10, 8), (8, 6), (11, 9), (9, 7), (6, 7), (0, 6), (1, 7), (0, 1), (0, 2), (1, 3),
        (2, 4), (3, 5), (12, 13), (1, 13), (0, 13),
    ),
    metric='coco_ap',
    oks_sigmas=(
        .079, .079, .072, .072, .062, .062, .107, .107, .087, .087, .089, .089, .079, .079,
    ),
    upper_body=(0, 1, 2, 3, 4, 5, 12, 13),
    lower_body=(6, 7, 8, 9, 10, 11),
)

_REGISTRY = {meta.name: meta for meta in (MPII, COCO, CROWDPOSE)}


def get_meta(name: str) -> DatasetMeta:
  """Looks up a dataset's meta by name ('mpii', 'coco', 'crowdpose')."""
  try:
    return _REGISTRY[name]
  except KeyError:
    raise ValueError(
        f'config.data.dataset={name!r} is unknown; choose one of {sorted(_REGISTRY)}'
    ) from None
