r"""The README's first command: OKDHP learning on a CPU in minutes, scored on unseen figures.

  python -m okdhp_jax.main --config configs/quickstart.py --workdir /tmp/okdhp

A tiny OKDHP network (1 shared stack + 3 branches of 1 private stack, so each student is a
2-stack hourglass; 32 channels, 64x64 input, released FAU) trains on the 5 bundled real MPII
people plus 4096 generated figures (data_prep/synthetic.py, plain backgrounds), then is scored
with PCKh on 128 held-out figures, which rank the branches, and on the 5 real people, a smoke
test only since it also trained on them. It takes minutes on a laptop CPU;
`tests/test_learning.py` holds every branch to at least 60 % PCKh@0.5 on the held-out figures
(the README's "What to expect" has the measured table). 64x64 input rather than
configs/synthetic.py's 96x96 learns as well in half the time.

`configs/hg4.py:runlocal` is the paper's HG4 layout at toy size: a check that the full network
trains and exports, not that it learns.

The figures' left and right limbs differ in colour, so flips are off (a mirrored figure would
be labelled the wrong way round), and so are scale and rotation augmentation: the generator
already varies pose, size, lean and position, and the point is to learn within minutes.
`runlocal` stops after 1 epoch.
"""

from configs import default
from configs import synthetic


def get_config(arg=None):
  arg = default.parse_arg(arg, runlocal=False)
  # configs/synthetic.py's network, augmentation and optimiser...
  config = synthetic.get_config()
  # ...on the bundled real people + figures, the figures held out scored apart.
  config.data.bundled = 'mpii'
  config.data.records_dir = '/tmp/okdhp_quickstart_records'
  config.data.eval_annotations = '/tmp/okdhp_quickstart_records/gt_valid.mat'
  config.data.synthetic.num_train = 4096
  config.data.synthetic.num_valid = 128
  # 64x64 crops, 16x16 heatmaps, one hourglass level fewer than synthetic.py.
  config.data.input_size = (64, 64)
  config.data.heatmap_size = (16, 16)
  config.model.hourglass.depth = 2
  config.train.num_epochs = 2  # 513 steps each.
  config.train.checkpoint_every_steps = 1000
  # No decay: the students are still learning when the run stops, and a rate dropped for the
  # last quarter costs them PCKh.
  config.optim.lr_decay_epochs = ()

  if arg.runlocal:
    config.train.num_epochs = 1
  return config
