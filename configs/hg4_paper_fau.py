r"""OKDHP-HG4 balanced with the FAU as the paper describes it (multi-scale paths with 1x1 convs
and an average-pool path) instead of the released code's FAU.

  python -m okdhp_jax.main --config configs/hg4_paper_fau.py --workdir /tmp/okdhp_hg4_paper_fau

Add `:runlocal` to the config path for a CPU-sized run on the bundled samples.
"""

from configs import common
from configs import default


def get_config(arg=None):
  arg = default.parse_arg(arg, runlocal=False)
  config = common.okdhp_hourglass(4, fau='paper')
  return default.runlocal(config) if arg.runlocal else config
