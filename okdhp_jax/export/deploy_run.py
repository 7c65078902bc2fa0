"""Running deployment files on this host, and their batch-1 latency.

  runner = deploy_run.FileRunner('EXPORT/model_int8.tflite')
  outputs = runner(crops)  # uint8 [B, H, W, 3] -> {'heatmaps', 'keypoints', 'scores'}
  deploy_run.latency_ms(deploy_run.FileRunner(path, num_threads=1), crops[:1])

TFLite files run in the TFLite interpreter (LiteRT's when installed, else TensorFlow's; both
apply the XNNPACK delegate by default), ONNX files in an onnxruntime CPU session. A file with a
fixed batch of 1 (the quantised TFLite files) is called once per crop.
"""

from __future__ import annotations

import time
from typing import Optional

import numpy as np

from okdhp_jax.export.deploy_graph import OUTPUT_NAMES
from okdhp_jax.export.deploy_tflite import INPUT_NAME, SIGNATURE, interpreter

# Latency: the median of LATENCY_RUNS batch-1 calls after LATENCY_WARMUP untimed ones, on
# LATENCY_THREADS threads: one core, as on a phone's big core, and steadier on a shared host.
LATENCY_RUNS = 50
LATENCY_WARMUP = 5
LATENCY_THREADS = 1


class FileRunner:
  """Calls a model.tflite / model.onnx-style file on uint8 crops.

  Attributes:
    path: the file.
    batch: the one batch size the file takes, or None when it takes any.
  """

  def __init__(self, path: str, num_threads: Optional[int] = None):
    self.path = str(path)
    if self.path.endswith('.tflite'):
      runner = interpreter(self.path, num_threads).get_signature_runner(SIGNATURE)
      size = int(runner.get_input_details()[INPUT_NAME]['shape_signature'][0])
      self._call = lambda images: runner(**{INPUT_NAME: images})
    elif self.path.endswith('.onnx'):
      import onnxruntime  # the `deploy` extra
      options = onnxruntime.SessionOptions()
      if num_threads:
        options.intra_op_num_threads = options.inter_op_num_threads = int(num_threads)
      session = onnxruntime.InferenceSession(self.path, options,
                                             providers=['CPUExecutionProvider'])
      size = session.get_inputs()[0].shape[0]
      size = size if isinstance(size, int) else -1
      self._call = lambda images: dict(zip(OUTPUT_NAMES, session.run(
          list(OUTPUT_NAMES), {INPUT_NAME: images})))
    else:
      raise ValueError(f'{self.path}: a deployment file ends in .tflite or .onnx')
    self.batch = None if size < 0 else size

  def __call__(self, images: np.ndarray) -> dict[str, np.ndarray]:
    """uint8 [B, H, W, 3] -> {'heatmaps' [B, h, w, J], 'keypoints' [B, J, 2], 'scores' [B, J]}."""
    images = np.ascontiguousarray(images, np.uint8)
    if self.batch is None or len(images) == self.batch:
      return {name: np.asarray(value) for name, value in self._call(images).items()}
    if self.batch != 1:
      raise ValueError(f'{self.path} takes batches of {self.batch}; got {len(images)} crops')
    rows = [self._call(images[i:i + 1]) for i in range(len(images))]
    return {name: np.concatenate([np.asarray(row[name]) for row in rows])
            for name in OUTPUT_NAMES}


def latency_ms(runner: FileRunner, crop: np.ndarray, *, runs: int = LATENCY_RUNS,
               warmup: int = LATENCY_WARMUP) -> float:
  """Median milliseconds of `runs` calls on one uint8 [1, H, W, 3] crop, after `warmup`."""
  crop = np.ascontiguousarray(crop, np.uint8)
  for _ in range(warmup):
    runner(crop)
  times = []
  for _ in range(max(int(runs), 1)):
    start = time.perf_counter()
    runner(crop)
    times.append(time.perf_counter() - start)
  return float(np.median(times) * 1e3)
