"""Paper-style markdown tables of metrics, and the multi-branch report built on them.

OKDHP deploys one student branch (config.export.branch = -1 picks the best on validation); the
ensemble (FAU teacher) is shown for reference but never chosen, since it needs every branch.
"""

from __future__ import annotations

import math
import re

from okdhp_jax.evaluation import coco_eval, pckh

ENSEMBLE = 'ensemble'
_BRANCH_NAME = re.compile(r'^branch_(\d+)$')
# Metric columns in paper order when present (PCKh table, then COCO AP table).
_COLUMN_ORDER = pckh.TABLE_KEYS + coco_eval.METRIC_NAMES
_SHORT = {**pckh.SHORT_HEADERS, **coco_eval.SHORT_HEADERS}


def _row_order(names) -> list[str]:
  branches = sorted((n for n in names if _BRANCH_NAME.match(n)),
                    key=lambda n: int(_BRANCH_NAME.match(n).group(1)))
  others = sorted(n for n in names if n not in branches and n != ENSEMBLE)
  return branches + others + ([ENSEMBLE] if ENSEMBLE in names else [])


def _format(value: float | None, column: str) -> str:
  """PCKh columns are percentages (2 decimals), COCO metrics fractions (3, like HRNet)."""
  if value is None or math.isnan(value):
    return 'nan'
  return f'{value:.2f}' if column in pckh.TABLE_KEYS else f'{value:.3f}'


def format_table(rows: dict, columns) -> str:
  """Markdown table, one row per model; a missing value prints as 'nan'.

  Args:
    rows: {label: {metric: value}}; a lone None label leaves out the 'model' column.
    columns: metric keys in order, e.g. pckh.TABLE_KEYS or coco_eval.TABLE_METRICS; headers
      are the paper's short names (Shoulder -> Sho, AP_M -> AP(M)).
  """
  named = any(label is not None for label in rows)
  headers = (['model'] if named else []) + [_SHORT.get(c, c) for c in columns]
  lines = ['| ' + ' | '.join(headers) + ' |', '|' + '---|' * len(headers)]
  for label, values in rows.items():
    cells = ([str(label)] if named else []) + [_format(values.get(c), c) for c in columns]
    lines.append('| ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines)


def best_branch(results: dict, metric_key: str) -> str:
  """Name of the branch ('branch_<i>') with the highest `metric_key`; the first one on ties."""
  branches = [n for n in _row_order(results) if _BRANCH_NAME.match(n)]
  if not branches:
    raise ValueError(f'no branch results (keys like "branch_0") among {sorted(results)}')
  missing = [n for n in branches if metric_key not in results[n]]
  if missing:
    raise ValueError(f'metric {metric_key!r} is missing for {missing}; they have '
                     f'{sorted(results[missing[0]])}')
  scored = [(-math.inf if math.isnan(results[n][metric_key]) else results[n][metric_key], -i, n)
            for i, n in enumerate(branches)]
  return max(scored)[2]


def branch_report(results: dict, metric_key: str, *, scored_on: str = '',
                  subsets: dict | None = None) -> tuple[str, str]:
  """Markdown table of every branch and the ensemble, and the best branch's name.

  Args:
    results: {'branch_0': {metric: value}, ..., 'ensemble': {...}}, e.g. PCKh tables
      (`PCKhResult.table`) or COCO AP dicts.
    metric_key: the metric that picks the best branch ('Mean' for MPII, 'AP' for COCO).
    scored_on: what `results` were scored on, printed above the table when given.
    subsets: other parts of the evaluation set, {label: results like `results`}; each gets
      one line of `metric_key` per model below the table.

  Returns:
    (table_text, best_branch_name); the best row is marked with '*' and a line names it.
  """
  best = best_branch(results, metric_key)
  rows = _row_order(results)
  shared = set.intersection(*(set(results[n]) for n in rows))
  columns = [k for k in _COLUMN_ORDER if k in shared]
  columns += sorted(shared - set(columns))
  if metric_key not in columns:
    columns.append(metric_key)
  table = format_table({(f'{n} *' if n == best else n): results[n] for n in rows}, columns)
  best_value = _format(results[best][metric_key], metric_key)
  lines = ([f'Scored on {scored_on}:'] if scored_on else []) + [
      table, f'best branch by {metric_key}: {best} ({best_value})']
  for label, scores in (subsets or {}).items():
    values = ', '.join(f'{n} {_format(scores[n].get(metric_key), metric_key)}'
                       for n in _row_order(scores))
    lines.append(f'{metric_key} on {label}: {values}')
  return '\n'.join(lines), best
