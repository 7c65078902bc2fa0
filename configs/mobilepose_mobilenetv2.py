r"""MobilePose with a mobilenetv2 encoder and OKDHP: shared encoder, three DUC decoders, FAU (MPII).

  python -m okdhp_jax.main --config configs/mobilepose_mobilenetv2.py --workdir /tmp/okdhp_mobilepose_mobilenetv2

Add `:runlocal` to the config path for a CPU-sized run on the bundled samples.
"""

from configs import common
from configs import default


def get_config(arg=None):
  arg = default.parse_arg(arg, runlocal=False)
  config = common.mobilepose('mobilenetv2')
  return default.runlocal(config) if arg.runlocal else config
