"""TensorFlow as this project uses it: on the host only, to feed tf.data input pipelines.

Importing this module hides every GPU and TPU from TensorFlow, so it never takes accelerator
memory from JAX. Data modules import `tf` from here rather than `tensorflow` directly, so the
hiding happens before TensorFlow can initialise a device, whichever module is imported first.
"""

from __future__ import annotations

import tensorflow as tf


def hide_accelerators() -> None:
  for kind in ('GPU', 'TPU'):
    try:
      tf.config.set_visible_devices([], kind)
    except (RuntimeError, ValueError):  # already initialised, or no such device type.
      pass


hide_accelerators()

__all__ = ['tf', 'hide_accelerators']
