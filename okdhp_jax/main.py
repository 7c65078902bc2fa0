r"""Trains, evaluates and exports OKDHP pose networks.

  python -m okdhp_jax.main --config configs/hg4.py --workdir DIR                # train
  python -m okdhp_jax.main --config configs/hg4.py --workdir DIR --mode eval    # score
  python -m okdhp_jax.main --config configs/hg4.py --workdir DIR --mode export  # best branch

Override any config field with `--config.section.field=value`; the config is locked, so a
misspelt field is an error rather than silently ignored.
"""

from __future__ import annotations

import logging as pylogging
import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file('config', None, 'Experiment config file.', lock_config=True)
flags.DEFINE_string('workdir', None, 'Folder for checkpoints, logs, samples and exports.')
flags.DEFINE_enum('mode', 'train', ['train', 'eval', 'export'], 'What to run.')
flags.DEFINE_string('export_dir', None, 'Where --mode export writes (default WORKDIR/export).')
flags.DEFINE_enum('distributed', 'auto', ['auto', 'on', 'off'],
                  'Call jax.distributed.initialize(): auto does when launched multi-host.')
flags.mark_flags_as_required(['config', 'workdir'])


def _is_multi_host_launch() -> bool:
  """True under the launchers in launch/: SLURM multi-task, an explicit coordinator, a TPU pod."""
  env = os.environ
  if env.get('JAX_COORDINATOR_ADDRESS'):
    return True
  if int(env.get('SLURM_NTASKS', '1')) > 1:
    return True
  return ',' in env.get('TPU_WORKER_HOSTNAMES', '')


def _distributed_args() -> dict[str, int]:
  """Process count and id from JAX_NUM_PROCESSES / JAX_PROCESS_ID when they are set.

  jax finds them by itself on SLURM, Open MPI and Cloud TPU; these two variables make any other
  launch work too (several processes on one machine, a hand-made cluster).
  """
  args = {}
  for name, key in (('num_processes', 'JAX_NUM_PROCESSES'), ('process_id', 'JAX_PROCESS_ID')):
    value = os.environ.get(key, '')
    if value:
      if not value.isdigit():
        raise app.UsageError(f'{key}={value!r} must be a non-negative integer')
      args[name] = int(value)
  return args


def _hide_orbax_info(record: pylogging.LogRecord) -> bool:
  return record.levelno >= pylogging.WARNING or f'{os.sep}orbax{os.sep}' not in record.pathname


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  import jax  # after flag parsing, so --help stays fast.
  # Orbax logs every file it writes at INFO; keep the console for training progress.
  logging.get_absl_handler().addFilter(_hide_orbax_info)
  if FLAGS.distributed == 'on' or (FLAGS.distributed == 'auto' and _is_multi_host_launch()):
    jax.distributed.initialize(**_distributed_args())
  # TensorFlow only feeds data; it must not take GPU/TPU memory from JAX.
  import tensorflow as tf
  tf.config.set_visible_devices([], 'GPU')
  tf.config.set_visible_devices([], 'TPU')

  from okdhp_jax import run_modes
  config = FLAGS.config
  # Cloud paths (gs://...) stay as they are: every host of a slice must share one workdir.
  workdir = FLAGS.workdir if '://' in FLAGS.workdir else os.path.abspath(FLAGS.workdir)
  logging.info('JAX process %d/%d, local devices %s', jax.process_index(), jax.process_count(),
               jax.local_devices())
  try:
    if FLAGS.mode == 'train':
      run_modes.train(config, workdir)
    elif FLAGS.mode == 'eval':
      run_modes.evaluate(config, workdir)
    else:
      run_modes.export(config, workdir, FLAGS.export_dir or os.path.join(workdir, 'export'))
  except (FileNotFoundError, ValueError, run_modes.UserError) as error:
    # Configuration and data problems are the user's to fix: a message, not a traceback.
    logging.debug('Traceback of the error below:', exc_info=True)
    print(f'error: {error}\n(run with --verbosity=1 for the traceback)', file=sys.stderr)
    sys.exit(1)


if __name__ == '__main__':
  app.run(main)
