r"""A tiny OKDHP network learning synthetic figures on a CPU: proof that training works.

1 shared stack + 3 branches of 1 private stack (a 2-stack hourglass each), 32 channels, 96x96
input, released FAU, trained on 4096 generated figures (data_prep/synthetic.py, plain
backgrounds) for 2048 steps of batch 8, and scored with PCKh on 128 held-out figures. On two
CPU cores it takes about 4-7 minutes and ends above 90 % PCKh@0.5 for the ensemble and every
branch, in float32 and in bfloat16 (`python -m okdhp_jax.tools.bench_precision` trains both and
checks). Run:

  python -m okdhp_jax.main --config configs/synthetic.py --workdir /tmp/okdhp_synthetic

`runlocal` stops after 1 epoch (a one-minute smoke run, far from converged).

The figures' left and right limbs differ in colour, so flips are off (a mirrored figure would
be labelled the wrong way round), and so are scale and rotation augmentation: the generator
already varies pose, size, lean and position, and the point is to learn within minutes.
"""

from configs import default


def get_config(arg=None):
  arg = default.parse_arg(arg, runlocal=False)
  config = default.get_config()
  config.model.hourglass.num_shared_stacks = 1
  config.model.hourglass.branch_stacks = (1, 1, 1)
  config.model.hourglass.features = 32
  config.model.hourglass.depth = 3  # 96x96 input -> 24x24 heatmaps -> 3x3 at the innermost level.

  config.data.bundled = 'synthetic'
  config.data.records_dir = '/tmp/okdhp_synthetic_records'
  config.data.eval_annotations = '/tmp/okdhp_synthetic_records/gt_valid.mat'
  config.data.num_train_examples = 0  # count the records.
  config.data.synthetic.num_train = 4096
  config.data.synthetic.num_valid = 128
  config.data.input_size = (96, 96)
  config.data.heatmap_size = (24, 24)
  config.data.sigma = 1.0
  config.data.scale_factor = 0.0
  config.data.rotation_prob = 0.0
  config.data.flip = False
  config.data.shuffle_buffer = 4096

  config.train.batch_size = 8
  config.train.num_epochs = 4  # 512 steps each.
  config.train.eval_every_epochs = 1
  config.train.log_every_steps = 64
  config.optim.learning_rate = 5e-3
  config.optim.lr_decay_epochs = (3,)
  config.loss.kd_ramp_epochs = 0.5
  config.eval.batch_size = 32
  config.eval.flip_test = False

  if arg.runlocal:
    config.train.num_epochs = 1
  return config
