"""JAX's persistent compilation cache: a run pays for compiling a configuration once.

Compiled executables are stored under the user's cache folder (or config.compile_cache.dir)
keyed by the program, the compiler flags and the JAX version, so a restarted or repeated run of
the same configuration loads its train and eval steps instead of compiling them again (minutes
for a full-size hourglass on a CPU). config.compile_cache.enabled=False turns it off.
"""

from __future__ import annotations

import logging
import os

DEFAULT_SUBDIR = os.path.join('okdhp_jax', 'jax_compilation_cache')


def default_dir() -> str:
  """$JAX_COMPILATION_CACHE_DIR when set (JAX's own variable), else
  $XDG_CACHE_HOME/okdhp_jax/jax_compilation_cache, else ~/.cache/okdhp_jax/..."""
  if os.environ.get('JAX_COMPILATION_CACHE_DIR'):
    return os.environ['JAX_COMPILATION_CACHE_DIR']
  base = os.environ.get('XDG_CACHE_HOME') or os.path.join(os.path.expanduser('~'), '.cache')
  return os.path.join(base, DEFAULT_SUBDIR)


def enable(cache_config) -> str | None:
  """Turns the cache on as `cache_config` (config.compile_cache) says; returns its folder."""
  import jax  # pylint: disable=g-import-not-at-top
  if not cache_config.enabled:
    return None
  folder = cache_config.dir or default_dir()
  jax.config.update('jax_compilation_cache_dir', folder)
  # Every executable that took half a second or more: the train, eval and export steps, the
  # small networks' eval step included (0.8 s for the tests' tiny one, paid again by every run
  # at 1 s); the many tiny helper programs stay out.
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.5)
  logging.info('Compiled steps are cached in %s (to turn this off: '
               'config.compile_cache.enabled=False)', folder)
  return folder
