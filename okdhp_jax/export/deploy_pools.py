"""Max pools padded with copies of their edge instead of -inf, for int8 conversion.

MobilePose's stems pool 3x3, stride 2, padded by one -inf row and column each side (PyTorch's
MaxPool2d(3, 2, 1)). The TFLite converter writes that padding as a PADV2 with a -inf constant;
int8 calibration then gives the pool's input a range reaching -inf (a scale of ~1e36, shared
with the convolution before it), and the interpreter aborts when it prepares the next ADD's
rescale. Padding with copies of the edge rows and columns gives the same maxima, since every
window that reaches into the padding also holds the edge value copied there (padding under the
window size on each side), and keeps every value in the data's range. The rewrite works on the
traced jaxpr, so the network keeps PyTorch's padding everywhere else.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
from jax import lax
from jax.extend import core


def edge_padded_max_pools(fn: Callable) -> Callable:
  """`fn` (any traceable function) with each padded max pool padding with edge copies.

  Pools whose padding is not under the window size on each side, or that dilate, stay as they
  are (their maxima could change); everything else runs as `fn` traces it, nested jits inlined.
  """

  def rewritten(*args):
    closed, shapes = jax.make_jaxpr(fn, return_shape=True)(*args)
    outputs = _evaluate(closed.jaxpr, closed.consts, jax.tree.leaves(args))
    return jax.tree.unflatten(jax.tree.structure(shapes), outputs)

  return rewritten


def _evaluate(jaxpr, consts: Sequence[Any], args: Sequence[Any]) -> list[Any]:
  """Runs `jaxpr` equation by equation, rewriting padded max pools (see above)."""
  env = dict(zip(jaxpr.constvars, consts))
  env.update(zip(jaxpr.invars, args))

  def read(atom):
    return atom.val if isinstance(atom, core.Literal) else env[atom]

  for eqn in jaxpr.eqns:
    values = [read(atom) for atom in eqn.invars]
    # The equation's module path, which the converter names its tensors after.
    scope = str(eqn.source_info.name_stack)
    with jax.named_scope(scope) if scope else contextlib.nullcontext():
      if eqn.primitive.name == 'reduce_window_max' and _edge_padding_is_exact(eqn.params):
        outputs = [_edge_padded_max_pool(values[0], **eqn.params)]
      elif eqn.primitive.name in ('pjit', 'jit'):  # a nested function may hold a pool.
        inner = eqn.params['jaxpr']
        outputs = _evaluate(inner.jaxpr, inner.consts, values)
      else:
        outputs = eqn.primitive.bind(*values, **eqn.primitive.get_bind_params(eqn.params))
        outputs = outputs if eqn.primitive.multiple_results else [outputs]
    env.update(zip(eqn.outvars, outputs))
  return [read(atom) for atom in jaxpr.outvars]


def _edge_padding_is_exact(params: Mapping[str, Any]) -> bool:
  padding, window = params['padding'], params['window_dimensions']
  plain = all(d == 1 for d in (*params['base_dilation'], *params['window_dilation']))
  return (plain and any(lo or hi for lo, hi in padding)
          and all(0 <= lo < size and 0 <= hi < size for (lo, hi), size in zip(padding, window)))


def _edge_padded_max_pool(x, *, window_dimensions, window_strides, padding, **_):
  for axis, (lo, hi) in enumerate(padding):
    if lo or hi:
      first = lax.slice_in_dim(x, 0, 1, axis=axis)
      last = lax.slice_in_dim(x, x.shape[axis] - 1, x.shape[axis], axis=axis)
      x = lax.concatenate([first] * lo + [x] + [last] * hi, axis)
  return lax.reduce_window(x, -jnp.inf, lax.max, window_dimensions, window_strides, 'VALID')
