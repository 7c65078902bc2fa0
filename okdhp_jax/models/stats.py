"""Parameter and multiply-accumulate (MAC) counts of a network, without running it.

Parameters are counted from the 'params' tree, so BatchNorm scale and bias count and running
statistics do not (as PyTorch's `sum(p.numel() for p in model.parameters())`). MACs count the
convolutions and dense layers only (the usual convention; BatchNorm, activations, pooling and
additions are a few percent at most): kh * kw * cin / groups * cout * Hout * Wout per conv and
in * out per dense row, recorded by intercepting every `nn.Conv` / `nn.Dense` call while the
model is traced under `jax.eval_shape`, so nothing is allocated or computed.
"""

from __future__ import annotations

import collections
import dataclasses
import re
from typing import Any, Sequence

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


def _part_of(name: str) -> str:
  """The summary row a top-level submodule belongs to: stacks grouped by branch."""
  for pattern, label in ((r'branch_(\d+)_stack_\d+$', 'branch {}'),
                         (r'decoder_(\d+)$', 'branch {}'), (r'shared_\d+$', 'shared stacks'),
                         (r'stack_\d+$', 'stacks')):
    match = re.match(pattern, name)
    if match:
      return label.format(*match.groups())
  return 'FAU' if name == 'fau' else name


def stats_by_part(model: nn.Module, input_shape: tuple[int, int, int] = (256, 256, 3)
                  ) -> dict[str, ModelStats]:
  """Parameters and MACs of each part (stem, shared stacks, each branch, FAU, ...), in order.

  Parts are the model's top-level submodules, stacks grouped by branch; the values add up to
  `model_stats(model, input_shape)`.
  """
  macs: dict[str, int] = collections.defaultdict(int)

  def record(next_fun, args, kwargs, context):
    outputs = next_fun(*args, **kwargs)
    if context.method_name == '__call__' and isinstance(context.module, (nn.Conv, nn.Dense)):
      macs[_part_of(context.module.scope.path[0])] += _layer_macs(context.module, args[0],
                                                                  outputs)
    return outputs

  def init():
    images = jnp.zeros((1, *input_shape), jnp.float32)
    with nn.intercept_methods(record):
      return model.init(jax.random.key(0), images, train=False)

  params = jax.eval_shape(init)['params']
  parts: dict[str, int] = collections.defaultdict(int)
  for name, subtree in params.items():
    parts[_part_of(name)] += count_params(subtree)
  order = list(macs) + [part for part in parts if part not in macs]  # in call order.
  return {part: ModelStats(params=parts[part], macs=int(macs.get(part, 0))) for part in order}


def model_stats(model: nn.Module, input_shape: tuple[int, int, int] = (256, 256, 3)) -> ModelStats:
  """Parameters and MACs of `model(images, train=False)` for one [height, width, 3] image."""
  parts = stats_by_part(model, input_shape).values()
  return ModelStats(params=sum(p.params for p in parts), macs=sum(p.macs for p in parts))


def summary_table(networks: Sequence[tuple[str, nn.Module]],
                  input_shape: tuple[int, int, int]) -> str:
  """One screen: parameters and GMACs per part and in total of each (label, network)."""
  lines = [f'| {"network":<24} | {"part":<14} | {"params (M)":>10} | {"GMACs":>8} |',
           f'|{"-" * 26}|{"-" * 16}|{"-" * 12}|{"-" * 10}|']
  for label, network in networks:
    parts = stats_by_part(network, input_shape)
    total = ModelStats(sum(p.params for p in parts.values()), sum(p.macs for p in parts.values()))
    for i, (part, stats) in enumerate([*parts.items(), ('total', total)]):
      lines.append(f'| {label if i == 0 else "":<24} | {part:<14} | '
                   f'{stats.params / 1e6:>10.3f} | {stats.macs / 1e9:>8.3f} |')
  return '\n'.join(lines)
