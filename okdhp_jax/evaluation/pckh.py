"""MPII PCKh with HRNet's formula, read from a `gt_valid.mat`-format ground-truth file.

PCKh (HRNet formula): headsize = 0.6 * ||headbox[1] - headbox[0]||, err = ||pred - gt|| / headsize,
PCKh_j = 100 * #(err <= t and visible) / #visible. The table reports Head (joint 9), Shoulder,
Elbow, Wrist, Hip, Knee, Ankle (the mean of the left/right values), Mean (weighted by visible
counts over the 14 joints other than pelvis and thorax) and Mean@0.1.

Mean@0.1 threshold switch: by default it is a true 0.10 (`mean_at_0_1_threshold=0.1`). HRNet's
printed "Mean@0.1" is taken at 0.11 (index 11 of its range(0, 0.51, 0.01)); pass
`mean_at_0_1_threshold=HRNET_MEAN_AT_0_1_THRESHOLD` (config.eval.hrnet_mean_at_0_11=True) to
reproduce HRNet's figure. Both use HRNet's "<=" (mmpose uses a strict "<").

Coordinates: gt_valid.mat is MATLAB 1-based. `load_mpii_gt` converts it to 0-based once, so
predictions stay in the project's 0-based image pixels (HRNet instead adds 1 to its predictions;
the difference is the same). `save_pred_mat` writes HRNet's `pred.mat` (1-based, N x 16 x 2) for
the official MATLAB tool; `load_pred_mat` reads it back (and the 16 x 2 x N layout).

`PCKhMetric` is the evaluation's metric object for datasets whose meta says metric='pckh'
(evaluation/metrics.py): it scores every branch, per evaluation group when the records name
groups, and leaves the best branch's pred.mat.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from typing import TYPE_CHECKING, Any

import ml_collections
import numpy as np
import scipy.io
from etils import epath

from okdhp_jax.data.meta import DatasetMeta
from okdhp_jax.evaluation import metrics

if TYPE_CHECKING:
  from okdhp_jax.evaluation.evaluator import EvalResult

NUM_JOINTS = 16
HEAD_SIZE_FACTOR = 0.6  # HRNet's SC_BIAS.
HRNET_MEAN_AT_0_1_THRESHOLD = 0.11
# Joint names in gt_valid.mat's `dataset_joints`, in the order of okdhp_jax.data.meta.MPII.
MPII_MAT_JOINT_NAMES = ('rank', 'rkne', 'rhip', 'lhip', 'lkne', 'lank', 'pelv', 'thor', 'neck',
                        'head', 'rwri', 'relb', 'rsho', 'lsho', 'lelb', 'lwri')
# Table columns: (name, short header, joint indices averaged). Pelvis (6), thorax (7) and
# upper neck (8) are not reported.
TABLE_GROUPS = (
    ('Head', 'Head', (9,)),
    ('Shoulder', 'Sho', (13, 12)),
    ('Elbow', 'Elb', (14, 11)),
    ('Wrist', 'Wri', (15, 10)),
    ('Hip', 'Hip', (3, 2)),
    ('Knee', 'Knee', (4, 1)),
    ('Ankle', 'Ank', (5, 0)),
)
MEAN_EXCLUDED_JOINTS = (6, 7)  # pelvis and thorax.
TABLE_KEYS = tuple(g[0] for g in TABLE_GROUPS) + ('Mean', 'Mean@0.1')
SHORT_HEADERS = {g[0]: g[1] for g in TABLE_GROUPS}


@dataclasses.dataclass(frozen=True)
class MpiiGroundTruth:
  """The contents of a gt_valid.mat file, 0-based.

  Attributes:
    pos_gt: float64 [N, 16, 2] joint (x, y) in 0-based image pixels.
    jnt_visible: bool [N, 16] (1 - jnt_missing).
    headboxes: float64 [N, 2, 2] head box corners (corner, xy), 0-based.
    source: the file it came from (for error messages).
  """

  pos_gt: np.ndarray
  jnt_visible: np.ndarray
  headboxes: np.ndarray
  source: str = ''

  @property
  def num_people(self) -> int:
    return self.pos_gt.shape[0]

  def head_sizes(self) -> np.ndarray:
    """[N] HEAD_SIZE_FACTOR * head-box diagonal."""
    return HEAD_SIZE_FACTOR * np.linalg.norm(self.headboxes[:, 1] - self.headboxes[:, 0], axis=-1)


def _load_mat(path: str) -> dict:
  if not os.path.exists(path):
    raise FileNotFoundError(f'MATLAB file {path!r} does not exist')
  try:
    return scipy.io.loadmat(path)
  except Exception as e:  # scipy raises several types for corrupt or v7.3 files.
    raise ValueError(f'cannot read {path!r} as a MATLAB .mat file (v7.3/HDF5 files are not '
                     f'supported): {e}') from e


def _require(mat: dict, path: str, key: str, shape: tuple) -> np.ndarray:
  """mat[key] with the given shape (None entries match anything)."""
  if key not in mat:
    keys = sorted(k for k in mat if not k.startswith('__'))
    raise ValueError(f'{path!r} has no key {key!r} (a gt_valid.mat file needs pos_gt_src, '
                     f'jnt_missing, headboxes_src); its keys are {keys}')
  value = np.asarray(mat[key])
  if value.ndim != len(shape) or any(s is not None and s != v for s, v in zip(shape, value.shape)):
    want = ' x '.join('N' if s is None else str(s) for s in shape)
    raise ValueError(f'{path!r}: key {key!r} must be {want}; got shape {value.shape}')
  return value


def load_mpii_gt(path: str) -> MpiiGroundTruth:
  """Reads gt_valid.mat (pos_gt_src 16x2xN, jnt_missing 16xN, headboxes_src 2x2xN; 1-based)."""
  mat = _load_mat(path)
  pos = _require(mat, path, 'pos_gt_src', (NUM_JOINTS, 2, None)).astype(np.float64)
  missing = _require(mat, path, 'jnt_missing', (NUM_JOINTS, None))
  heads = _require(mat, path, 'headboxes_src', (2, 2, None)).astype(np.float64)
  n = pos.shape[2]
  if missing.shape[1] != n or heads.shape[2] != n:
    raise ValueError(f'{path!r}: person counts disagree: pos_gt_src has {n}, jnt_missing '
                     f'{missing.shape[1]}, headboxes_src {heads.shape[2]}')
  if 'dataset_joints' in mat:
    names = tuple(str(np.asarray(v).ravel()[0]) for v in np.asarray(mat['dataset_joints']).ravel())
    if names != MPII_MAT_JOINT_NAMES:
      raise ValueError(f'{path!r}: dataset_joints {names} is not the MPII order '
                       f'{MPII_MAT_JOINT_NAMES}')
  gt = MpiiGroundTruth(
      pos_gt=pos.transpose(2, 0, 1) - 1.0,
      jnt_visible=missing.T == 0,
      headboxes=heads.transpose(2, 0, 1) - 1.0,
      source=path,
  )
  bad = np.nonzero((gt.head_sizes() <= 0) & gt.jnt_visible.any(axis=1))[0]
  if bad.size:
    raise ValueError(f'{path!r}: headboxes_src has an empty head box for people {bad[:10]}')
  return gt


def check_predictions(preds, num_joints: int = NUM_JOINTS, num_people: int | None = None,
                      name: str = 'predictions') -> np.ndarray:
  """float64 [N, J, 2] or a ValueError naming what is wrong."""
  preds = np.asarray(preds, np.float64)
  if preds.ndim != 3 or preds.shape[1:] != (num_joints, 2):
    raise ValueError(f'{name} must be [people, {num_joints}, 2]; got shape {preds.shape}')
  if num_people is not None and preds.shape[0] != num_people:
    raise ValueError(f'{name} hold {preds.shape[0]} people but the ground truth has '
                     f'{num_people} (pass person_indices to score a subset)')
  bad = np.nonzero(~np.isfinite(preds).all(axis=(1, 2)))[0]
  if bad.size:
    raise ValueError(f'{name} contain NaN/inf coordinates for people {bad[:10]}')
  return preds


@dataclasses.dataclass(frozen=True)
class PCKhResult:
  """PCKh per joint and the paper's table.

  Attributes:
    per_joint: [16] PCKh (percent) at `threshold`; NaN where a joint is never visible.
    per_joint_low: [16] PCKh at `mean_at_0_1_threshold`.
    joint_counts: [16] visible counts.
    table: {'Head', 'Shoulder', 'Elbow', 'Wrist', 'Hip', 'Knee', 'Ankle', 'Mean', 'Mean@0.1'}
      (`report.format_table` prints it).
    threshold, mean_at_0_1_threshold: the normalised-distance thresholds used.
  """

  per_joint: np.ndarray
  per_joint_low: np.ndarray
  joint_counts: np.ndarray
  table: dict
  threshold: float
  mean_at_0_1_threshold: float


def compute_pckh(preds, gt: MpiiGroundTruth, *, threshold: float = 0.5,
                 mean_at_0_1_threshold: float = 0.1, person_indices=None) -> PCKhResult:
  """PCKh of 0-based predictions against the ground truth.

  Args:
    preds: [N, 16, 2] (x, y) in 0-based image pixels.
    gt: from `load_mpii_gt`.
    threshold: normalised distance for the main table (0.5).
    mean_at_0_1_threshold: threshold of the Mean@0.1 column; 0.1, or 0.11 for HRNet's figure.
    person_indices: optional [N] ground-truth columns the predictions belong to (a subset
      evaluation); without it N must equal the ground truth's count.
  """
  if person_indices is None:
    preds = check_predictions(preds, num_people=gt.num_people)
    pos_gt, visible, head_sizes = gt.pos_gt, gt.jnt_visible, gt.head_sizes()
  else:
    idx = np.asarray(person_indices).reshape(-1)
    if not np.issubdtype(idx.dtype, np.integer) or idx.size and (
        idx.min() < 0 or idx.max() >= gt.num_people):
      raise ValueError(f'person_indices must be integers in [0, {gt.num_people}) for '
                       f'{gt.source or "the ground truth"}; got {idx[:10]}...')
    preds = check_predictions(preds, num_people=idx.size)
    pos_gt, visible, head_sizes = gt.pos_gt[idx], gt.jnt_visible[idx], gt.head_sizes()[idx]

  err = np.linalg.norm(preds - pos_gt, axis=-1)  # [N, 16]
  with np.errstate(divide='ignore', invalid='ignore'):
    scaled = err / head_sizes[:, None]
  counts = visible.sum(axis=0)

  def correct_at(t):
    return ((scaled <= t) & visible).sum(axis=0)

  correct, correct_low = correct_at(threshold), correct_at(mean_at_0_1_threshold)
  with np.errstate(divide='ignore', invalid='ignore'):
    per_joint = 100.0 * correct / counts
    per_joint_low = 100.0 * correct_low / counts

  table = {name: float(np.mean(per_joint[list(joints)])) for name, _, joints in TABLE_GROUPS}
  in_mean = np.ones(NUM_JOINTS, bool)
  in_mean[list(MEAN_EXCLUDED_JOINTS)] = False
  total = counts[in_mean].sum()
  # HRNet's count-weighted mean == all correct over all visible among the 14 joints.
  table['Mean'] = float(100.0 * correct[in_mean].sum() / total) if total else float('nan')
  table['Mean@0.1'] = float(100.0 * correct_low[in_mean].sum() / total) if total else float('nan')
  return PCKhResult(per_joint=per_joint, per_joint_low=per_joint_low, joint_counts=counts,
                    table=table, threshold=float(threshold),
                    mean_at_0_1_threshold=float(mean_at_0_1_threshold))


def save_pred_mat(path: str, preds_0_based) -> None:
  """Writes HRNet's pred.mat: key 'preds', N x 16 x 2, MATLAB 1-based (for the official tool)."""
  preds = check_predictions(preds_0_based)
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  scipy.io.savemat(path, {'preds': preds + 1.0})


def load_pred_mat(path: str, key: str = 'preds') -> np.ndarray:
  """Reads 1-based predictions (N x 16 x 2[+score] or 16 x 2 x N) -> 0-based [N, 16, 2]."""
  mat = _load_mat(path)
  if key not in mat:
    keys = sorted(k for k in mat if not k.startswith('__'))
    raise ValueError(f'{path!r} has no key {key!r}; its keys are {keys}')
  preds = np.asarray(mat[key], np.float64)
  if preds.ndim == 3 and preds.shape[0] == NUM_JOINTS and preds.shape[1] == 2:
    preds = preds.transpose(2, 0, 1)  # MATLAB layout 16 x 2 x N.
  elif preds.ndim == 3 and preds.shape[1] == NUM_JOINTS and preds.shape[2] in (2, 3):
    preds = preds[..., :2]  # HRNet layout N x 16 x 2 (a third column would be scores).
  else:
    raise ValueError(f'{path!r}: key {key!r} must be N x 16 x 2 or 16 x 2 x N; got shape '
                     f'{preds.shape}')
  return check_predictions(preds - 1.0, name=f'{path!r} key {key!r}')


def group_rows(groups: list[dict[str, Any]], person_index: np.ndarray) -> dict[str, np.ndarray]:
  """{label: bool [N] rows} of the evaluation groups that hold some of `person_index`.

  A label says how many people the group has and whether they were trained on, e.g.
  'held-out generated figures (32, not trained on)'; the first label is the group that ranks
  the branches.

  Args:
    groups: the records' evaluation groups (metrics.Predictions.eval_groups).
    person_index: [N] gt_valid.mat columns of the evaluated people.
  """
  found = {}
  for group in groups:
    first, stop = group['person_index']
    rows = (person_index >= first) & (person_index < stop)
    if rows.any():
      seen = ('also in the training set: a smoke test' if group['in_training_set']
              else 'not trained on')
      found[f'{group["name"]} ({int(rows.sum())}, {seen})'] = rows
  return found


@metrics.register('pckh')
class PCKhMetric(metrics.Metric):
  """MPII PCKh of every branch and the ensemble against config.data.eval_annotations.

  Thresholds: config.eval.pckh_threshold, and config.eval.hrnet_mean_at_0_11 for Mean@0.1.
  """

  headline = 'Mean'

  def __init__(self, config: ml_collections.ConfigDict, meta: DatasetMeta):
    super().__init__(config, meta)
    self.gt = load_mpii_gt(config.data.eval_annotations)
    self.threshold = config.eval.pckh_threshold
    self.mean_at_0_1_threshold = (HRNET_MEAN_AT_0_1_THRESHOLD if config.eval.hrnet_mean_at_0_11
                                  else 0.1)

  def score(self, predictions: metrics.Predictions) -> metrics.Scores:
    """One table per branch; per group when the records name groups (the first one ranks)."""
    person_index = predictions.rows['person_index']
    scored = {label: self._tables(predictions.joints, person_index, rows)
              for label, rows in group_rows(predictions.eval_groups, person_index).items()}
    if not scored:
      everyone = np.ones(len(person_index), bool)
      return metrics.Scores(self._tables(predictions.joints, person_index, everyone))
    scored_on = next(iter(scored))
    tables = scored.pop(scored_on)
    return metrics.Scores(tables, scored_on=scored_on, subsets=scored)

  def _tables(self, joints: dict[str, np.ndarray], person_index: np.ndarray,
              rows: np.ndarray) -> dict[str, dict[str, float]]:
    """{name: PCKh table} of the people in `rows` (bool [N]); joints: {name: [N, 16, 2]}."""
    return {name: dict(compute_pckh(
        xy[rows], self.gt, threshold=self.threshold,
        mean_at_0_1_threshold=self.mean_at_0_1_threshold,
        person_indices=person_index[rows]).table) for name, xy in joints.items()}

  @classmethod
  def write_files(cls, result: EvalResult, out_dir: epath.Path) -> None:
    """pred.mat: the best branch's predictions, for the official MATLAB tool."""
    best = result.predictions[f'branch_{result.best_branch}']
    # The official MATLAB tool expects rows in gt_valid.mat column order.
    in_gt_order = np.asarray(best)[np.argsort(result.person_index)]
    # scipy writes .mat files locally; the copy also reaches gs:// workdirs.
    with tempfile.TemporaryDirectory() as tmp:
      local = os.path.join(tmp, 'pred.mat')
      save_pred_mat(local, in_gt_order)
      epath.Path(local).copy(out_dir / 'pred.mat', overwrite=True)
