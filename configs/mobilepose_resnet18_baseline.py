r"""MobilePose with a resnet18 encoder trained alone: one DUC decoder, no distillation (MPII).

  python -m okdhp_jax.main --config configs/mobilepose_resnet18_baseline.py --workdir /tmp/okdhp_mobilepose_resnet18_baseline

Add `:runlocal` to the config path for a CPU-sized run on the bundled samples.
"""

from configs import common


def get_config(arg=None):
  return common.mobilepose('resnet18', arg, okdhp=False)
