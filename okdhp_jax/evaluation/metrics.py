"""Evaluation metrics as objects, one per protocol, chosen by the dataset meta's `metric`.

The evaluation pass (evaluator.py) knows no dataset and no protocol: it gathers every branch's
and the ensemble's joints in image pixels as `Predictions` and hands them to the metric that
`DatasetMeta.metric` names. A new protocol is one class in its own module,

  @register('my_metric')
  class MyMetric(Metric):
    headline = 'AP'
    def score(self, predictions):
      return Scores({name: {...} for name in predictions.joints})

and `metric='my_metric'` in the dataset's meta (okdhp_jax/data/meta.py). The module must be
imported; the built-in ones (pckh.py, coco_eval.py) are imported by evaluation/__init__.py.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, ClassVar

import ml_collections
import numpy as np
from etils import epath

from okdhp_jax.data.meta import DatasetMeta
from okdhp_jax.registry import Registry

if TYPE_CHECKING:
  from okdhp_jax.evaluation.evaluator import EvalResult


@dataclasses.dataclass(frozen=True)
class Predictions:
  """Every evaluated person, gathered from all processes, in evaluation order.

  Attributes:
    joints: {'branch_0': ..., 'ensemble': ...} float64 [N, J, 2] (x, y) in 0-based image
      pixels.
    scores: the same names, float32 [N, J] heatmap maxima.
    rows: the records' fields of each person: 'center' [N, 2] and 'scale' [N, 2] (the crop
      box, scale in units of 200 px), 'image_id' [N], 'person_index' [N], 'score' [N] (box
      score, 1 for ground-truth boxes).
    eval_groups: the evaluation groups the records name (records.EVAL_GROUPS): dicts with
      'name', 'person_index' [first, stop) and 'in_training_set'; [] when they name none.
  """

  joints: dict[str, np.ndarray]
  scores: dict[str, np.ndarray]
  rows: dict[str, np.ndarray]
  eval_groups: list[dict[str, Any]] = dataclasses.field(default_factory=list)


@dataclasses.dataclass(frozen=True)
class Scores:
  """What a metric makes of `Predictions`.

  Attributes:
    metrics: {'branch_0': {metric: value}, ..., 'ensemble': {...}}; the branches are ranked
      by the metric's `headline`.
    scored_on: what `metrics` were scored on when the predictions were split into groups
      (the first group), else ''.
    subsets: the other groups' scores, {label: {'branch_0': {...}, ..., 'ensemble': {...}}}.
  """

  metrics: dict[str, dict[str, float]]
  scored_on: str = ''
  subsets: dict[str, dict[str, dict[str, float]]] = dataclasses.field(default_factory=dict)


class Metric:
  """Base class of evaluation protocols; subclasses set `headline` and override `score`.

  Attributes:
    name: the `DatasetMeta.metric` value it is registered under (set by `register`).
    headline: the metric key that ranks branches ('Mean' PCKh@0.5, 'AP').
    config: the experiment config (ground-truth file, thresholds).
    meta: the dataset's meta.
  """

  name: ClassVar[str] = ''
  headline: ClassVar[str] = ''

  def __init__(self, config: ml_collections.ConfigDict, meta: DatasetMeta):
    self.config = config
    self.meta = meta

  def score(self, predictions: Predictions) -> Scores:
    """Every branch's and the ensemble's table."""
    raise NotImplementedError

  @classmethod
  def write_files(cls, result: EvalResult, out_dir: epath.Path) -> None:
    """Writes this protocol's own files of `result` into out_dir (none by default).

    A class method: `--mode eval` writes them from the result alone, without reading the
    ground truth again.
    """
    del result, out_dir


_METRICS = Registry('metric', Metric)
# Class decorator: makes a Metric subclass the one `DatasetMeta.metric == name` selects.
register = _METRICS.register
registered_names = _METRICS.names


def metric_class(meta: DatasetMeta) -> type[Metric]:
  """The Metric subclass that scores `meta`'s dataset."""
  metric = _METRICS.get(meta.metric)
  if metric is None:
    raise ValueError(f'dataset {meta.name!r} is scored by metric {meta.metric!r}, which is not '
                     f'registered; registered metrics are {list(registered_names())}')
  return metric


def create(config: ml_collections.ConfigDict, meta: DatasetMeta) -> Metric:
  """The metric of `meta`'s dataset, reading its ground truth as `config` says."""
  return metric_class(meta)(config, meta)


def headline_metric(meta: DatasetMeta) -> str:
  """The metric key that ranks branches on `meta`'s dataset ('Mean' for MPII, 'AP' for COCO)."""
  return metric_class(meta).headline
