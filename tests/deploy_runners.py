"""Running the deployment files the tests check: model.tflite and model.onnx on uint8 crops."""

from __future__ import annotations

import numpy as np

from okdhp_jax.export.deploy_graph import OUTPUT_NAMES
from okdhp_jax.export.deploy_tflite import INPUT_NAME, SIGNATURE, interpreter


def run_tflite(path: str, images: np.ndarray) -> dict[str, np.ndarray]:
  """Runs model.tflite on uint8 [B, H, W, 3] crops; {'heatmaps', 'keypoints', 'scores'}."""
  runner = interpreter(path).get_signature_runner(SIGNATURE)
  outputs = runner(**{INPUT_NAME: np.asarray(images, np.uint8)})
  return {name: np.asarray(outputs[name]) for name in OUTPUT_NAMES}


def run_onnx(path: str, images: np.ndarray) -> dict[str, np.ndarray]:
  """Runs model.onnx with onnxruntime (CPU) on uint8 [B, H, W, 3]; {'heatmaps', ...}."""
  import onnxruntime  # pylint: disable=g-import-not-at-top  (the `deploy` extra)

  session = onnxruntime.InferenceSession(str(path), providers=['CPUExecutionProvider'])
  outputs = session.run(list(OUTPUT_NAMES), {INPUT_NAME: np.asarray(images, np.uint8)})
  return dict(zip(OUTPUT_NAMES, outputs))
