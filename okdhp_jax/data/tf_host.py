"""TensorFlow as this project uses it: on the host only, imported when first used.

Data modules use `tf` from here rather than importing `tensorflow`: the first attribute looked
up on it imports TensorFlow and hides every GPU and TPU from it, so it never takes accelerator
memory from JAX, whichever module touches it first; and tools that only parse their arguments
(`--help`) or never build a pipeline do not pay the seconds TensorFlow takes to import.
"""

from __future__ import annotations

import types

_tensorflow: types.ModuleType | None = None


def _load() -> types.ModuleType:
  global _tensorflow
  if _tensorflow is None:
    import tensorflow  # pylint: disable=g-import-not-at-top
    for kind in ('GPU', 'TPU'):
      try:
        tensorflow.config.set_visible_devices([], kind)
      except (RuntimeError, ValueError):  # already initialised, or no such device type.
        pass
    _tensorflow = tensorflow
  return _tensorflow


def hide_accelerators() -> None:
  """Imports TensorFlow now, with no GPU or TPU visible to it."""
  _load()


class _LazyTensorFlow:
  """Stands for the `tensorflow` module; imports it on the first attribute looked up."""

  def __getattr__(self, name: str):
    return getattr(_load(), name)


tf = _LazyTensorFlow()

__all__ = ['tf', 'hide_accelerators']
