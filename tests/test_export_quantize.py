"""Quantised deployment files: float16 and int8 TFLite, int8 ONNX.

A 1-stack, 64-channel hourglass at 64x64 with random weights and BatchNorm statistics, its int8
files calibrated on crops of generated training figures. Tolerances, on crops none of the
calibration saw (the figures of the eval split and the bundled MPII photos):
  int8: heatmaps' mean absolute error under 10 % of the float32 heatmaps' standard deviation
    (measured 3 % TFLite, 4 % ONNX; 32 % when calibrated on black crops), and keypoints within
    one heatmap pixel (4 crop pixels) of float32's for at least 95 % of the joints whose
    float32 heatmap has a clear peak (its maximum exceeds every value outside the 3x3 around
    it by 10 % of the map's range; measured 100 %, 18 % when calibrated on black crops). Random
    weights make flat maps whose argmax any rounding moves, so the other joints are not held
    to it (a trained quick-start student keeps 99 % of all its keypoints within the pixel).
  fp16: heatmaps within 5e-3 (measured ~1e-3).
"""

from __future__ import annotations

import collections
import importlib.util
import json
import os
import shutil

import jax
import ml_collections
import numpy as np
import pytest

from okdhp_jax.data import meta as meta_lib
from okdhp_jax.data import pipeline
from okdhp_jax.export import (deploy, deploy_calibration, deploy_pools, deploy_run,
                              deploy_tflite, store)
from okdhp_jax.models import build_model, init_variables, plain_hourglass_config
from main_runs import tiny_synthetic_config
from model_helpers import random_batch_stats
from test_export_deploy import photo_crops

J = 16
SIZE = 64
CALIBRATION = 24
CLEAR_PEAK = 0.1  # of the heatmap's range; see the module docstring.
HAS_ONNX = all(importlib.util.find_spec(m) for m in ('onnx', 'onnxruntime', 'tf2onnx'))


@pytest.fixture(scope='module')
def records_config(tmp_path_factory):
  config = tiny_synthetic_config(str(tmp_path_factory.mktemp('quantize')), num_train=48)
  assert tuple(config.data.input_size) == (SIZE, SIZE)
  return config


@pytest.fixture(scope='module')
def exported(records_config, tmp_path_factory):
  """An export folder with model.tflite, model_fp16.tflite, model_int8.tflite and (with the
  `deploy` extra) model_int8.onnx."""
  model_config = plain_hourglass_config(1, features=64, depth=1)
  model = build_model(ml_collections.ConfigDict(model_config), J, (SIZE, SIZE))
  variables = init_variables(model, jax.random.key(3), (1, SIZE, SIZE, 3))
  variables['batch_stats'] = random_batch_stats(variables['batch_stats'])
  folder = str(tmp_path_factory.mktemp('export'))
  store.save_exported(folder, variables, {
      'model': model_config, 'num_joints': J, 'dataset': 'mpii', 'input_size': [SIZE, SIZE],
      'heatmap_size': list(records_config.data.heatmap_size)})
  meta = meta_lib.get_meta(records_config.data.dataset)
  calibration = deploy_calibration.calibration_crops(records_config.data, meta, CALIBRATION)
  formats = 'tflite,tflite_fp16,tflite_int8' + (',onnx_int8' if HAS_ONNX else '')
  deployment = deploy.write_deployment(folder, formats, calibration=calibration)
  return {'folder': folder, 'deployment': deployment, 'calibration': calibration}


def unseen_crops(config) -> np.ndarray:
  """The eval split's figures and the bundled MPII photos: uint8 [13, 64, 64, 3]."""
  meta = meta_lib.get_meta(config.data.dataset)
  dataset = pipeline.build_eval_dataset(config.data, meta, split=config.data.eval_split,
                                        local_batch_size=64)
  batch = next(dataset.as_numpy_iterator())
  return np.concatenate([batch['image'][batch['valid']], photo_crops()])


def assert_follows_float32(got: dict, want: dict) -> None:
  """The int8 tolerances of the module docstring."""
  error = np.abs(got['heatmaps'] - want['heatmaps']).mean()
  assert error < 0.1 * want['heatmaps'].std(), (error, want['heatmaps'].std())
  batch, height, width, joints = want['heatmaps'].shape
  maps = want['heatmaps'].transpose(0, 3, 1, 2).reshape(batch, joints, height * width)
  peak = maps.argmax(-1)
  rows, cols = np.divmod(np.arange(height * width), width)
  around = ((np.abs(rows - (peak // width)[..., None]) <= 1)
            & (np.abs(cols - (peak % width)[..., None]) <= 1))
  margin = maps.max(-1) - np.where(around, -np.inf, maps).max(-1)
  clear = margin > CLEAR_PEAK * (maps.max(-1) - maps.min(-1))
  assert clear.mean() > 0.1  # enough joints to hold to it.
  distance = np.linalg.norm(got['keypoints'] - want['keypoints'], axis=-1)[clear]
  assert np.mean(distance <= SIZE / width) >= 0.95, np.sort(distance)


def run(exported, format_name, crops):
  return deploy_run.FileRunner(os.path.join(exported['folder'], deploy.FILES[format_name]))(
      crops)


def test_formats_parse_and_refuse_by_key():
  assert deploy.parse_formats('TFLite_INT8, onnx_int8,tflite_fp16') == (
      'orbax', 'tflite_fp16', 'tflite_int8', 'onnx_int8')
  assert deploy.needs_calibration('orbax,onnx_int8')
  assert not deploy.needs_calibration('orbax,tflite,tflite_fp16')
  with pytest.raises(ValueError, match=r"config.export.formats.*\['tflite_int4'\]"):
    deploy.parse_formats('tflite,tflite_int4')


def test_calibration_is_seeded_evaluation_crops_of_training_records(records_config, exported):
  meta = meta_lib.get_meta(records_config.data.dataset)
  dataset = pipeline.build_eval_dataset(records_config.data, meta,
                                        split=records_config.data.train_split,
                                        local_batch_size=64)
  every_crop = next(dataset.as_numpy_iterator())['image'][:48]
  chosen = np.sort(np.random.default_rng(deploy_calibration.CALIBRATION_SEED).choice(
      48, CALIBRATION, replace=False))
  np.testing.assert_array_equal(exported['calibration'], every_crop[chosen])
  again = deploy_calibration.calibration_crops(records_config.data, meta, CALIBRATION)
  np.testing.assert_array_equal(again, exported['calibration'])
  more = deploy_calibration.calibration_crops(records_config.data, meta, 1000)
  assert more.shape == (48, SIZE, SIZE, 3)  # every record, once.


def test_calibration_refuses_a_missing_or_empty_training_split(records_config, tmp_path):
  meta = meta_lib.get_meta(records_config.data.dataset)
  data = records_config.data.copy_and_resolve_references()
  data.train_split = 'training'
  with pytest.raises(ValueError, match=r"no 'training' records.*config.export.formats"):
    deploy_calibration.calibration_crops(data, meta, 8)
  empty = tmp_path / 'records'
  shutil.copytree(records_config.data.records_dir, empty)
  info = json.loads((empty / 'dataset_info.json').read_text())
  info['splits']['train'] = 0
  (empty / 'dataset_info.json').write_text(json.dumps(info))
  data = records_config.data.copy_and_resolve_references()
  data.records_dir = str(empty)
  with pytest.raises(ValueError, match=r"no 'train' records"):
    deploy_calibration.calibration_crops(data, meta, 8)
  data.records_dir = str(tmp_path / 'nowhere')
  with pytest.raises(FileNotFoundError, match='dataset_info.json'):
    deploy_calibration.calibration_crops(data, meta, 8)
  with pytest.raises(ValueError, match='config.export.calibration_crops=0'):
    deploy_calibration.calibration_crops(records_config.data, meta, 0)


def test_int8_needs_calibration_before_converting(exported, tmp_path):
  folder = str(tmp_path / 'copy')
  shutil.copytree(exported['folder'], folder)
  with pytest.raises(ValueError, match='calibration crops'):
    deploy.write_deployment(folder, 'tflite_int8')
  with pytest.raises(ValueError, match=r'uint8 \[N, 64, 64, 3\]'):
    deploy.write_deployment(folder, 'onnx_int8',
                            calibration=np.zeros((4, 32, 32, 3), np.uint8))


def test_int8_pools_pad_with_edges_to_the_same_maxima():
  """MobilePose's padded stem pool: -inf padding would give its int8 range a 1e36 scale."""
  import flax.linen as nn

  def pools(scale, x):
    padded = nn.max_pool(x * scale, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    nested = jax.jit(lambda t: nn.max_pool(t, (3, 3), strides=(2, 2), padding='SAME'))(x)
    return {'padded': padded, 'nested': nested, 'plain': nn.max_pool(x, (2, 2), (2, 2))}

  x = jax.random.normal(jax.random.key(0), (2, 9, 8, 3))
  rewritten = deploy_pools.edge_padded_max_pools(pools)
  want, got = pools(2.0, x), rewritten(2.0, x)
  for name in want:
    np.testing.assert_array_equal(got[name], want[name], err_msg=name)
  jaxpr = jax.make_jaxpr(rewritten)(2.0, x).jaxpr
  paddings = [eqn.params['padding'] for eqn in jaxpr.eqns
              if eqn.primitive.name == 'reduce_window_max']
  assert len(paddings) == 3 and all(p == ((0, 0),) * 4 for p in paddings), paddings


def test_int8_file_takes_uint8_and_holds_int8_weights(exported):
  interpreter = deploy_tflite.interpreter(
      os.path.join(exported['folder'], deploy.FILES['tflite_int8']))
  interpreter.allocate_tensors()
  (image_input,) = interpreter.get_input_details()
  assert image_input['dtype'] == np.uint8
  assert image_input['quantization'] == (0.0, 0)  # the raw crop, not a quantised float.
  assert {d['dtype'] for d in interpreter.get_output_details()} == {np.float32}
  tensors = {t['index']: t for t in interpreter.get_tensor_details()}
  convolutions = [op for op in interpreter._get_ops_details() if op['op_name'] == 'CONV_2D']
  assert len(convolutions) > 10
  for op in convolutions:
    data, kernel = (tensors[i] for i in op['inputs'][:2])
    assert data['dtype'] == np.int8 and kernel['dtype'] == np.int8, op
    # per output channel scales
    assert len(kernel['quantization_parameters']['scales']) == kernel['shape'][0]


def test_int8_outputs_follow_float32_on_unseen_crops(records_config, exported):
  crops = unseen_crops(records_config)
  assert_follows_float32(run(exported, 'tflite_int8', crops), run(exported, 'tflite', crops))


def test_fp16_file_is_half_the_size_and_float32_close(records_config, exported):
  folder = exported['folder']
  sizes = {name: os.path.getsize(os.path.join(folder, deploy.FILES[name]))
           for name in ('tflite', 'tflite_fp16')}
  assert 0.4 < sizes['tflite_fp16'] / sizes['tflite'] < 0.6, sizes
  crops = unseen_crops(records_config)
  np.testing.assert_allclose(run(exported, 'tflite_fp16', crops)['heatmaps'],
                             run(exported, 'tflite', crops)['heatmaps'], rtol=0, atol=5e-3)


def test_model_json_records_size_latency_and_accuracy(records_config, exported):
  from okdhp_jax.experiment import deploy_report

  config = records_config.copy_and_resolve_references()
  deployment, report, table = deploy_report.score_files(config, exported['folder'])
  with open(os.path.join(exported['folder'], store.DESCRIPTION_FILE)) as f:
    recorded = json.load(f)
  assert recorded[deploy.DEPLOYMENT_KEY] == deployment
  assert recorded[deploy.REPORT_KEY] == report
  assert set(deployment) == {'tflite', 'tflite_fp16', 'tflite_int8'} | (
      {'onnx_int8'} if HAS_ONNX else set())
  reference = report['reference']['metrics']['Mean']
  for name, entry in deployment.items():
    assert entry['size_bytes'] == os.path.getsize(
        os.path.join(exported['folder'], entry['file']))
    assert entry['latency_ms'] > 0
    assert 0 <= entry['metrics']['Mean'] <= 100
    assert 0 <= entry['graph_keypoints_metrics']['Mean'] <= 100
    assert f'| {name} | {entry["file"]} |' in table
  # float32 TFLite is the JAX student: the same PCKh.
  assert deployment['tflite']['metrics']['Mean'] == pytest.approx(reference, abs=1e-9)
  assert deployment['tflite_int8']['calibration_crops'] == CALIBRATION
  assert deployment['tflite_int8']['inputs']['images'].startswith('uint8 [1, 64, 64, 3]')


@pytest.mark.skipif(not HAS_ONNX, reason='needs the deploy extra (onnx, onnxruntime, tf2onnx)')
def test_onnx_int8_is_quantised_and_follows_float32(records_config, exported):
  import onnx

  model = onnx.load(os.path.join(exported['folder'], deploy.FILES['onnx_int8']))
  kinds = collections.Counter(node.op_type for node in model.graph.node)
  assert kinds['QuantizeLinear'] > 10 and kinds['DequantizeLinear'] > 10
  assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8
  crops = unseen_crops(records_config)
  got = run(exported, 'onnx_int8', crops)
  assert {value.dtype for value in got.values()} == {np.dtype(np.float32)}
  assert_follows_float32(got, run(exported, 'tflite', crops))
