"""Pose networks: stacked hourglass (plain and OKDHP multi-branch), FAU, MobilePose.

  registry.py      NetworkSpec and `register`: one spec per `config.model.name`, with its own
                   `config.model.<name>` section (build, checks, branch export, deployed config).
  factory.py       config.model -> module through the spec, with checks that name the bad key;
                   export of one branch (`export_student`, `deployed_model_config`).
  hourglass.py     the stacked hourglass's layers (released layer layout): Stem, HourglassStack.
  multi_branch.py  OKDHP's network: shared stacks, private stacks per branch, FAU, ensemble;
                   `HourglassSpec` ('hourglass'; one branch is the plain hourglass).
  fau.py           the Feature Aggregation Unit (`released` and `paper`) and the ensemble sum.
  mobilepose.py    MobilePose: shared encoder, one DUC decoder per branch; `MobilePoseSpec`.
  outputs.py       PoseOutputs, the structured output every network returns.
  initializers.py  PyTorch-style initial variables, fast to compile.
  stats.py         parameter and MAC counts.
  torch_checkpoint.py  reads .pth files without running code (weights_only + numpy allow-list).
  torch_import.py  PyTorch weights (pytorch-pose `hg`, released OKDHP multi-branch) as variables.
"""

# mobilepose and multi_branch register the built-in networks.
from okdhp_jax.models.factory import (build_model, deployed_model_config, export_student,
                                      input_divisor, num_branches, resolve_compute_dtype,
                                      validate_model_config)
from okdhp_jax.models.fau import ensemble_heatmaps, make_fau
from okdhp_jax.models.hourglass import Bottleneck, HourglassStack, Stem
from okdhp_jax.models.initializers import init_variables
from okdhp_jax.models.mobilepose import MobilePose
from okdhp_jax.models.multi_branch import MultiBranchHourglass, plain_hourglass_config
from okdhp_jax.models.outputs import PoseOutputs
from okdhp_jax.models.registry import (NetworkSpec, get_spec, network_config, network_names,
                                       register)

__all__ = [
    'Bottleneck', 'HourglassStack', 'MobilePose', 'MultiBranchHourglass', 'NetworkSpec',
    'PoseOutputs', 'Stem', 'build_model', 'deployed_model_config', 'ensemble_heatmaps',
    'export_student', 'get_spec', 'init_variables', 'input_divisor', 'make_fau',
    'network_config', 'network_names', 'num_branches', 'plain_hourglass_config', 'register',
    'resolve_compute_dtype', 'validate_model_config',
]
