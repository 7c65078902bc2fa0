r"""OKDHP-HG2, balanced (1 shared stack + 3 branches x 1 private stack), MPII (89.2 PCKh@0.5).

  python -m okdhp_jax.main --config configs/hg2.py --workdir /tmp/okdhp_hg2

Add `:runlocal` to the config path for a CPU-sized run on the bundled samples, and
`:fuse_branches=never` (or `always`) to choose how the branches compile
(config.model.hourglass.fuse_branches), `:pointwise_matmul=never` whether 1x1 convs stay
convolutions on a GPU (config.model.hourglass.pointwise_matmul), `:remat=never` that a GPU's
training step keeps its convolutions' inputs rather than recomputing them, for time over memory
(config.model.hourglass.remat), and
`:flat_state=never` that a GPU keeps the train state per array (config.train.flat_state).
"""

from configs import common
from configs import default


def get_config(arg=None):
  arg = default.parse_arg(arg, runlocal=False, **common.PROGRAM_ARGS)
  config = common.okdhp_hourglass(2, **common.program_choices(arg))
  return default.runlocal(config) if arg.runlocal else config
