r"""OKDHP-HG4, unbalanced: 2 shared stacks, branches of 2/4/6 private stacks (4-, 6-, 8-stack
networks), MPII (target branch 90.2 PCKh@0.5). Export the target with --config.export.branch=0.

  python -m okdhp_jax.main --config configs/hg4_unbalanced.py --workdir /tmp/okdhp_hg4_unbalanced

Add `:runlocal` to the config path for a CPU-sized run on the bundled samples.
"""

from configs import common


def get_config(arg=None):
  return common.okdhp_hourglass(4, arg, unbalanced=True)
