r"""OKDHP-HG2, balanced (1 shared stack + 3 branches x 1 private stack), MPII (89.2 PCKh@0.5).

  python -m okdhp_jax.main --config configs/hg2.py --workdir /tmp/okdhp_hg2

Add `:runlocal` to the config path for a CPU-sized run on the bundled samples.
"""

from configs import common


def get_config(arg=None):
  return common.okdhp_hourglass(2, arg)
