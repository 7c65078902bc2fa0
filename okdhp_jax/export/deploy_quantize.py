r"""Quantised deployment files: float16-weight and full-integer TFLite, int8 ONNX.

  python -m okdhp_jax.main --config ... --workdir DIR --mode export \
      --config.export.formats=orbax,tflite,tflite_fp16,tflite_int8,onnx,onnx_int8

Each holds deploy_graph's function as model.tflite / model.onnx do (uint8 crops in; heatmaps,
keypoints in crop pixels and scores out, float32), quantised after training:

  model_fp16.tflite  float16 weights, dequantised to float32 when the file loads: half the
                     weight bytes, float32 arithmetic (same speed, outputs within ~1e-3).
  model_int8.tflite  full-integer: int8 weights (per channel) and activations, ranges from
                     calibration crops, TFLITE_BUILTINS_INT8 ops only. The uint8 input stays
                     the raw uint8 crop (the graph starts with it); the outputs are float32,
                     dequantised from int8, so the decode inside the graph runs in int8 too:
                     keypoints come on a grid of about input size / 255 crop pixels.
  model_int8.onnx    onnxruntime's static quantisation (QDQ, int8 weights per channel and int8
                     activations, min/max calibration on the same crops) of model.onnx; the
                     input stays uint8, the outputs float32.

Both TFLite files are batch-1 graphs (deploy_tflite.py says why), and the int8 one's padded
max pools pad with edge copies rather than -inf (deploy_pools.py says why). model_int8.onnx
keeps model.onnx's dynamic batch: a static-batch TFLite graph turns the decode's one-hot picks
into a rank-2 ONE_HOT that tf2onnx cannot convert, and pinning model.onnx's batch to 1 makes
onnxruntime's pre-processing fold each broadcast BatchNorm constant into an activation-sized
tensor (the quick-start student's 0.5 MB file grows to 3.9 MB). So the int8 ONNX graph keeps
model.onnx's one Expand per BatchNorm constant.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Callable, Mapping

import numpy as np

from okdhp_jax.export import deploy_pools, deploy_tflite
from okdhp_jax.export.deploy_tflite import INPUT_NAME

# Quantised files take one crop per call (deploy_tflite.py says why).
QUANTISED_BATCH = 1


def to_tflite_fp16(infer: Callable, variables: Mapping[str, Any],
                   input_size: tuple[int, int]) -> bytes:
  """deploy_tflite.to_tflite with float16 weights (batch 1)."""

  def configure(converter):
    import tensorflow as tf
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.target_spec.supported_types = [tf.float16]

  return deploy_tflite.to_tflite(infer, variables, input_size, batch=QUANTISED_BATCH,
                                 configure=configure)


def to_tflite_int8(infer: Callable, variables: Mapping[str, Any], input_size: tuple[int, int],
                   calibration: np.ndarray) -> bytes:
  """deploy_tflite.to_tflite, full-integer quantised on `calibration` crops (batch 1).

  Args:
    calibration: uint8 [N, H, W, 3] crops (deploy_calibration.py); each is one step of the
      representative dataset, in order, so the ranges depend on nothing else.
  """
  check_calibration(calibration, input_size)

  def representative_dataset():
    for crop in calibration:
      yield [crop[None]]

  def configure(converter):
    import tensorflow as tf
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative_dataset
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    # The graph's input is uint8 crops already: this keeps it so (rather than a quantised
    # float input); outputs stay float32 (dequantised).
    converter.inference_input_type = tf.uint8

  return deploy_tflite.to_tflite(deploy_pools.edge_padded_max_pools(infer), variables,
                                 input_size, batch=QUANTISED_BATCH, configure=configure)


def onnx_to_int8(onnx_path: str, int8_path: str, calibration: np.ndarray,
                 input_size: tuple[int, int]) -> None:
  """onnxruntime's static quantisation (QDQ) of a deploy_onnx file, calibrated on crops."""
  from onnxruntime import quantization

  check_calibration(calibration, input_size)

  class Crops(quantization.CalibrationDataReader):
    def __init__(self):
      self._crops = iter(calibration)

    def get_next(self):
      crop = next(self._crops, None)
      return None if crop is None else {INPUT_NAME: crop[None]}

  # quantize_static asks for onnxruntime's pre-processing on the root logger at every call
  # (the module docstring says why there is none here) and logs each bias it copies.
  root = logging.getLogger()
  root.addFilter(_no_preprocessing_advice)
  try:
    quantization.quantize_static(
        str(onnx_path), str(int8_path), Crops(), quant_format=quantization.QuantFormat.QDQ,
        activation_type=quantization.QuantType.QInt8, weight_type=quantization.QuantType.QInt8,
        per_channel=True, calibrate_method=quantization.CalibrationMethod.MinMax)
  finally:
    root.removeFilter(_no_preprocessing_advice)


def _no_preprocessing_advice(record: logging.LogRecord) -> bool:
  """False for the quantiser's advice and its line per copied bias (hundreds of them)."""
  if f'{os.sep}onnxruntime{os.sep}' in record.pathname and record.levelno < logging.ERROR:
    return False
  try:
    return 'pre-process' not in record.getMessage()
  except Exception:  # pylint: disable=broad-except  (a record whose arguments do not format)
    return True


def check_calibration(calibration: np.ndarray | None, input_size: tuple[int, int]) -> None:
  """ValueError unless `calibration` is uint8 [N >= 1, H, W, 3] crops of `input_size`."""
  if calibration is None or len(calibration) == 0:
    raise ValueError('int8 quantisation needs calibration crops (config.export.'
                     'calibration_crops of them, from the training split); got none')
  want = (*(int(s) for s in input_size), 3)
  if calibration.dtype != np.uint8 or tuple(calibration.shape[1:]) != want:
    raise ValueError(f'calibration crops must be uint8 [N, {want[0]}, {want[1]}, 3]; got '
                     f'{calibration.dtype} {list(calibration.shape)}')
