r"""OKDHP-HG2 with the released code's layout: 0 shared stacks + 3 branches x 2 private stacks.

The paper's layout (1 shared stack + 3 x 1) is `configs/hg2.py`; this one matches the networks that
official OKDHP-HG2 checkpoints hold (`python -m okdhp_jax.tools.convert_torch` imports them).

  python -m okdhp_jax.main --config configs/hg2_released.py --workdir /tmp/okdhp_hg2_released

Add `:runlocal` to the config path for a CPU-sized run on the bundled samples.
"""

from configs import common
from configs import default


def get_config(arg=None):
  arg = default.parse_arg(arg, runlocal=False)
  config = common.okdhp_hourglass_released(2)
  return default.runlocal(config) if arg.runlocal else config
