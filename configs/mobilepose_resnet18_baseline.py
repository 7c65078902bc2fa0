r"""MobilePose with a resnet18 encoder trained alone: one DUC decoder, no distillation (MPII).

  python -m okdhp_jax.main --config configs/mobilepose_resnet18_baseline.py --workdir /tmp/okdhp_mobilepose_resnet18_baseline

Add `:runlocal` to the config path for a CPU-sized run on the bundled samples.
"""

from configs import common
from configs import default


def get_config(arg=None):
  arg = default.parse_arg(arg, runlocal=False)
  config = common.mobilepose('resnet18', okdhp=False)
  return default.runlocal(config) if arg.runlocal else config
