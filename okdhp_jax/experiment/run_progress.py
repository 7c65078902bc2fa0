"""What a run has learnt about itself so far: losses, evaluations and the best checkpoint.

`RunProgress` travels with every checkpoint (as JSON, `to_json` / `from_json`), so a resumed
run knows its best step, and `eval_results.json` is the same JSON at the end of training.
"""

from __future__ import annotations

import dataclasses
from typing import Any


@dataclasses.dataclass
class Evaluation:
  """One evaluation pass, as the loop records it.

  Attributes:
    step: the train step evaluated.
    metrics: {'branch_0': {metric: value}, ..., 'ensemble': {...}}.
    scored_on: the evaluation group `metrics` were scored on ('' when the records name none).
    subsets: the other groups' scores, {label: {'branch_0': {...}, ...}}.
    fau_weights: [branches][joints] mean FAU weight, or None without an FAU.
  """

  step: int
  metrics: dict[str, dict[str, float]]
  scored_on: str = ''
  subsets: dict[str, dict[str, dict[str, float]]] = dataclasses.field(default_factory=dict)
  fau_weights: list[list[float]] | None = None


@dataclasses.dataclass
class RunProgress:
  """The loop's bookkeeping.

  Attributes:
    best_metric: the highest headline metric of any branch so far, or None before evaluating.
    best_branch: the branch that scored it.
    best_step: the step whose checkpoint scored it.
    history: every evaluation, oldest first.
    train_loss: [[step, loss], ...] at every log step.
  """

  best_metric: float | None = None
  best_branch: int | None = None
  best_step: int | None = None
  history: list[Evaluation] = dataclasses.field(default_factory=list)
  train_loss: list[list[float]] = dataclasses.field(default_factory=list)

  def record(self, evaluation: Evaluation, *, best_metric: float, best_branch: int) -> None:
    """Appends an evaluation; it becomes the best one when it beats the best so far."""
    self.history.append(evaluation)
    if self.best_metric is None or best_metric > self.best_metric:
      self.best_metric, self.best_branch = best_metric, best_branch
      self.best_step = evaluation.step

  def evaluation_at(self, step: int) -> Evaluation | None:
    return next((e for e in self.history if e.step == step), None)

  def to_json(self) -> dict[str, Any]:
    return dataclasses.asdict(self)

  @classmethod
  def from_json(cls, data: dict[str, Any]) -> RunProgress:
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - fields)
    if unknown:
      raise ValueError(f'a checkpoint\'s progress has unknown fields {unknown}; it was written '
                       'by another version of okdhp_jax')
    data = dict(data)
    data['history'] = [Evaluation(**e) for e in data.get('history', [])]
    return cls(**data)
