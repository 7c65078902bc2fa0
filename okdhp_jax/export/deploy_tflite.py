"""The deployed graph as a TFLite flat buffer: jax2tf, then TensorFlow's TFLite converter.

jax2tf serialises the jitted function as StableHLO inside one XlaCallModule op, and the TFLite
converter legalises that StableHLO into TFLite builtins (convolutions, pooling, reductions), so
the flat buffer needs no Flex (TensorFlow) ops and runs on the plain TFLite / LiteRT runtime.
The batch dimension stays dynamic. TensorFlow is a dependency of the project already; the
imports are inside the functions so `import okdhp_jax` does not pay for them.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import numpy as np

from okdhp_jax.export.deploy_graph import OUTPUT_NAMES

INPUT_NAME = 'images'
SIGNATURE = 'serving_default'


def to_tflite(infer: Callable, variables: Mapping[str, Any],
              input_size: tuple[int, int]) -> bytes:
  """The flat buffer of `infer(variables, images)` (deploy_graph) for uint8 [B, H, W, 3] input.

  The file has one signature, 'serving_default', with input 'images' and outputs 'heatmaps',
  'keypoints' and 'scores'; the variables become its constants.
  """
  import tensorflow as tf
  from jax.experimental import jax2tf

  height, width = (int(s) for s in input_size)
  named = jax2tf.convert(lambda v, images: dict(zip(OUTPUT_NAMES, infer(v, images))),
                         polymorphic_shapes=[None, '(b, ...)'], with_gradient=False,
                         native_serialization_platforms=('cpu',))
  # The module tracks the variables, and the converter takes the signature's names from it.
  module = tf.Module()
  module.variables_ = tf.nest.map_structure(
      lambda a: tf.Variable(np.asarray(a), trainable=False), _plain(variables))
  module.serve = tf.function(lambda images: named(module.variables_, images), autograph=False,
                             input_signature=[tf.TensorSpec([None, height, width, 3], tf.uint8,
                                                            name=INPUT_NAME)])
  converter = tf.lite.TFLiteConverter.from_concrete_functions(
      [module.serve.get_concrete_function()], module)
  converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
  return converter.convert()


def _plain(tree):
  """Nested plain dicts (Orbax may restore other mappings), for tf.nest and jax alike."""
  if isinstance(tree, Mapping):
    return {key: _plain(value) for key, value in tree.items()}
  return tree


def interpreter(path: str):
  """A TFLite interpreter for `path`: LiteRT's when installed, else TensorFlow's."""
  try:
    from ai_edge_litert.interpreter import Interpreter
  except ImportError:  # tf.lite.Interpreter is deprecated in favour of LiteRT, but still ships.
    import warnings

    import tensorflow as tf
    with warnings.catch_warnings():
      warnings.simplefilter('ignore', UserWarning)
      return tf.lite.Interpreter(model_path=str(path))
  return Interpreter(model_path=str(path))
