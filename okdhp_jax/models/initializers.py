"""Fresh network variables with PyTorch's default initialisation, drawn in one go."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import flax.traverse_util
import jax
import jax.numpy as jnp
import numpy as np


def init_variables(model: nn.Module, rng: jax.Array,
                   input_shape: tuple[int, int, int, int] = (1, 256, 256, 3)) -> dict[str, Any]:
  """Fresh {'params', 'batch_stats'} for `model` on the default device; see host_variables."""
  return jax.device_put(host_variables(model, rng, input_shape))


def host_variables(model: nn.Module, rng: jax.Array,
                   input_shape: tuple[int, int, int, int] = (1, 256, 256, 3)) -> dict[str, Any]:
  """Fresh {'params', 'batch_stats'} for `model` as numpy arrays; use instead of `model.init`.

  `model.init` draws every parameter with its own random call, and XLA on CPU is slow to
  compile the hundreds of draws of a multi-branch hourglass. Here the tree comes from
  `jax.eval_shape` and ONE uniform draw fills it, with PyTorch's default initialisation
  (what the released code trains from): conv/dense kernels and their biases
  U(-1/sqrt(fan_in), 1/sqrt(fan_in)); BatchNorm scale 1, bias 0, mean 0, var 1. The values are
  made on the host and reach the devices in one transfer: built on the devices leaf by leaf,
  every new shape would compile a small XLA program of its own.

  Args:
    model: any module of this package (called as `model(images, train=False)`).
    rng: a JAX PRNG key.
    input_shape: [batch, height, width, 3]; only shapes matter, batch 1 is enough.
  """
  abstract = jax.eval_shape(
      lambda: model.init(jax.random.key(0), jnp.zeros(input_shape, jnp.float32), train=False))
  params = flax.traverse_util.flatten_dict(abstract['params'])
  random_paths = [path for path in params if _torch_fan_in(params, path) is not None]
  sizes = [int(np.prod(params[path].shape)) for path in random_paths]
  # Slicing on the host: compiling thousands of device slices is what we are avoiding.
  uniform = np.asarray(jax.random.uniform(rng, (sum(sizes),), jnp.float32, -1.0, 1.0))
  values, offset = {}, 0
  for path, size in zip(random_paths, sizes):
    bound = 1.0 / np.sqrt(_torch_fan_in(params, path))
    leaf = params[path]
    values[path] = np.asarray(
        (uniform[offset:offset + size] * bound).reshape(leaf.shape), leaf.dtype)
    offset += size
  for path, leaf in params.items():
    if path not in values:
      if path[-1] not in ('scale', 'bias'):
        raise ValueError(f'host_variables: no rule for parameter {"/".join(path)}')
      values[path] = (np.ones if path[-1] == 'scale' else np.zeros)(leaf.shape, leaf.dtype)
  stats = flax.traverse_util.flatten_dict(abstract.get('batch_stats', {}))
  stat_values = {path: (np.ones if path[-1] == 'var' else np.zeros)(leaf.shape, leaf.dtype)
                 for path, leaf in stats.items()}
  return {'params': flax.traverse_util.unflatten_dict(values),
          'batch_stats': flax.traverse_util.unflatten_dict(stat_values)}


def _torch_fan_in(params: dict[tuple[str, ...], Any], path: tuple[str, ...]) -> int | None:
  """fan_in of a kernel, or of the kernel beside a bias; None for BatchNorm parameters."""
  kernel = params.get(path[:-1] + ('kernel',))
  if path[-1] not in ('kernel', 'bias') or kernel is None:
    return None
  return int(np.prod(kernel.shape[:-1]))
