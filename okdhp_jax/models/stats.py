"""Parameter and multiply-accumulate (MAC) counts of a network, without running it.

Parameters are counted from the 'params' tree, so BatchNorm scale and bias count and running
statistics do not (as PyTorch's `sum(p.numel() for p in model.parameters())`). MACs count the
convolutions and dense layers only (the usual convention; BatchNorm, activations, pooling and
additions are a few percent at most): kh * kw * cin / groups * cout * Hout * Wout per conv and
in * out per dense row, recorded by intercepting every `nn.Conv` / `nn.Dense` call while the
model is traced under `jax.eval_shape`, so nothing is allocated or computed.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np


@dataclasses.dataclass(frozen=True)
class ModelStats:
  params: int  # trainable parameters
  macs: int    # multiply-accumulates for ONE image


def count_params(params: Any) -> int:
  """Number of scalars in a parameter tree (pass variables['params'])."""
  return int(sum(np.prod(leaf.shape) for leaf in jax.tree.leaves(params)))


def _layer_macs(module: nn.Module, inputs: Any, outputs: Any) -> int:
  if isinstance(module, nn.Conv):
    kernel_positions = int(np.prod(module.kernel_size))
    cin = inputs.shape[-1] // module.feature_group_count
    output_positions = int(np.prod(outputs.shape[:-1]))  # batch x spatial
    return kernel_positions * cin * module.features * output_positions
  if isinstance(module, nn.Dense):
    return int(np.prod(inputs.shape[:-1])) * inputs.shape[-1] * module.features
  return 0


def model_stats(model: nn.Module, input_shape: tuple[int, int, int] = (256, 256, 3)) -> ModelStats:
  """Parameters and MACs of `model(images, train=False)` for one [height, width, 3] image."""
  macs = []

  def record(next_fun, args, kwargs, context):
    outputs = next_fun(*args, **kwargs)
    if context.method_name == '__call__' and isinstance(context.module, (nn.Conv, nn.Dense)):
      macs.append(_layer_macs(context.module, args[0], outputs))
    return outputs

  def init():
    images = jnp.zeros((1, *input_shape), jnp.float32)
    with nn.intercept_methods(record):
      return model.init(jax.random.key(0), images, train=False)

  variables = jax.eval_shape(init)
  return ModelStats(params=count_params(variables['params']), macs=int(sum(macs)))
