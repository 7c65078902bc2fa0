r"""OKDHP-HG4, balanced (2 shared stacks + 3 branches x 2 private stacks, released FAU), MPII.

The paper's main setting (90.0 PCKh@0.5 on MPII val). Train:

  python -m okdhp_jax.main --config configs/hg4.py --workdir /tmp/okdhp_hg4

The full layout at toy size on the bundled data (a check that it trains, evaluates and exports):

  python -m okdhp_jax.main --config configs/hg4.py:runlocal --workdir /tmp/okdhp

`:fuse_branches=never` (or `always`) chooses how the branches compile
(config.model.hourglass.fuse_branches), `:pointwise_matmul=never` whether 1x1 convs stay
convolutions on a GPU (config.model.hourglass.pointwise_matmul), `:remat=never` that a GPU's
training step keeps its convolutions' inputs rather than recomputing them, for time over memory
(config.model.hourglass.remat),
`:flat_state=never` that a GPU keeps the train state per array (config.train.flat_state);
arguments combine: `:runlocal,fuse_branches=never`.
"""

from configs import common
from configs import default


def get_config(arg=None):
  arg = default.parse_arg(arg, runlocal=False, **common.PROGRAM_ARGS)
  config = common.okdhp_hourglass(4, **common.program_choices(arg))
  return default.runlocal(config) if arg.runlocal else config
