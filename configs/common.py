"""Small builders that the experiment configs compose (no config copies another's body)."""

import ml_collections

from configs import default


# The config arguments that choose how an OKDHP hourglass compiles (config.model.hourglass's
# fields of these names, and config.train.flat_state) and their defaults, e.g.
# `configs/hg4.py:fuse_branches=never,remat=never`.
PROGRAM_ARGS = {'fuse_branches': 'gpu', 'pointwise_matmul': 'gpu', 'remat': 'gpu',
                'flat_state': 'gpu'}


def program_choices(arg: ml_collections.ConfigDict) -> dict:
  """The PROGRAM_ARGS of a parsed config argument, as `okdhp_hourglass`'s keywords."""
  return {key: arg[key] for key in PROGRAM_ARGS}


def okdhp_hourglass(num_stacks: int, *, unbalanced: bool = False, fau: str = 'released',
                    fuse_branches: str = 'gpu', pointwise_matmul: str = 'gpu',
                    remat: str = 'gpu', flat_state: str = 'gpu') -> ml_collections.ConfigDict:
  """OKDHP on an N-stack hourglass: N/2 shared stacks, three branches.

  Balanced: every branch has N/2 private stacks. Unbalanced: the target branch has N/2, the
  auxiliary branches N and 3N/2 (HG4: 2/4/6, i.e. 4-, 6- and 8-stack networks).
  `fuse_branches`, `pointwise_matmul`, `remat`: config.model.hourglass's, `flat_state`:
  config.train's (PROGRAM_ARGS, config arguments of the HG configs, so a GPU benchmark can time
  each program).
  """
  config = default.get_config()
  half = num_stacks // 2
  config.model.hourglass.num_shared_stacks = half
  config.model.hourglass.branch_stacks = (half, 2 * half, 3 * half) if unbalanced else (half,) * 3
  config.model.hourglass.fuse_branches = fuse_branches
  config.model.hourglass.pointwise_matmul = pointwise_matmul
  config.model.hourglass.remat = remat
  config.train.flat_state = flat_state
  config.model.fau = fau
  return config


def okdhp_hourglass_released(num_stacks: int) -> ml_collections.ConfigDict:
  """OKDHP with the released code's layout: N - 2 shared stacks, three branches of 2 stacks.

  The paper shares N/2; the released `hourglass_okd_share_less.py` keeps two private stacks
  per branch whatever N is, so HG2 shares none and HG8 shares 6. Use these configs to train
  the network an official checkpoint holds (tools/convert_torch.py imports one as it is).
  """
  config = okdhp_hourglass(num_stacks)
  config.model.hourglass.num_shared_stacks = num_stacks - 2
  config.model.hourglass.branch_stacks = (2, 2, 2)
  return config


def baseline_hourglass(num_stacks: int) -> ml_collections.ConfigDict:
  """The plain N-stack hourglass trained alone: one branch, no FAU, no distillation."""
  config = default.get_config()
  config.model.hourglass.num_shared_stacks = 0
  config.model.hourglass.branch_stacks = (num_stacks,)
  config.model.fau = 'none'
  config.loss.kd_weight = 0.0
  config.loss.ensemble_weight = 0.0
  return config


def mobilepose(backbone: str, *, okdhp: bool = True) -> ml_collections.ConfigDict:
  """MobilePose: shared encoder, three DUC decoders + FAU (okdhp) or one decoder (baseline)."""
  config = default.get_config()
  default.set_network(config, 'mobilepose')
  config.model.mobilepose.backbone = backbone
  config.model.mobilepose.num_branches = 3 if okdhp else 1
  if not okdhp:
    config.model.fau = 'none'
    config.loss.kd_weight = 0.0
    config.loss.ensemble_weight = 0.0
  return config


def coco(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Switches a config to COCO keypoints: 256x192 input, 64x48 maps, OKDHP's COCO augmentation."""
  config.data.dataset = 'coco'
  config.data.records_dir = 'data/coco_records'
  config.data.eval_annotations = 'data/coco_records/annotations_valid.json'
  config.data.num_train_examples = 149813
  config.data.input_size = (256, 192)
  config.data.heatmap_size = (64, 48)
  config.data.scale_factor = 0.3
  config.data.rotation_factor = 40.0
  config.data.half_body_prob = 0.3
  config.data.detections = 'data/coco_records/person_detection_results.json'
  config.train.num_epochs = 150
  config.train.batch_size = 32
  config.eval.flip_test = True
  return config

