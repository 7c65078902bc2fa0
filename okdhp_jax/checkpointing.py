"""Training checkpoints: an Orbax CheckpointManager holding the train state and loop progress.

Each checkpoint has two items:
  state     the TrainState pytree (step, params, batch_stats, opt_state), saved collectively by
            every process (sharded arrays are written by the processes that own them).
  progress  JSON: the loop's bookkeeping (best metric so far, best branch, evaluation history).
The manager keeps the latest `keep` checkpoints plus the one with the best validation metric.
"""

from __future__ import annotations

import logging
from typing import Any

import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers

from okdhp_jax import paths

STATE = 'state'
PROGRESS = 'progress'
# The metric a checkpoint is ranked by: the best branch's PCKh@0.5 (MPII) or AP (COCO).
BEST_METRIC = 'best_branch_metric'


def make_manager(directory: str, *, keep: int, asynchronous: bool = True) -> ocp.CheckpointManager:
  """CheckpointManager under `directory` keeping the latest `keep` and the best-scoring one."""
  preservation = checkpoint_managers.AnyPreservationPolicy([
      checkpoint_managers.LatestN(n=keep),
      checkpoint_managers.BestN(
          get_metric_fn=lambda metrics: metrics[BEST_METRIC],
          n=1,
          keep_checkpoints_without_metrics=False,
      ),
  ])
  options = ocp.CheckpointManagerOptions(
      preservation_policy=preservation,
      enable_async_checkpointing=asynchronous,
      create=True,
  )
  return ocp.CheckpointManager(
      str(paths.resolve(directory)), options=options,
      item_names=(STATE, PROGRESS)
  )


def save(manager: ocp.CheckpointManager, step: int, state: Any, progress: dict[str, Any],
         *, metric: float | None = None, force: bool = False) -> bool:
  """Saves `state` and `progress` at `step`; `metric` ranks it for best-checkpoint keeping."""
  metrics = None if metric is None else {BEST_METRIC: float(metric)}
  saved = manager.save(
      step,
      args=ocp.args.Composite(**{
          STATE: ocp.args.StandardSave(state),
          PROGRESS: ocp.args.JsonSave(progress),
      }),
      metrics=metrics,
      force=force,
  )
  if saved:
    logging.info('Saving checkpoint at step %d to %s', step, manager.directory)
  return saved


def restore(manager: ocp.CheckpointManager, step: int, abstract_state: Any
            ) -> tuple[Any, dict[str, Any]]:
  """Restores checkpoint `step` into the shapes/shardings of `abstract_state`."""
  if step not in manager.all_steps():
    raise FileNotFoundError(f'{manager.directory} holds no checkpoint of step {step} (it has '
                            f'{sorted(manager.all_steps())})')
  restored = manager.restore(
      step,
      args=ocp.args.Composite(**{
          STATE: ocp.args.StandardRestore(abstract_state),
          PROGRESS: ocp.args.JsonRestore(),
      }),
  )
  logging.info('Restored checkpoint of step %d from %s', step, manager.directory)
  return restored[STATE], dict(restored[PROGRESS])


def restore_latest(manager: ocp.CheckpointManager, abstract_state: Any
                   ) -> tuple[Any, dict[str, Any]] | None:
  """Restores the newest checkpoint into the shapes/shardings of `abstract_state`, or None."""
  step = manager.latest_step()
  return None if step is None else restore(manager, step, abstract_state)
