"""XLA compiler options for the CPU backend: convolutions run on XLA's own kernels, not YNNPACK.

jaxlib 0.10's CPU compiler hands large convolutions, dots and reductions to the YNNPACK library
(`ynn_fusion` in the optimised HLO), whose convolutions are far slower than XLA's own (Eigen)
kernels and PyTorch's oneDNN, alone and in the whole HG4 train step (docs/performance.md).
Only convolutions leave YNNPACK: dots and reductions stay where XLA's defaults put them
(turning those off too gains nothing and changes float64 rounding between 1 and 8 devices).

The options go to each jitted step (`jax.jit(..., compiler_options=...)`) rather than into
XLA_FLAGS: a jaxlib that does not know an option fails one small probe compile, which turns
the options off with a log line, where an unknown XLA_FLAGS entry aborts the process. A user
who sets the option in XLA_FLAGS keeps their own value. Other backends get no options.
"""

from __future__ import annotations

import functools
import logging
import os
from typing import Any

# YNNPACK's fusion types: XLA's defaults without LIBRARY_FUSION_TYPE_INDIVIDUAL_CONVOLUTION.
CPU_OPTIONS = {'xla_cpu_experimental_ynn_fusion_type':
               'LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,LIBRARY_FUSION_TYPE_REDUCE'}


def compiler_options() -> dict[str, Any] | None:
  """What every jitted train/eval step passes as `compiler_options` (None: XLA's defaults)."""
  options = _checked_options()
  return None if options is None else dict(options)


@functools.lru_cache(maxsize=None)
def _checked_options() -> tuple[tuple[str, Any], ...] | None:
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  if jax.default_backend() != 'cpu':
    return None
  user_flags = os.environ.get('XLA_FLAGS', '')
  if any(name in user_flags for name in CPU_OPTIONS):
    return None
  try:
    jax.jit(jnp.negative, compiler_options=CPU_OPTIONS).lower(jnp.zeros(1)).compile()
  except Exception as error:  # pylint: disable=broad-except  (XLA's INVALID_ARGUMENT)
    logging.info('This jaxlib does not take the CPU compiler options %s (%s); using XLA\'s '
                 'defaults.', CPU_OPTIONS, ' '.join(str(error).split())[:200])
    return None
  return tuple(CPU_OPTIONS.items())
