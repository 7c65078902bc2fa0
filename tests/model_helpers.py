"""Helpers the model tests share."""

from __future__ import annotations

import flax
import jax.numpy as jnp
import numpy as np


def random_batch_stats(batch_stats, seed=0):
  """Non-trivial BatchNorm statistics: means N(0, 0.1), variances U(0.5, 1.5), so that eval
  mode's normalisation matters in every comparison."""
  rng = np.random.default_rng(seed)
  flat = flax.traverse_util.flatten_dict(batch_stats)
  return flax.traverse_util.unflatten_dict({
      path: jnp.asarray(rng.normal(0, 0.1, leaf.shape) if path[-1] == 'mean'
                        else rng.uniform(0.5, 1.5, leaf.shape), jnp.float32)
      for path, leaf in flat.items()})
