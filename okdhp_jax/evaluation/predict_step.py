"""The jitted prediction step, with HRNet's flip test (used by OKDHP).

Flip test: run the network on the image and on its mirror image, flip the second heatmaps back
(swapping left/right joints and shifting one pixel, see codecs/heatmap.py `flip_back`), and
average with the first. The evaluation pass and the predict tool both predict through it.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.sharding import Mesh

from okdhp_jax import cpu_compiler
from okdhp_jax import sharding as sharding_lib
from okdhp_jax.codecs.heatmap import flip_back
from okdhp_jax.data import normalization


def make_predict_step(config: ml_collections.ConfigDict, model: nn.Module, *, mesh: Mesh,
                      flip_perm):
  """The jitted prediction step.

  Args:
    config: reads config.eval.flip_test and config.eval.shift_heatmap.
    model: a pose network returning PoseOutputs.
    mesh: a mesh with a `data` axis; the image batch must divide by its size.
    flip_perm: [joints] int array (DatasetMeta.flip_permutation()).

  Returns:
    jitted fn (variables, images uint8 [B, H, W, 3], normalised here) -> {'branches': [branches, B, h, w, J],
    'ensemble': [B, h, w, J], and 'fau_weights': [B, branches, J] when the model has an FAU}.
    With the flip test every entry is the average of the plain and the flipped-back pass (the
    flipped pass's FAU weights have their joints swapped back too).
  """
  flip_perm = np.asarray(flip_perm, np.int32)
  flip_test = bool(config.eval.flip_test)
  shift = bool(config.eval.shift_heatmap)

  def forward(variables, images):
    outputs = model.apply(variables, images, train=False)
    result = {'branches': jnp.stack(outputs.branch_heatmaps).astype(jnp.float32),
              'ensemble': outputs.ensemble.astype(jnp.float32)}
    if outputs.fau_weights is not None:
      result['fau_weights'] = outputs.fau_weights.astype(jnp.float32)
    return result

  def predict(variables, images):
    normalization.check_uint8(images, 'images to predict')
    images = normalization.normalize(images)
    result = forward(variables, images)
    if not flip_test:
      return result
    mirrored = forward(variables, jnp.flip(images, axis=2))
    result['branches'] = 0.5 * (result['branches']
                                + flip_back(mirrored['branches'], flip_perm, shift=shift))
    result['ensemble'] = 0.5 * (result['ensemble']
                                + flip_back(mirrored['ensemble'], flip_perm, shift=shift))
    if 'fau_weights' in result:
      result['fau_weights'] = 0.5 * (result['fau_weights']
                                     + mirrored['fau_weights'][..., flip_perm])
    return result

  # Outputs stay where the compiler puts them (sharded over the batch like the images).
  return jax.jit(predict, in_shardings=(sharding_lib.replicated(mesh),
                                        sharding_lib.data_sharded(mesh)),
                 compiler_options=cpu_compiler.compiler_options())
