"""The deployed inference graph: uint8 crops in, heatmaps plus decoded keypoints and scores out.

What ONNX and TFLite files hold (deploy_onnx.py, deploy_tflite.py), written in jnp so that it
converts: ImageNet normalisation, the network in float32 (inference mode), and the codec's
decode (argmax, quarter-pixel step, HRNet's all-negative mask) scaled to crop pixels. There is
no flip test in the graph: a caller who wants one runs the mirrored crop too and averages the
flipped-back heatmaps (codecs/heatmap.py `flip_back`) before decoding on the host.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import ml_collections

from okdhp_jax.data import normalization
from okdhp_jax.models import build_model

OUTPUT_NAMES = ('heatmaps', 'keypoints', 'scores')


def decode_heatmaps(heatmaps: jax.Array) -> tuple[jax.Array, jax.Array]:
  """jnp twin of codecs.heatmap.decode_heatmaps (same results, bit for bit).

  Written for the converters: the argmax is the smallest index holding the maximum (the first
  maximum, as np.argmax), because jnp.argmax lowers to a two-operand reduce that the TFLite
  converter cannot legalise; each of the four neighbours is picked from the flattened map by a
  one-hot sum (exact: one term and zeros), because a gather with a dynamic batch does not
  convert either; the step is masked outside the interior instead of the NumPy version's
  boolean indexing, whose shape depends on the data.

  Args:
    heatmaps: [batch, height, width, joints].

  Returns:
    coords float32 [batch, joints, 2] (x, y) in heatmap pixels, scores float32 [batch, joints].
  """
  heatmaps = heatmaps.astype(jnp.float32)
  batch, height, width, joints = heatmaps.shape
  flat = jnp.transpose(heatmaps, (0, 3, 1, 2)).reshape(batch, joints, height * width)
  scores = jnp.max(flat, axis=-1)
  positions = jnp.arange(height * width, dtype=jnp.int32)
  index = jnp.min(jnp.where(flat == scores[..., None], positions, height * width), axis=-1)
  px = index % width
  py = index // width

  def at(offset):  # the map's value at index + offset; 0 off the map (masked below anyway).
    return jnp.sum(jnp.where(positions == (index + offset)[..., None], flat, 0.0), axis=-1)

  interior = (px > 1) & (px < width - 1) & (py > 1) & (py < height - 1)
  step_x = jnp.where(interior, 0.25 * jnp.sign(at(1) - at(-1)), 0.0)
  step_y = jnp.where(interior, 0.25 * jnp.sign(at(width) - at(-width)), 0.0)
  coords = jnp.stack([px.astype(jnp.float32) + step_x, py.astype(jnp.float32) + step_y], -1)
  coords = coords * (scores > 0)[..., None].astype(jnp.float32)
  return coords, scores


def deployed_function(model_config: Mapping[str, Any], num_joints: int,
                      input_size: tuple[int, int], heatmap_size: tuple[int, int]) -> Callable:
  """The graph to export: fn(variables, images) -> (heatmaps, keypoints, scores).

  The variables stay an argument (not constants closed over): the converter then takes them
  as TensorFlow variables, which it converts faster than weights embedded in the serialised
  StableHLO (docs/performance.md has the figure).

  Args:
    model_config: an export's model.json 'model' (a plain, one-branch network); its compute
      dtype is replaced by float32, what the deployed files compute in.
    num_joints, input_size, heatmap_size: from model.json; sizes are (height, width).

  Returns:
    fn({'params', 'batch_stats'}, images uint8 [B, H, W, 3] RGB crops) -> heatmaps float32
    [B, h, w, J], keypoints float32 [B, J, 2] (x, y) in crop pixels (heatmap pixels times the
    stride, as HeatmapCodec.decode), scores float32 [B, J] (each map's maximum).
  """
  config = ml_collections.ConfigDict(dict(model_config))
  config.dtype = 'float32'
  model = build_model(config, num_joints, tuple(input_size))
  stride = jnp.asarray([input_size[1] / heatmap_size[1], input_size[0] / heatmap_size[0]],
                       jnp.float32)

  def infer(variables, images):
    outputs = model.apply(variables, normalization.normalize(images), train=False)
    heatmaps = outputs.ensemble.astype(jnp.float32)
    coords, scores = decode_heatmaps(heatmaps)
    return heatmaps, coords * stride, scores

  return infer
