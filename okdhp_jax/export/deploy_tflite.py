"""The deployed graph as a TFLite flat buffer: jax2tf, then TensorFlow's TFLite converter.

jax2tf serialises the jitted function as StableHLO inside one XlaCallModule op, and the TFLite
converter legalises that StableHLO into TFLite builtins (convolutions, pooling, reductions), so
the flat buffer needs no Flex (TensorFlow) ops and runs on the plain TFLite / LiteRT runtime.
The batch dimension stays dynamic, unless `batch` fixes it: the quantised files
(deploy_quantize.py) are batch-1 graphs, because with a dynamic batch every BatchNorm constant
becomes a runtime BROADCAST_TO to the activation's shape, which the quantiser leaves in the
graph (it cuts the int8 graph into dozens of XNNPACK pieces: 17x slower at batch 1 for a
2-stack, 32-channel student at 64x64), while a static shape lets the converter fold them into
the convolutions or broadcast them implicitly.
TensorFlow is a dependency of the project already; the imports are inside the functions so
`import okdhp_jax` does not pay for them.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Optional

import numpy as np

from okdhp_jax.export.deploy_graph import OUTPUT_NAMES

INPUT_NAME = 'images'
SIGNATURE = 'serving_default'


def to_tflite(infer: Callable, variables: Mapping[str, Any], input_size: tuple[int, int], *,
              batch: Optional[int] = None, configure: Optional[Callable] = None) -> bytes:
  """The flat buffer of `infer(variables, images)` (deploy_graph) for uint8 [B, H, W, 3] input.

  The file has one signature, 'serving_default', with input 'images' and outputs 'heatmaps',
  'keypoints' and 'scores'; the variables become its constants.

  Args:
    batch: None for a dynamic batch dimension, else the one batch size the file takes.
    configure: called with the tf.lite.TFLiteConverter before it converts (quantisation
      options); by default the converter emits float32 TFLite builtins.
  """
  import tensorflow as tf
  from jax.experimental import jax2tf

  height, width = (int(s) for s in input_size)
  named = jax2tf.convert(lambda v, images: dict(zip(OUTPUT_NAMES, infer(v, images))),
                         polymorphic_shapes=[None, '(b, ...)' if batch is None else None],
                         with_gradient=False,
                         native_serialization_platforms=('cpu',))
  # The module tracks the variables, and the converter takes the signature's names from it.
  module = tf.Module()
  module.variables_ = tf.nest.map_structure(
      lambda a: tf.Variable(np.asarray(a), trainable=False), _plain(variables))
  module.serve = tf.function(lambda images: named(module.variables_, images), autograph=False,
                             input_signature=[tf.TensorSpec([batch, height, width, 3], tf.uint8,
                                                            name=INPUT_NAME)])
  converter = tf.lite.TFLiteConverter.from_concrete_functions(
      [module.serve.get_concrete_function()], module)
  converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
  if configure is not None:
    configure(converter)
  return converter.convert()


def _plain(tree):
  """Nested plain dicts (Orbax may restore other mappings), for tf.nest and jax alike."""
  if isinstance(tree, Mapping):
    return {key: _plain(value) for key, value in tree.items()}
  return tree


def interpreter(path: str, num_threads: Optional[int] = None):
  """A TFLite interpreter for `path` (on `num_threads` threads; None: the runtime's choice):
  LiteRT's when installed, else TensorFlow's."""
  try:
    from ai_edge_litert.interpreter import Interpreter
  except ImportError:  # tf.lite.Interpreter is deprecated in favour of LiteRT, but still ships.
    import warnings

    import tensorflow as tf
    with warnings.catch_warnings():
      warnings.simplefilter('ignore', UserWarning)
      return tf.lite.Interpreter(model_path=str(path), num_threads=num_threads)
  return Interpreter(model_path=str(path), num_threads=num_threads)
