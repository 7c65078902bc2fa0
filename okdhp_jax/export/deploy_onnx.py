"""The deployed graph as ONNX: tf2onnx converts the TFLite flat buffer (deploy_tflite.py).

Why through TFLite (the README compares the routes): jax2tf emits only StableHLO inside an
XlaCallModule op, which tf2onnx cannot convert from a TensorFlow graph; jax2onnx (0.17) fails on
Flax's max_pool and, traced past that, writes a MaxPool that onnxruntime rejects, and it pins
orbax-checkpoint below the version this project uses. The TFLite file holds plain builtins,
which tf2onnx converts with its layout optimiser removing the NHWC <-> NCHW transposes.
Needs the `deploy` extra (onnx, onnxruntime, tf2onnx); imports are inside the functions.
"""

from __future__ import annotations

import warnings

from okdhp_jax.export.deploy_tflite import SIGNATURE, interpreter

OPSET = 17


def tflite_to_onnx(tflite_path: str, onnx_path: str) -> None:
  """Converts a deploy_tflite flat buffer to ONNX with the same input and output names."""
  import onnx
  import tf2onnx

  # tf2onnx names graph inputs and outputs after TFLite tensors; the signature maps the names
  # a user sees ('images', 'heatmaps', ...) to those tensors.
  runner = interpreter(tflite_path).get_signature_runner(SIGNATURE)
  tensors = {name: details['name'] for name, details in runner.get_input_details().items()}
  tensors.update({name: details['name'] for name, details in runner.get_output_details().items()})
  with warnings.catch_warnings():  # tf2onnx reads it with tf.lite.Interpreter, which warns.
    warnings.simplefilter('ignore', UserWarning)
    model, _ = tf2onnx.convert.from_tflite(str(tflite_path), opset=OPSET)
  graph_names = [value.name for value in (*model.graph.input, *model.graph.output)]
  renames = {}
  for name, tensor in tensors.items():
    if tensor not in graph_names:
      raise RuntimeError(f'tflite_to_onnx: cannot find TFLite tensor {tensor!r} ({name}) among '
                         f'the ONNX graph inputs and outputs {graph_names}')
    renames[tensor] = name
  _rename_values(model.graph, renames)
  onnx.checker.check_model(model)
  onnx.save(model, str(onnx_path))


def _rename_values(graph, renames: dict[str, str]) -> None:
  for value in (*graph.input, *graph.output):
    value.name = renames.get(value.name, value.name)
  for node in graph.node:
    node.input[:] = [renames.get(name, name) for name in node.input]
    node.output[:] = [renames.get(name, name) for name in node.output]
