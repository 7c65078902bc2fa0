r"""OKDHP-HG4 balanced on COCO keypoints: 256x192 input, 64x48 heatmaps (74.8 AP on val2017).

  python -m okdhp_jax.main --config configs/coco_hg4.py --workdir /tmp/okdhp_coco_hg4

Records come from `python -m data_prep.coco` (see data_prep/README.md); test-time boxes come from
`config.data.detections` (the AP 56.4 person detector's json) or GT boxes when it is ''.
"""

from configs import common
from configs import default


def get_config(arg=None):
  arg = default.parse_arg(arg, runlocal=False)
  config = common.coco(common.okdhp_hourglass(4))
  return default.runlocal(config) if arg.runlocal else config
