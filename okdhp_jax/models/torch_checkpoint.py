"""Reads PyTorch checkpoints without running code from them.

Every read is `torch.load(weights_only=True)`: PyTorch's restricted unpickler, which rebuilds
tensors and plain containers and refuses any other global. Training checkpoints of the released
OKDHP code, HRNet and pytorch-pose also hold numpy scalars (HRNet's `perf` is a numpy float64),
so exactly these numpy globals are allowed on top, for the duration of one load:

  numpy scalar reconstruction (`numpy.core.multiarray.scalar`, and numpy 2's
  `numpy._core.multiarray.scalar`), `numpy.dtype`, and plain arrays
  (`multiarray._reconstruct`, `numpy.ndarray`)

None of them runs code: they rebuild a number or an array from bytes, and an object array's
elements still pass through the restricted unpickler. A checkpoint that needs anything else
(a pickled class, a function) is refused with the globals named and the way out stated.
"""

from __future__ import annotations

import contextlib
from typing import Any, Mapping

import numpy as np

# `numpy.core` is numpy 1's name for the module numpy 2 calls `numpy._core`: a checkpoint names
# whichever numpy wrote it, so both spellings are allowed (torch matches globals by name).
_NUMPY_MODULES = ('numpy.core.multiarray', 'numpy._core.multiarray')


def numpy_allow_list() -> list[Any]:
  """The numpy globals a checkpoint may name, in `torch.serialization.safe_globals` form."""
  multiarray = np._core.multiarray if hasattr(np, '_core') else np.core.multiarray  # pylint: disable=protected-access
  allowed: list[Any] = [np.dtype, np.ndarray]
  for module in _NUMPY_MODULES:
    allowed.append((multiarray.scalar, f'{module}.scalar'))
    allowed.append((multiarray._reconstruct, f'{module}._reconstruct'))  # pylint: disable=protected-access
  # numpy >= 1.25 pickles a dtype with its class (numpy.dtypes.Float64DType, ...).
  dtypes = getattr(np, 'dtypes', None)
  if dtypes is not None:
    allowed.extend(getattr(dtypes, name) for name in dir(dtypes) if name.endswith('DType'))
  return allowed


def _torch():
  try:
    import torch  # pylint: disable=g-import-not-at-top  (optional dependency)
  except ModuleNotFoundError:
    raise ValueError('reading PyTorch checkpoints needs PyTorch: pip install "okdhp_jax[torch]" '
                     '(or pip install torch; the CPU build is enough)') from None
  return torch


def load_checkpoint(path: str) -> Any:
  """The unpickled contents of a .pth / .pth.tar file (tensors, containers, numpy scalars).

  Raises:
    FileNotFoundError: no such file.
    ValueError: PyTorch is missing, the file is not a PyTorch checkpoint, or it needs globals
      outside the allow-list (named in the message).
  """
  torch = _torch()
  try:
    with _allowed(torch):
      return torch.load(path, map_location='cpu', weights_only=True)
  except FileNotFoundError:
    raise FileNotFoundError(f'PyTorch checkpoint {path} does not exist') from None
  except IsADirectoryError:
    raise ValueError(f'PyTorch checkpoint {path} is a folder, not a .pth file') from None
  except Exception as error:  # pickle.UnpicklingError, RuntimeError, zip errors...
    unsafe = _unsafe_globals(torch, path)
    if unsafe:
      raise ValueError(
          f'{path} needs {unsafe} to load: unpickling those would run code stored in the file, '
          'so okdhp_jax refuses it (it loads only tensors, containers and numpy numbers and arrays). If '
          'you trust the file, re-save its weights from Python first: torch.save(torch.load(p, '
          "weights_only=False)['state_dict'], 'weights.pth')") from None
    raise ValueError(f'cannot read {path} as a PyTorch checkpoint '
                     f'({type(error).__name__}: {str(error).splitlines()[0][:200]})') from None


@contextlib.contextmanager
def _allowed(torch):
  with torch.serialization.safe_globals(numpy_allow_list()):
    yield


def _unsafe_globals(torch, path: str) -> list[str]:
  """Globals the file names beyond the allowed ones (read without unpickling); [] if unknown."""
  try:
    with _allowed(torch):
      names = torch.serialization.get_unsafe_globals_in_checkpoint(path)
  except Exception:  # not a zip checkpoint, or an older torch: nothing more to say.
    return []
  allowed = {g[1] if isinstance(g, tuple) else f'{g.__module__}.{g.__qualname__}'
             for g in numpy_allow_list()}
  return sorted(n for n in names if n not in allowed)


def state_dict_of(checkpoint: Any, path: str) -> dict[str, np.ndarray]:
  """name -> float array from a bare state_dict or a training checkpoint's `state_dict`.

  Training checkpoints (official OKDHP, HRNet, pytorch-pose) keep the weights under
  'state_dict' beside 'optimizer', 'epoch', 'perf'...; those other entries are ignored. A
  DataParallel `module.` prefix is removed.
  """
  if isinstance(checkpoint, Mapping) and 'state_dict' in checkpoint:
    checkpoint = checkpoint['state_dict']
  if not isinstance(checkpoint, Mapping):
    raise ValueError(f'{path} holds a {type(checkpoint).__name__}, not a state_dict (a mapping '
                     "of tensor names to tensors, or a training checkpoint with 'state_dict')")
  tensors = {k: v.detach().cpu().numpy() for k, v in checkpoint.items() if hasattr(v, 'detach')}
  if not tensors:
    raise ValueError(f'{path} has no tensors in its state_dict (keys: {sorted(checkpoint)[:8]})')
  return strip_module_prefix(tensors)


def strip_module_prefix(state_dict: Mapping[str, Any]) -> dict[str, Any]:
  """Removes DataParallel's `module.` prefix when every key has it."""
  if state_dict and all(k.startswith('module.') for k in state_dict):
    return {k[len('module.'):]: v for k, v in state_dict.items()}
  return dict(state_dict)


def load_state_dict(path: str) -> dict[str, np.ndarray]:
  """`state_dict_of(load_checkpoint(path))`: the weights of a .pth / .pth.tar file."""
  return state_dict_of(load_checkpoint(path), path)
