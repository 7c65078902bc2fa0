"""Running the suite in parallel: how many workers, and which modules start first.

pyproject.toml runs the suite with pytest-xdist (`-n auto --dist loadfile`): each module runs
whole in one worker, so its module-scoped fixtures (a trained run, a compiled step) are built
once. Most of the suite's time goes to compiling and starting subprocesses (docs/performance.md
has its durations).
"""

from __future__ import annotations

import os
import shutil
import tempfile

# The longest modules (docs/performance.md has their durations) start first, so no worker is
# left alone with one of them at the end.
LONGEST_FIRST = (
    'test_main.py',              # the program end to end, and runs that cannot start
    'test_learning.py',          # the README's quickstart, trained to its promise
    'test_error_exits.py',       # every error path as the program, a damaged shard three times
    'test_restart.py',           # runs stopped, resumed, diverging and out of disk
    'test_multihost.py',
    'test_training_step.py',
    'test_export_deploy.py',
    'test_study.py',             # the study tool end to end (one tiny run)
    'test_torch_import_okdhp.py',
    'test_bench_step.py',
    'test_training_loop.py',
    'test_export_quantize.py',
    'test_training_batch_norm_stats.py',
)

# XLA's CPU compiler without its expensive LLVM passes, for the tests' own processes (the runs
# they start as users do get the default): the tiny OKDHP and plain train steps give
# bit-identical losses with it. It pays where compiling dominates, as in test_training_step.py's
# 8-device programs (docs/performance.md); the tiny 1-device step compiles in the same time
# either way and runs slower, which tests that take a few steps do not feel. Set here, before
# any test module imports JAX.
FAST_COMPILE_FLAG = '--xla_llvm_disable_expensive_passes=true'
if FAST_COMPILE_FLAG not in os.environ.get('XLA_FLAGS', ''):
  os.environ['XLA_FLAGS'] = f'{os.environ.get("XLA_FLAGS", "")} {FAST_COMPILE_FLAG}'.strip()

# More workers than this gain little: every worker imports JAX and TensorFlow (1-2 GB each), and
# XLA's CPU runtime already spreads one step over the cores.
MAX_WORKERS = 4


def pytest_configure(config):
  """One JAX compilation cache for this run of the suite, empty at the start.

  Every worker and every `python -m okdhp_jax.main` the tests start inherits
  JAX_COMPILATION_CACHE_DIR (okdhp_jax/compile_cache.py honours it), so a program that several
  tests build (the tiny train step, its eval step) compiles once per run. A fresh folder keeps
  the suite's time honest (nothing carried over from earlier runs) and the user's own cache
  (~/.cache/okdhp_jax) untouched. A folder the caller set is used as it is.
  """
  if hasattr(config, 'workerinput') or os.environ.get('JAX_COMPILATION_CACHE_DIR'):
    return  # an xdist worker (it inherited the folder), or the caller chose one.
  folder = tempfile.mkdtemp(prefix='okdhp_tests_compile_cache_')
  os.environ['JAX_COMPILATION_CACHE_DIR'] = folder
  config.add_cleanup(lambda: shutil.rmtree(folder, ignore_errors=True))


def pytest_xdist_auto_num_workers(config):  # pylint: disable=unused-argument
  """`-n auto`: one worker per core, at most MAX_WORKERS."""
  return max(1, min(os.cpu_count() or 1, MAX_WORKERS))


def pytest_collection_modifyitems(session, config, items):  # pylint: disable=unused-argument
  """Stable sort: the modules of LONGEST_FIRST in that order, then the rest as collected."""
  rank = {name: index for index, name in enumerate(LONGEST_FIRST)}
  items.sort(key=lambda item: rank.get(os.path.basename(str(item.fspath)), len(rank)))
