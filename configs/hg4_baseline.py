r"""Plain 4-stack hourglass trained alone (no branches, no distillation), MPII (89.2 PCKh@0.5).

  python -m okdhp_jax.main --config configs/hg4_baseline.py --workdir /tmp/okdhp_hg4_baseline

Add `:runlocal` to the config path for a CPU-sized run on the bundled samples.
"""

from configs import common
from configs import default


def get_config(arg=None):
  arg = default.parse_arg(arg, runlocal=False)
  config = common.baseline_hourglass(4)
  return default.runlocal(config) if arg.runlocal else config
