"""Pose networks: stacked hourglass (plain and OKDHP multi-branch), FAU, MobilePose.

  hourglass.py     the stacked hourglass (released layer layout): Stem, HourglassStack.
  multi_branch.py  OKDHP's network: shared stacks, private stacks per branch, FAU, ensemble.
  fau.py           the Feature Aggregation Unit (`released` and `paper`) and the ensemble sum.
  mobilepose.py    MobilePose: shared encoder, one DUC decoder per branch.
  outputs.py       PoseOutputs, the structured output every network returns.
  factory.py       config.model -> module, with checks that name the bad key.
  initializers.py  PyTorch-style initial variables, fast to compile.
  stats.py         parameter and MAC counts.
  torch_checkpoint.py  reads .pth files without running code (weights_only + numpy allow-list).
  torch_import.py  PyTorch weights (pytorch-pose `hg`, released OKDHP multi-branch) as variables.
"""

from okdhp_jax.models.factory import build_model, input_divisor, validate_model_config
from okdhp_jax.models.fau import ensemble_heatmaps, make_fau
from okdhp_jax.models.hourglass import Bottleneck, HourglassStack, StackedHourglass, Stem
from okdhp_jax.models.initializers import init_variables
from okdhp_jax.models.mobilepose import MobilePose
from okdhp_jax.models.multi_branch import MultiBranchHourglass
from okdhp_jax.models.outputs import PoseOutputs

__all__ = [
    'Bottleneck', 'HourglassStack', 'MobilePose', 'MultiBranchHourglass', 'PoseOutputs',
    'StackedHourglass', 'Stem', 'build_model', 'ensemble_heatmaps', 'init_variables',
    'input_divisor', 'make_fau', 'validate_model_config',
]
