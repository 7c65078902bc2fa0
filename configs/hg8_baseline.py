r"""Plain 8-stack hourglass trained alone (no branches, no distillation), MPII (90.2 PCKh@0.5).
Its export is the usual FPD teacher.

  python -m okdhp_jax.main --config configs/hg8_baseline.py --workdir /tmp/okdhp_hg8_baseline

Add `:runlocal` to the config path for a CPU-sized run on the bundled samples.
"""

from configs import common
from configs import default


def get_config(arg=None):
  arg = default.parse_arg(arg, runlocal=False)
  config = common.baseline_hourglass(8)
  return default.runlocal(config) if arg.runlocal else config
