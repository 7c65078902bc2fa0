"""Scores COCO keypoint results (COCO results format json) with pycocotools' COCOeval.

  python -m okdhp_jax.tools.eval_coco --results results.json --annotations person_keypoints.json

The results are scored as given (rescoring and OKS-NMS belong to whoever wrote them; okdhp_jax's
CocoKeypointEvaluator applies both before writing its results json).
"""

from __future__ import annotations

import argparse
import json
import sys

from okdhp_jax.data.meta import COCO
from okdhp_jax.evaluation import coco_eval, report


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog='python -m okdhp_jax.tools.eval_coco',
                                   description=__doc__.split('\n\n')[0])
  parser.add_argument('--results', required=True, help='COCO results json (list of '
                      'image_id, category_id, keypoints, score)')
  parser.add_argument('--annotations', required=True, help='person_keypoints_*.json')
  parser.add_argument('--json', action='store_true', help='print json instead of a table')
  args = parser.parse_args(argv)
  try:
    metrics = coco_eval.evaluate_results_file(args.results, args.annotations, COCO.oks_sigmas)
  except (FileNotFoundError, ValueError) as e:
    print(f'eval_coco: error: {e}', file=sys.stderr)
    return 1
  if args.json:
    print(json.dumps(metrics, indent=2))
  else:
    print(f'COCO keypoint AP of {args.results}')
    print(report.format_table({None: metrics}, coco_eval.TABLE_METRICS))
  return 0


if __name__ == '__main__':
  sys.exit(main())
