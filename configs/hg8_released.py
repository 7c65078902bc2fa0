r"""OKDHP-HG8 with the released code's layout: 6 shared stacks + 3 branches x 2 private stacks.

The paper's layout (4 shared stacks + 3 x 4) is `configs/hg8.py`; this one matches the networks that
official OKDHP-HG8 checkpoints hold (`python -m okdhp_jax.tools.convert_torch` imports them).

  python -m okdhp_jax.main --config configs/hg8_released.py --workdir /tmp/okdhp_hg8_released

Add `:runlocal` to the config path for a CPU-sized run on the bundled samples.
"""

from configs import common
from configs import default


def get_config(arg=None):
  arg = default.parse_arg(arg, runlocal=False)
  config = common.okdhp_hourglass_released(8)
  return default.runlocal(config) if arg.runlocal else config
