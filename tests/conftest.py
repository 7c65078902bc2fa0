"""Running the suite in parallel: how many workers, and which modules start first.

pyproject.toml runs the suite with pytest-xdist (`-n auto --dist loadfile`): each module runs
whole in one worker, so its module-scoped fixtures (a trained run, a compiled step) are built
once. On 2 cores, a serial run took 26 minutes, most of it compiling and starting subprocesses,
which use one core each.
"""

from __future__ import annotations

import os

# The longest modules start first, so no worker is left alone with one of them at the end.
# Seconds measured on 2 CPU cores, serial (`--durations=0`), before the suite ran in parallel.
LONGEST_FIRST = (
    'test_learning.py',          # 346: the README's quickstart, trained to its promise
    'test_interruptions.py',     # 267
    'test_main.py',              # 172
    'test_study.py',             # ~150: the study tool end to end (3 tiny runs)
    'test_multihost.py',         # 118
    'test_export_deploy.py',     # 92
    'test_training_step.py',     # 88
    'test_bench_step.py',        # 76
    'test_torch_import_okdhp.py',  # 70
)

# More workers than this gain little: every worker imports JAX and TensorFlow (1-2 GB each), and
# XLA's CPU runtime already spreads one step over the cores.
MAX_WORKERS = 4


def pytest_xdist_auto_num_workers(config):  # pylint: disable=unused-argument
  """`-n auto`: one worker per core, at most MAX_WORKERS."""
  return max(1, min(os.cpu_count() or 1, MAX_WORKERS))


def pytest_collection_modifyitems(session, config, items):  # pylint: disable=unused-argument
  """Stable sort: the modules of LONGEST_FIRST in that order, then the rest as collected."""
  rank = {name: index for index, name in enumerate(LONGEST_FIRST)}
  items.sort(key=lambda item: rank.get(os.path.basename(str(item.fspath)), len(rank)))
