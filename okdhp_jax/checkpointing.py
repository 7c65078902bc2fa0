"""Training checkpoints: an Orbax CheckpointManager holding the train state and loop progress.

Each checkpoint has three items:
  state         the TrainState pytree (step, params, batch_stats, opt_state) packed into one
                array per dtype (`checkpoint_packing` says why), written by process 0.
  state_layout  JSON: the name, shape, dtype and offset of every leaf in those arrays, so a
                checkpoint can be read without the model (`read_on_host`).
  progress      JSON: the loop's bookkeeping (best metric so far, best branch, evaluation history).
The manager keeps the latest `keep` checkpoints plus the one with the best validation metric.
"""

from __future__ import annotations

import logging
import math
import shutil
import time
from typing import Any

import jax

import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers

from okdhp_jax import checkpoint_packing
from okdhp_jax import paths

STATE = 'state'
LAYOUT = 'state_layout'
PROGRESS = 'progress'
# The metric a checkpoint is ranked by: the best branch's PCKh@0.5 (MPII) or AP (COCO).
BEST_METRIC = 'best_branch_metric'
# Where unreadable checkpoints are moved (beside the checkpoints folder, out of Orbax's sight).
UNREADABLE_DIR = 'checkpoints_unreadable'


class CheckpointSaveError(RuntimeError):
  """Writing a checkpoint failed (a full disk, a lost mount); older checkpoints are intact."""

  explained = True  # its message says what happened and what to do (main prints it alone).


class CheckpointMismatchError(ValueError):
  """A readable checkpoint that does not fit this run's state (the model or optimiser changed)."""

  explained = True


def _rank(metrics: dict[str, float]) -> float:
  """A checkpoint's rank for keep-best: its best branch's metric; -inf when not evaluated."""
  return float(metrics.get(BEST_METRIC, -math.inf))


def make_manager(directory: str, *, keep: int, asynchronous: bool = True) -> ocp.CheckpointManager:
  """CheckpointManager under `directory` keeping the latest `keep` and the best-scoring one.

  Every checkpoint is saved with its metrics (`save`), so a restarted run ranks the ones an
  earlier process wrote as that process did. A checkpoint without metrics on disk cannot be
  ranked and is kept rather than pruned.
  """
  preservation = checkpoint_managers.AnyPreservationPolicy([
      checkpoint_managers.LatestN(n=keep),
      checkpoint_managers.BestN(get_metric_fn=_rank, n=1, keep_checkpoints_without_metrics=True),
  ])
  options = ocp.CheckpointManagerOptions(
      preservation_policy=preservation,
      # Orbax writes a checkpoint's metrics to disk only when it has a best_fn.
      best_fn=_rank,
      enable_async_checkpointing=asynchronous,
      create=True,
  )
  return ocp.CheckpointManager(
      str(paths.resolve(directory)), options=options,
      item_names=(STATE, LAYOUT, PROGRESS)
  )


def save(manager: ocp.CheckpointManager, step: int, state: Any, progress: dict[str, Any],
         *, metric: float | None = None, force: bool = False) -> bool:
  """Saves `state` and `progress` at `step`; `metric` ranks it for best-checkpoint keeping.

  The write is asynchronous; a failure of this save or of the previous one (whose error Orbax
  reports now) raises CheckpointSaveError naming the step, the folder and what is still there.
  """
  # An unevaluated checkpoint has metrics too ({}: ranked last), so that none is unrankable.
  metrics = {} if metric is None else {BEST_METRIC: float(metric)}
  try:
    if not force and not manager.should_save(step):
      return False  # spares packing the state for a save the manager would skip
    saved = manager.save(
        step,
        args=ocp.args.Composite(**{
            STATE: ocp.args.StandardSave(checkpoint_packing.pack(state)),
            LAYOUT: ocp.args.JsonSave(checkpoint_packing.layout(_named_leaves(state))),
            PROGRESS: ocp.args.JsonSave(progress),
        }),
        metrics=metrics,
        force=force,
    )
  except Exception as error:  # pylint: disable=broad-except
    raise save_error(manager, step, error) from error
  if saved:
    logging.info('Saving checkpoint at step %d to %s', step, manager.directory)
  return saved


def _named_leaves(state: Any) -> Any:
  """The tree whose leaves a checkpoint's layout names. A FlatTrainState packs into the same
  arrays as its per-array TrainState (training/flat_state.py) and is named by it."""
  per_array_shapes = getattr(state, 'per_array_shapes', None)
  return state if per_array_shapes is None else per_array_shapes()


def wait_until_finished(manager: ocp.CheckpointManager, step: int) -> None:
  """Waits for the asynchronous save of `step`; CheckpointSaveError if it failed."""
  try:
    manager.wait_until_finished()
  except Exception as error:  # pylint: disable=broad-except
    raise save_error(manager, step, error) from error


# What a failed write usually comes down to; TensorStore buries it deep in a long message.
_OS_CAUSES = ('No space left on device', 'Disk quota exceeded', 'Read-only file system',
              'Permission denied', 'Input/output error')


def _short_cause(error: Exception) -> str:
  text = ' '.join(str(error).split())
  known = next((c for c in _OS_CAUSES if c in text), None)
  return known or f'{type(error).__name__}: {text[:200]}'


def save_error(manager: ocp.CheckpointManager, step: int, error: Exception) -> CheckpointSaveError:
  """The one-line error for a failed save: what failed, why, and what is still usable."""
  cause = _short_cause(error)
  try:
    manager.reload()
    kept = sorted(manager.all_steps())
  except Exception:  # pylint: disable=broad-except
    kept = []
  return CheckpointSaveError(
      f'saving a checkpoint to {manager.directory} failed by step {step} ({cause}). The '
      f'checkpoints already there are untouched (steps {kept}); free space or fix the folder, '
      'then rerun with the same --workdir to resume from the newest of them.')


def restore(manager: ocp.CheckpointManager, step: int, abstract_state: Any
            ) -> tuple[Any, dict[str, Any]]:
  """Restores checkpoint `step` into the shapes/shardings of `abstract_state`.

  CheckpointMismatchError when the checkpoint is whole but holds another state (names the
  first leaf that differs); other errors mean it cannot be read.
  """
  if step not in manager.all_steps():
    raise FileNotFoundError(f'{manager.directory} holds no checkpoint of step {step} (it has '
                            f'{sorted(manager.all_steps())})')
  packed, saved_layout, progress = _read_packed(manager, step)
  try:
    checkpoint_packing.check_layout(saved_layout, _named_leaves(abstract_state),
                                    f'checkpoint {manager.directory}/{step}')
  except ValueError as error:
    raise CheckpointMismatchError(str(error)) from None
  state = checkpoint_packing.unpack(packed, abstract_state)
  logging.info('Restored checkpoint of step %d from %s', step, manager.directory)
  return state, progress


def read_on_host(directory: str, step: int | None = None
                 ) -> tuple[int, dict[str, Any], dict[str, Any]]:
  """(step, state, progress) of checkpoint `step` (the newest when None) under `directory`,
  the state as nested dicts of numpy arrays ('params', 'batch_stats', 'opt_state', 'step'),
  read without building the model."""
  if not paths.resolve(directory).exists():  # before the manager, which would create it
    raise FileNotFoundError(f'{directory} does not exist')
  manager = make_manager(directory, keep=1, asynchronous=False)
  step = manager.latest_step() if step is None else step
  if step is None or step not in manager.all_steps():
    raise FileNotFoundError(f'{directory} holds no checkpoint'
                            + ('' if step is None else f' of step {step}'))
  packed, saved_layout, progress = _read_packed(manager, step)
  return step, checkpoint_packing.unpack_on_host(packed, saved_layout), progress


def _read_packed(manager: ocp.CheckpointManager, step: int):
  restored = manager.restore(step, args=ocp.args.Composite(**{
      STATE: ocp.args.StandardRestore(),  # numpy arrays, as saved
      LAYOUT: ocp.args.JsonRestore(),
      PROGRESS: ocp.args.JsonRestore(),
  }))
  return dict(restored[STATE]), dict(restored[LAYOUT]), dict(restored[PROGRESS])


def restore_latest(manager: ocp.CheckpointManager, abstract_state: Any
                   ) -> tuple[Any, dict[str, Any]] | None:
  """Restores the newest READABLE checkpoint into `abstract_state`'s shapes, or None if none.

  A checkpoint that fails to restore (a file truncated by a crash or a full disk) is moved to
  WORKDIR/checkpoints_unreadable/ with a warning naming it and the error, and the next older
  one is tried, so a run resumes from the newest good state. If checkpoints exist but none
  restores, that is an error, not a silent fresh start. A checkpoint of another state
  (CheckpointMismatchError) is left where it is and the error raised.
  """
  tried = []
  for step in sorted(manager.all_steps(), reverse=True):
    try:
      return restore(manager, step, abstract_state)
    except CheckpointMismatchError:
      raise  # whole but for another config: moving it aside would lose a good checkpoint
    except Exception as error:  # pylint: disable=broad-except  (Orbax/TensorStore/JSON errors)
      reason = ' '.join(f'{type(error).__name__}: {error}'.split())[:300]
      moved_to = _set_aside(manager, step)
      logging.warning('Checkpoint of step %d cannot be read (%s); moved it to %s and trying '
                      'the previous one.', step, reason, moved_to)
      tried.append(f'step {step} ({reason})')
  if tried:
    raise ValueError(f'no checkpoint in {manager.directory} can be read: {"; ".join(tried)}. '
                     'They were moved aside; delete the workdir to start afresh.')
  return None


def _set_aside(manager: ocp.CheckpointManager, step: int) -> str:
  """Moves checkpoint `step` out of the manager's folder (process 0) and reloads the manager."""
  directory = paths.resolve(str(manager.directory))
  target = directory.parent / UNREADABLE_DIR / f'{step}-{time.strftime("%Y%m%d-%H%M%S")}'
  if jax.process_index() == 0:
    source = next((p for p in directory.iterdir() if p.name == str(step)), None)
    if source is not None:
      target.parent.mkdir(parents=True, exist_ok=True)
      shutil.move(str(source), str(target))
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    multihost_utils.sync_global_devices(f'okdhp_set_aside_checkpoint_{step}')
  manager.reload()
  return str(target)
