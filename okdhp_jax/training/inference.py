"""Test-time prediction with the flip test (HRNet protocol, used by OKDHP).

Flip test (HRNet): run the network on the image and on its mirror image; flip the second
heatmaps back, swap left/right joints, shift them one pixel to the right, and average with the
first. The shift: HRNet's `output_flipped[:, :, :, 1:] = output_flipped[:, :, :, :-1]` (NCHW),
i.e. in NHWC `out[:, :, 1:] = out[:, :, :-1]`; column 0 keeps its value. Why: mirroring the
image (x -> W_in - 1 - x) and mirroring the heatmap (u -> W_out - 1 - u) differ by
1 - 1 / stride heatmap pixels (0.75 at stride 4), so the flipped-back map sits that far to the
left; the one-pixel shift compensates (leaving 0.25 px to the right).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.sharding import Mesh

from okdhp_jax.training import sharding as sharding_lib


def flip_back(heatmaps: jax.Array, flip_perm, *, shift: bool) -> jax.Array:
  """Mirrors heatmaps of a flipped image back and swaps left/right joints.

  Args:
    heatmaps: [..., height, width, joints] predicted on horizontally flipped images.
    flip_perm: [joints] int, DatasetMeta.flip_permutation().
    shift: move the result one pixel to the right (HRNet's shift_heatmap).
  """
  flipped = jnp.flip(heatmaps, axis=-2)[..., jnp.asarray(flip_perm)]
  if shift:
    flipped = jnp.concatenate([flipped[..., :1, :], flipped[..., :-1, :]], axis=-2)
  return flipped


def make_predict_step(config: ml_collections.ConfigDict, model: nn.Module, *, mesh: Mesh,
                      flip_perm):
  """The jitted prediction step.

  Args:
    config: reads config.eval.flip_test and config.eval.shift_heatmap.
    model: a pose network returning PoseOutputs.
    mesh: a mesh with a `data` axis; the image batch must divide by its size.
    flip_perm: [joints] int array (DatasetMeta.flip_permutation()).

  Returns:
    jitted fn (variables, images [B, H, W, 3]) -> {'branches': [branches, B, h, w, J],
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
                                        sharding_lib.data_sharded(mesh)))
