"""TensorFlow as this project uses it: on the host only, imported when first used.

Data modules use `tf` from here rather than importing `tensorflow`: the first attribute looked
up on it imports TensorFlow and hides every GPU and TPU from it, so it never takes accelerator
memory from JAX, whichever module touches it first; and tools that only parse their arguments
(`--help`) or never build a pipeline do not pay the seconds TensorFlow takes to import.
"""

from __future__ import annotations

import os
import sys
import tempfile
import types

_tensorflow: types.ModuleType | None = None


def _load() -> types.ModuleType:
  global _tensorflow
  if _tensorflow is None:
    tensorflow = _import_without_notices()
    for kind in ('GPU', 'TPU'):
      try:
        tensorflow.config.set_visible_devices([], kind)
      except (RuntimeError, ValueError):  # already initialised, or no such device type.
        pass
    _tensorflow = tensorflow
  return _tensorflow


# What TensorFlow's C++ side prints while it is imported that no user can act on: the oneDNN
# and CPU-instruction INFO notices, and absl's note that they went to stderr.
_IMPORT_NOTICES = ('I0000 ', 'WARNING: All log messages before absl::InitializeLog()',
                   'To enable the following instructions:')


def _import_without_notices() -> types.ModuleType:
  """Imports tensorflow with its import-time INFO notices held back; anything else it writes
  to stderr meanwhile is passed on.

  The notices are written by C++ straight to file descriptor 2 before any logging setup
  (TF_CPP_MIN_LOG_LEVEL does not reach them), so the descriptor is pointed at a temporary file
  for the import and restored after it.
  """
  sys.stderr.flush()
  saved = os.dup(2)
  with tempfile.TemporaryFile() as captured:
    os.dup2(captured.fileno(), 2)
    try:
      import tensorflow  # pylint: disable=g-import-not-at-top
    finally:
      os.dup2(saved, 2)
      os.close(saved)
      captured.seek(0)
      lines = captured.read().decode('utf-8', 'replace').splitlines()
      kept = [line for line in lines if not line.startswith(_IMPORT_NOTICES)]
      if kept:
        print('\n'.join(kept), file=sys.stderr)
  return tensorflow


def hide_accelerators() -> None:
  """Imports TensorFlow now, with no GPU or TPU visible to it."""
  _load()


class _LazyTensorFlow:
  """Stands for the `tensorflow` module; imports it on the first attribute looked up."""

  def __getattr__(self, name: str):
    return getattr(_load(), name)


tf = _LazyTensorFlow()

__all__ = ['tf', 'hide_accelerators']
