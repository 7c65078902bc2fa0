r"""OKDHP-HG4, unbalanced: 2 shared stacks, branches of 2/4/6 private stacks (4-, 6-, 8-stack
networks), MPII (target branch 90.2 PCKh@0.5). Export the target with --config.export.branch=0.

  python -m okdhp_jax.main --config configs/hg4_unbalanced.py --workdir /tmp/okdhp_hg4_unbalanced

Add `:runlocal` to the config path for a CPU-sized run on the bundled samples.
"""

from configs import common
from configs import default


def get_config(arg=None):
  arg = default.parse_arg(arg, runlocal=False)
  config = common.okdhp_hourglass(4, unbalanced=True)
  return default.runlocal(config) if arg.runlocal else config
