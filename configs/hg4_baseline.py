r"""Plain 4-stack hourglass trained alone (no branches, no distillation), MPII (89.2 PCKh@0.5).

  python -m okdhp_jax.main --config configs/hg4_baseline.py --workdir /tmp/okdhp_hg4_baseline

Add `:runlocal` to the config path for a CPU-sized run on the bundled samples.
"""

from configs import common


def get_config(arg=None):
  return common.baseline_hourglass(4, arg)
