r"""MobilePose with a mobilenetv2 encoder and OKDHP: shared encoder, three DUC decoders, FAU (MPII).

  python -m okdhp_jax.main --config configs/mobilepose_mobilenetv2.py --workdir /tmp/okdhp_mobilepose_mobilenetv2

Add `:runlocal` to the config path for a CPU-sized run on the bundled samples.
"""

from configs import common


def get_config(arg=None):
  return common.mobilepose('mobilenetv2', arg)
