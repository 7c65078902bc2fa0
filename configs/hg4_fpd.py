r"""FPD (two-stage): a plain 4-stack student distilled from a frozen 8-stack teacher (89.7 on MPII).

Stage 1 trains and exports the teacher; stage 2 trains the student against it:

  python -m okdhp_jax.main --config configs/hg8_baseline.py --workdir /tmp/hg8
  python -m okdhp_jax.main --config configs/hg8_baseline.py --workdir /tmp/hg8 --mode export
  python -m okdhp_jax.main --config configs/hg4_fpd.py --workdir /tmp/hg4_fpd \
      --config.fpd.teacher_checkpoint=/tmp/hg8/export

A PyTorch hourglass converted with `python -m okdhp_jax.tools.convert_torch` works as teacher too.
Student loss: alpha * MSE(student, GT) + (1 - alpha) * MSE(student, teacher), alpha 0.5.
"""

from configs import common
from configs import default


def get_config(arg=None):
  arg = default.parse_arg(arg, runlocal=False)
  config = default.set_method(common.baseline_hourglass(4), 'fpd')
  return default.runlocal(config) if arg.runlocal else config
