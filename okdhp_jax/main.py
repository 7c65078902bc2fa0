r"""Trains, evaluates and exports OKDHP pose networks.

  python -m okdhp_jax.main --config configs/hg4.py --workdir DIR                # train
  python -m okdhp_jax.main --config configs/hg4.py --workdir DIR --mode eval    # score
  python -m okdhp_jax.main --config configs/hg4.py --workdir DIR --mode export  # the student

Override any config field with `--config.section.field=value`; the config is locked, so a
misspelt field is an error rather than silently ignored.
"""

from __future__ import annotations

import ast
import faulthandler
import logging as pylogging
import os
import re
import sys
import threading
import traceback
from typing import NoReturn

from absl import app, flags, logging
from ml_collections import config_flags

from okdhp_jax import compile_cache, console, paths
from okdhp_jax.training import guards

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file('config', None, 'Experiment config file.', lock_config=True)
flags.DEFINE_string('workdir', None, 'Folder for checkpoints, logs, samples and exports.')
flags.DEFINE_enum('mode', 'train', ['train', 'eval', 'export'], 'What to run.')
flags.DEFINE_string('export_dir', None, 'Where --mode export writes (default WORKDIR/export).')
flags.DEFINE_alias('export-dir', 'export_dir')  # the other tools spell flags with dashes.
flags.DEFINE_enum('distributed', 'auto', ['auto', 'on', 'off'],
                  'Call jax.distributed.initialize(): auto does when launched multi-host.')
flags.mark_flags_as_required(['config', 'workdir'])

# Config keys that have a new name: {old: new}.
RENAMED_KEYS = {'trainer': 'method'}
# How long a failed run waits for a checkpoint still being written (a bound: a save that
# cannot finish must not keep the run from ending).
FINISH_SAVES_S = 30
# How long a failed run's interpreter may take to end after its error line (the saves are
# finished by then: what is left is quick, or never ends).
EXIT_GRACE_S = 10


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


def parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing, with config overrides and files that fail reported in one line.

  A misspelt `--config.section.field` or a config file that does not load escape absl's own
  usage errors as raw exceptions (the second only when the config is first read); they are
  usage errors all the same: one line, exit status 2.
  """
  try:
    rest = FLAGS(argv)
    FLAGS.config.lock  # pylint: disable=pointless-statement  (raises a deferred loading error)
    return rest
  except flags.Error as error:
    message = str(error)
  except (KeyError, AttributeError) as error:  # an override naming no config field.
    text = str(error.args[0]) if error.args else str(error)
    while text[:1] in ('"', "'"):  # ml_collections nests repr()s of its message.
      try:
        text = ast.literal_eval(text)
      except (ValueError, SyntaxError):
        break
    field = text.split('\n')[0].strip('\'"')
    given = [a.split('=')[0] for a in argv[1:] if a.startswith('--config.')
             and re.search(rf'\.{re.escape(field)}(\.|$)', a.split('=')[0])]
    message = (f'{given[0] if given else "--config"}: the config has no field {field!r}. '
               + ' '.join(text.split('\n')[1:]))
    if field in RENAMED_KEYS:
      message = f'--config.{field}: the key is --config.{RENAMED_KEYS[field]} now'

  except Exception as error:  # pylint: disable=broad-except  (the config file failed to load)
    message = str(error)
  print(f'error: {" ".join(message.split())}', file=sys.stderr)
  sys.exit(2)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  workdir = str(paths.resolve(FLAGS.workdir))
  try:
    # Before JAX and TensorFlow load (seconds): a folder that cannot be written, or records
    # never converted, are said at once. Bundled records are built below; export reads none.
    console.check_writable(*_output_folder(workdir))
    if FLAGS.mode != 'export' and not FLAGS.config.data.bundled:
      from okdhp_jax.data import checks  # pylint: disable=g-import-not-at-top
      checks.check_converted(FLAGS.config.data)
  except (console.UnwritableFolderError, FileNotFoundError) as error:
    _fail(error, workdir, note='')
  import jax  # after flag parsing, so --help stays fast.
  logging.get_absl_handler().addFilter(console.console_filter)
  if FLAGS.distributed == 'on' or (FLAGS.distributed == 'auto' and _is_multi_host_launch()):
    jax.distributed.initialize(**_distributed_args())
  from okdhp_jax.data import tf_host
  tf_host.hide_accelerators()  # TensorFlow only feeds data: no GPU or TPU memory for it.
  config = FLAGS.config
  compile_cache.enable(config.compile_cache)
  background = console.BackgroundErrors(workdir).install(pylogging.getLogger())
  logging.info('JAX process %d/%d, local devices %s', jax.process_index(), jax.process_count(),
               jax.local_devices())
  try:
    if config.data.bundled:
      # The offline converters build the bundled records before the experiment reads them.
      from data_prep import bundled
      bundled.prepare_for_config(config.data)
    {'train': _train, 'eval': _evaluate, 'export': _export}[FLAGS.mode](config, workdir)
  except guards.PreemptedError as stop:
    _say(f'{stop}')  # not a fault: a checkpoint was saved.
    _exit(stop.exit_code, stop)
  except Exception as error:  # pylint: disable=broad-except
    _fail(error, workdir, note=background.note())


def _fail(error: Exception, workdir: str, *, note: str) -> NoReturn:
  """Ends the run on `error`: one line for the user (and `note`, where background errors
  went); the traceback goes to a file for whoever debugs it."""
  where = _save_traceback(workdir)
  # Errors whose message says what happened and what to do print as they are; others (a bug,
  # a library's error) keep their type name.
  explained = isinstance(error, (FileNotFoundError, ValueError)) or getattr(
      error, 'explained', False)
  kind = '' if explained else f'{type(error).__name__}: '
  _say(f'error: {kind}{error}\n(full traceback: {where}){note}')
  _exit(1, error, dump_to=where)


def _output_folder(workdir: str) -> tuple[str, str]:
  """(folder, what it is) that --mode writes to: the export folder for export, else the
  workdir."""
  if FLAGS.mode == 'export':
    if FLAGS.export_dir:
      return FLAGS.export_dir, '--export_dir'
    return os.path.join(workdir, 'export'), 'the export folder'
  return workdir, '--workdir'


def _say(text: str) -> None:
  """Prints `text` to stderr; a console that is gone must not turn the last line into more."""
  try:
    print(text, file=sys.stderr, flush=True)
  except (OSError, ValueError):
    pass


def _exit(code: int, error: BaseException, *, dump_to: str | None = None) -> NoReturn:
  """Ends a failed or stopped run with `code`, at most EXIT_GRACE_S after its last line.

  The error's traceback holds the run's frames, and in them the tf.data input pipeline:
  released now, the pipeline stops while Python still runs its workers. (Left to the
  interpreter's shutdown, it is destroyed after CPython has begun to end every thread that asks
  for the GIL: a worker inside the crop's numpy_function ends without finishing its call, and
  the pipeline's destructor waits for that call forever.)
  """
  try:
    dump = open(dump_to, 'a') if dump_to else sys.stderr  # pylint: disable=consider-using-with
  except OSError:
    dump = sys.stderr
  # Last resort: after a failed save, Orbax's threads wait minutes for signals that never come,
  # and the interpreter's shutdown joins them. faulthandler's watchdog needs no GIL: past
  # EXIT_GRACE_S it writes every thread's stack to `dump` and ends the process (status 1).
  # Armed before the frames are cleared: what they release may itself wait on those threads.
  faulthandler.dump_traceback_later(EXIT_GRACE_S, exit=True, file=dump)
  seen = set()
  while error is not None and id(error) not in seen:
    seen.add(id(error))
    traceback.clear_frames(error.__traceback__)
    error = error.__cause__ or error.__context__
  sys.exit(code)


def _save_traceback(workdir: str) -> str:
  """Writes the current exception's traceback to WORKDIR/error_traceback.txt (a temporary
  file when the workdir cannot be written) and returns the path."""
  import tempfile  # pylint: disable=g-import-not-at-top
  text = traceback.format_exc()
  try:
    path = paths.resolve(workdir) / 'error_traceback.txt'
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return str(path)
  except Exception:  # pylint: disable=broad-except
    pass
  try:
    with tempfile.NamedTemporaryFile('w', prefix='okdhp_error_', suffix='.txt',
                                     delete=False) as f:
      f.write(text)
      return f.name
  except Exception:  # pylint: disable=broad-except  (no disk to write it to)
    return 'not written: no writable folder'


def _train(config, workdir: str) -> None:
  """Trains (or resumes), exports the best branch, and says where everything went."""
  import jax
  from okdhp_jax import experiment as experiment_lib
  from okdhp_jax.data import records
  from okdhp_jax.evaluation import metrics, report
  experiment = experiment_lib.Experiment(config, workdir)
  try:
    progress = experiment_lib.train_and_evaluate(experiment)
  except Exception:
    _finish_saves(experiment)
    raise
  export_dir = os.path.join(workdir, 'export')
  exported = experiment_lib.export_trained(experiment, export_dir=export_dir, progress=progress)
  if jax.process_index() != 0:
    return
  lines = ['', 'Training finished.']
  if progress.history:
    last = progress.history[-1]
    table, _ = report.branch_report(last.metrics,
                                    metrics.headline_metric(experiment.meta),
                                    scored_on=last.scored_on, subsets=last.subsets)
    lines += [f'Final evaluation (step {last.step}):', table]
    description = records.read_dataset_info(config.data.records_dir).get(records.DESCRIPTION)
    lines += [description] if description else []
  lines += [
      f'  TensorBoard logs : {workdir}  (tensorboard --logdir {workdir})',
      f'  checkpoints      : {os.path.join(workdir, "checkpoints")}',
      f'  drawn samples    : {os.path.join(workdir, "samples")}',
      f'  eval results     : {os.path.join(workdir, "eval_results.json")}',
      f'  exported network : {export_dir}  (branch {exported["branch"]} of step '
      f'{exported["step"]}, the {exported["checkpoint"]} checkpoint)',
  ]
  print('\n'.join(lines), flush=True)


def _finish_saves(experiment) -> None:
  """Waits, at most FINISH_SAVES_S, for a checkpoint still being written when training
  failed: the error names the last good checkpoint, which must then be whole on disk."""

  def wait() -> None:
    try:
      experiment.wait_for_saves()
    except Exception:  # pylint: disable=broad-except  (the training error is the one to report)
      pass

  waiter = threading.Thread(target=wait, name='finish_saves', daemon=True)
  waiter.start()
  waiter.join(FINISH_SAVES_S)


def _evaluate(config, workdir: str) -> None:
  """Scores the newest checkpoint; writes metrics, MPII's pred.mat and drawings to WORKDIR/eval."""
  import jax
  from okdhp_jax.evaluation import evaluator
  from okdhp_jax.experiment import Experiment
  experiment = Experiment(config, workdir)
  experiment.restore_or_fail()
  result = experiment.evaluate(num_images_to_draw=config.train.num_images_to_draw)
  if jax.process_index() == 0:
    out_dir = evaluator.write_eval_files(result, experiment.meta, os.path.join(workdir, 'eval'))
    print(result.table, flush=True)
    print(f'Predictions and metrics written to {out_dir}', flush=True)


def _export(config, workdir: str) -> None:
  """Writes one branch of an evaluated checkpoint (config.export: the best one by default)."""
  from okdhp_jax.experiment import Experiment, export_trained
  export_trained(Experiment(config, workdir),
                 export_dir=FLAGS.export_dir or os.path.join(workdir, 'export'))


if __name__ == '__main__':
  app.run(main, flags_parser=parse_flags)
