r"""MobilePose with a shufflenetv2 encoder trained alone: one DUC decoder, no distillation (MPII).

  python -m okdhp_jax.main --config configs/mobilepose_shufflenetv2_baseline.py --workdir /tmp/okdhp_mobilepose_shufflenetv2_baseline

Add `:runlocal` to the config path for a CPU-sized run on the bundled samples.
"""

from configs import common


def get_config(arg=None):
  return common.mobilepose('shufflenetv2', arg, okdhp=False)
