"""Helpers the model tests share."""

from __future__ import annotations

import flax
import jax
import jax.numpy as jnp
import numpy as np


def weighted_sum(tree):
  """A scalar loss that reaches every leaf of `tree` (a network's outputs), each element with
  its own weight, so every gradient path is exercised."""
  return sum(jnp.sum(leaf * jnp.sin(3.0 * i + jnp.arange(leaf.size).reshape(leaf.shape)))
             for i, leaf in enumerate(jax.tree.leaves(tree)))


def random_batch_stats(batch_stats, seed=0):
  """Non-trivial BatchNorm statistics: means N(0, 0.1), variances U(0.5, 1.5), so that eval
  mode's normalisation matters in every comparison."""
  rng = np.random.default_rng(seed)
  flat = flax.traverse_util.flatten_dict(batch_stats)
  return flax.traverse_util.unflatten_dict({
      path: jnp.asarray(rng.normal(0, 0.1, leaf.shape) if path[-1] == 'mean'
                        else rng.uniform(0.5, 1.5, leaf.shape), jnp.float32)
      for path, leaf in flat.items()})


def randomize_torch(model, seed=0):
  """A PyTorch network's BN affine parameters, running statistics and biases moved away from
  their defaults, in eval mode: a weight import must carry all of them to match."""
  import torch  # pylint: disable=g-import-not-at-top  (the tests that call this need it)
  torch.manual_seed(seed)
  with torch.no_grad():
    for module in model.modules():
      if isinstance(module, torch.nn.BatchNorm2d):
        module.weight.uniform_(0.5, 1.5)
        module.bias.normal_(0, 0.1)
        module.running_mean.normal_(0, 0.1)
        module.running_var.uniform_(0.5, 1.5)
      elif isinstance(module, (torch.nn.Conv2d, torch.nn.Linear)):
        module.bias.normal_(0, 0.05)
  return model.eval()
