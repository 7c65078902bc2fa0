"""Scores MPII predictions saved in HRNet's pred.mat layout with PCKh.

  python -m okdhp_jax.tools.eval_mpii --predictions pred.mat --gt gt_valid.mat [--json]

`preds` may be N x 16 x 2 (HRNet) or 16 x 2 x N (MATLAB), MATLAB 1-based like gt_valid.mat.
Mean@0.1 is at a true 0.10; `--hrnet-mean-at-0-11` reports HRNet's figure (taken at 0.11).
"""

from __future__ import annotations

import argparse
import json
import math
import sys

from okdhp_jax.data.meta import MPII
from okdhp_jax.evaluation import pckh, report


def _finite_or_none(value: float):
  return None if math.isnan(value) else float(value)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog='python -m okdhp_jax.tools.eval_mpii',
                                   description=__doc__.split('\n\n')[0])
  parser.add_argument('--predictions', required=True, help='pred.mat with 1-based predictions')
  parser.add_argument('--gt', required=True, help='gt_valid.mat (pos_gt_src, jnt_missing, '
                      'headboxes_src)')
  parser.add_argument('--key', default='preds', help='variable holding the predictions')
  parser.add_argument('--threshold', type=float, default=0.5, help='PCKh threshold (0.5)')
  parser.add_argument('--hrnet-mean-at-0-11', action='store_true',
                      help="report HRNet's Mean@0.1, which is taken at 0.11")
  parser.add_argument('--json', action='store_true', help='print json instead of a table')
  args = parser.parse_args(argv)

  low = pckh.HRNET_MEAN_AT_0_1_THRESHOLD if args.hrnet_mean_at_0_11 else 0.1
  try:
    gt = pckh.load_mpii_gt(args.gt)
    preds = pckh.load_pred_mat(args.predictions, key=args.key)
    if preds.shape[0] != gt.num_people:
      raise ValueError(f'{args.predictions!r} holds {preds.shape[0]} people but {args.gt!r} '
                       f'has {gt.num_people}')
    result = pckh.compute_pckh(preds, gt, threshold=args.threshold, mean_at_0_1_threshold=low)
  except (FileNotFoundError, ValueError) as e:
    print(f'eval_mpii: error: {e}', file=sys.stderr)
    return 1

  if args.json:
    print(json.dumps({
        'predictions': args.predictions,
        'gt': args.gt,
        'threshold': result.threshold,
        'mean_at_0_1_threshold': result.mean_at_0_1_threshold,
        'table': {k: _finite_or_none(v) for k, v in result.table.items()},
        'per_joint': {name: _finite_or_none(v)
                      for name, v in zip(MPII.joint_names, result.per_joint)},
    }, indent=2))
  else:
    print(f'PCKh@{result.threshold:g} of {args.predictions} ({gt.num_people} people; '
          f'Mean@0.1 at {result.mean_at_0_1_threshold:g})')
    print(report.format_table({None: result.table}, pckh.TABLE_KEYS))
  return 0


if __name__ == '__main__':
  sys.exit(main())
