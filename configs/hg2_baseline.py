r"""Plain 2-stack hourglass trained alone (no branches, no distillation), MPII (88.6 PCKh@0.5).

  python -m okdhp_jax.main --config configs/hg2_baseline.py --workdir /tmp/okdhp_hg2_baseline

Add `:runlocal` to the config path for a CPU-sized run on the bundled samples.
"""

from configs import common
from configs import default


def get_config(arg=None):
  arg = default.parse_arg(arg, runlocal=False)
  config = common.baseline_hourglass(2)
  return default.runlocal(config) if arg.runlocal else config
