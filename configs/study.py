r"""The study (issue 15): does OKDHP beat the plain network and FPD on a task it does not saturate?

Every variant of the comparison at one student size, selected by the config argument; the
study tool trains them all for several seeds and prints the paper-style table:

  python -m okdhp_jax.tools.study --workdir /tmp/okdhp_study

One variant by hand (the tool adds --config.seed, the records folder and FPD's teacher):

  python -m okdhp_jax.main --config configs/study.py:variant=plain --workdir /tmp/study/plain
  python -m okdhp_jax.main --config configs/study.py:variant=balanced --workdir /tmp/study/balanced
  python -m okdhp_jax.main --config configs/study.py:variant=unbalanced --workdir /tmp/study/unbalanced
  python -m okdhp_jax.main --config configs/study.py:variant=fpd_teacher --workdir /tmp/study/teacher
  python -m okdhp_jax.main --config configs/study.py:variant=fpd --workdir /tmp/study/fpd \
      --config.fpd.teacher_checkpoint=/tmp/study/teacher/export

Without a variant (`configs/study.py`) the config is `balanced`.

The student is a 2-stack hourglass (32 channels, depth 2, 64x64 input, 16x16 heatmaps) in
every variant, trained for the same number of updates of the same batch:
- plain: the student alone (no branches, no FAU, no distillation);
- balanced: OKDHP, the student's stacks half shared: 1 shared stack + 3 branches of 1
  (released FAU);
- unbalanced: OKDHP as PAPER.md defines it at this size: the target branch has N/2 = 1
  private stack, the auxiliary branches N = 2 and 3N/2 = 3 (2-, 3- and 4-stack networks);
- fpd_teacher: FPD's first stage, a plain 4-stack hourglass (twice the student, as the
  paper's 8-stack teacher of a 4-stack student);
- fpd: FPD's second stage, the plain student on 0.5 MSE(GT) + 0.5 MSE(teacher).
The student scored is branch 0 in every variant (the target branch of `unbalanced`), chosen
before training: picking the best branch on the held-out figures would select on the test set.

The task: generated figures made hard (data_prep/README.md, "The study's task"): three figures
per image, the labelled one centred by its box and two unlabelled distractors in the same
colours that may stand in front of it, up to two occluders, busier backgrounds, more lean and
a wider spread of sizes, 2048 training images; scored on 512 held-out figures. The difficulty
was fixed on the plain student alone, before any OKDHP or FPD run (data_prep/README.md says
how). Flips stay off (the figures' sides are told apart by colour).

`runlocal` (for tests): 256 training and 32 held-out figures, one epoch.
"""

import ml_collections

from configs import common
from configs import default

VARIANTS = ('plain', 'balanced', 'unbalanced', 'fpd_teacher', 'fpd')
STUDENT_STACKS = 2
TEACHER_STACKS = 4


def network(variant: str) -> ml_collections.ConfigDict:
  """The variant's network and objective on the default config."""
  if variant not in VARIANTS:
    raise ValueError(f'configs/study.py:variant={variant}: choose one of {VARIANTS}')
  if variant in ('plain', 'fpd'):
    config = common.baseline_hourglass(STUDENT_STACKS)
  elif variant == 'fpd_teacher':
    config = common.baseline_hourglass(TEACHER_STACKS)
  else:
    config = common.okdhp_hourglass(STUDENT_STACKS, unbalanced=variant == 'unbalanced')
  if variant == 'fpd':
    default.set_method(config, 'fpd')
    config.fpd.teacher_num_stacks = TEACHER_STACKS
    config.fpd.teacher_checkpoint = '/tmp/okdhp_study/fpd_teacher/export'
  config.export.branch = 0  # the student: the target branch, never chosen on the test figures.
  return config


def hard_figures(config: ml_collections.ConfigDict) -> None:
  """The study's task (data_prep/README.md, "The study's task"); fixed before the comparison."""
  config.data.bundled = 'synthetic'
  config.data.records_dir = '/tmp/okdhp_study_records'
  config.data.eval_annotations = '/tmp/okdhp_study_records/gt_valid.mat'
  config.data.num_train_examples = 0  # count the records.
  config.data.synthetic.update(
      num_train=2048, num_valid=512, image_size=128, clutter=True, num_figures=3,
      front_prob=0.5, occluders=2, occluder_prob=0.4, background_shapes=10, lean_std=25.0,
      height_range=(0.35, 0.95))


def get_config(arg=None):
  arg = default.parse_arg(arg, variant='balanced', runlocal=False)
  config = network(arg.variant)
  config.model.hourglass.features = 32
  config.model.hourglass.depth = 2  # 64x64 input -> 16x16 heatmaps -> 4x4 at the innermost level.

  hard_figures(config)
  config.data.input_size = (64, 64)
  config.data.heatmap_size = (16, 16)
  config.data.sigma = 1.0
  # The generator already varies size, lean and position; the crop follows the box.
  config.data.scale_factor = 0.0
  config.data.rotation_prob = 0.0
  config.data.flip = False
  config.data.shuffle_buffer = 2048

  config.train.batch_size = 8
  config.train.num_epochs = 8  # 256 steps each: 2048 updates of 8 images.
  config.train.eval_every_epochs = config.train.num_epochs  # scored once, at the end.
  config.train.log_every_steps = 128
  config.train.checkpoint_every_steps = 512
  config.train.num_images_to_draw = 8
  config.optim.learning_rate = 5e-3  # configs/synthetic.py's rate for this network.
  config.optim.lr_decay_epochs = ()
  config.loss.kd_ramp_epochs = 2.0  # the KD weight reaches 2.0 after a quarter of the run.
  config.eval.batch_size = 32
  config.eval.flip_test = False

  if arg.runlocal:
    config.data.records_dir = '/tmp/okdhp_study_runlocal_records'
    config.data.eval_annotations = '/tmp/okdhp_study_runlocal_records/gt_valid.mat'
    config.data.synthetic.update(num_train=256, num_valid=32)
    config.train.num_epochs = 1
    config.train.eval_every_epochs = 1
    config.train.log_every_steps = 8
    config.train.checkpoint_every_steps = 32
    config.loss.kd_ramp_epochs = 0.5
  return config
