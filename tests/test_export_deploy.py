"""Deployment export: ONNX and TFLite files reproduce the JAX student on the bundled photos.

Tiny students with random weights and random BatchNorm statistics (so normalisation and every
BatchNorm matter): a 2-stack hourglass and a MobilePose (resnet18) decoder taken from a 2-branch
network with an FAU, both at 64x64. Tolerances: heatmaps and scores within 1e-4 absolute
(float32; measured ~1e-6), keypoints within 0.01 crop pixels (measured 0).
"""

from __future__ import annotations

import glob
import importlib.util
import json
import os

import jax
import ml_collections
import numpy as np
import pytest
from PIL import Image

from okdhp_jax.codecs import heatmap as codec
from okdhp_jax.data import normalization
from okdhp_jax.export import deploy, deploy_graph, store
from okdhp_jax.models import (build_model, deployed_model_config, export_student, init_variables,
                              network_config, plain_hourglass_config)
from deploy_runners import run_onnx, run_tflite
from model_helpers import random_batch_stats

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
J = 16
SIZE = 64
HEATMAP = SIZE // 4
HEATMAP_ATOL = 1e-4
KEYPOINT_ATOL = 0.01  # crop pixels
# ONNX needs the `deploy` extra; TFLite only TensorFlow, a core dependency.
HAS_ONNX = all(importlib.util.find_spec(m) for m in ('onnx', 'onnxruntime', 'tf2onnx'))


def photo_crops() -> np.ndarray:
  """The bundled MPII photos, centre square resized to the input: uint8 [5, 64, 64, 3]."""
  crops = []
  for path in sorted(glob.glob(os.path.join(ROOT, 'data_prep/samples/mpii/*.jpg'))):
    image = Image.open(path).convert('RGB')
    side = min(image.size)
    left, top = (image.width - side) // 2, (image.height - side) // 2
    square = image.crop((left, top, left + side, top + side))
    crops.append(np.asarray(square.resize((SIZE, SIZE), Image.BILINEAR)))
  assert len(crops) == 5
  return np.stack(crops)


def training_network(kind: str) -> tuple[dict, int]:
  """A training config.model (as a dict) and the branch to deploy from it."""
  if kind == 'hourglass':
    return plain_hourglass_config(2, features=32, depth=1), 0
  config = network_config('mobilepose', fau='released', fau_hidden=8, backbone='resnet18',
                          num_branches=2)
  return config, 1


# The MobilePose conversion (ResNet18) takes ~20 s on 2 cores: the slow tier.
@pytest.fixture(scope='module', params=[
    'hourglass', pytest.param('mobilepose', marks=pytest.mark.slow)])
def deployed(request, tmp_path_factory):
  """An export folder with model.tflite (and model.onnx), plus the JAX outputs to hold them to."""
  training_config, branch = training_network(request.param)
  model = build_model(ml_collections.ConfigDict(training_config), J, (SIZE, SIZE))
  variables = init_variables(model, jax.random.key(1), (1, SIZE, SIZE, 3))
  variables['batch_stats'] = random_batch_stats(variables['batch_stats'])
  crops = photo_crops()
  outputs = jax.jit(lambda v, x: model.apply(v, normalization.normalize(x), train=False))(
      variables, crops)

  student = export_student(variables, branch, training_config)
  description = {'model': deployed_model_config(training_config, branch),
                 'num_joints': J, 'input_size': [SIZE, SIZE], 'heatmap_size': [HEATMAP] * 2}
  folder = str(tmp_path_factory.mktemp(f'deploy_{request.param}'))
  store.save_exported(folder, student, description)
  formats = 'orbax,tflite' + (',onnx' if HAS_ONNX else '')
  deployment = deploy.write_deployment(folder, formats)

  variables, description = store.load_exported(folder)
  infer = deploy_graph.deployed_function(description['model'], J, (SIZE, SIZE),
                                         (HEATMAP, HEATMAP))
  heatmaps, keypoints, scores = (np.asarray(a) for a in jax.jit(infer)(variables, crops))
  return {'folder': folder, 'deployment': deployment, 'crops': crops,
          'branch_heatmaps': np.asarray(outputs.branch_heatmaps[branch]),
          'jax': {'heatmaps': heatmaps, 'keypoints': keypoints, 'scores': scores}}


def test_jnp_decode_is_the_codec_decode():
  rng = np.random.default_rng(0)
  heatmaps = rng.normal(size=(4, 12, 10, 6)).astype(np.float32)
  heatmaps = np.round(heatmaps, 1)  # ties in the maximum and between neighbours.
  heatmaps[0, :, :, 0] = -1.0       # all negative: (0, 0).
  heatmaps[1, 1, 5, 1] = 9.0        # row 1: no quarter-pixel step (strict interior).
  heatmaps[1, 6, 9, 2] = 9.0        # last column.
  heatmaps[2, 0, 0, 3] = 9.0        # corner.
  heatmaps[3, :, :, 4] = 0.5        # flat map: the first pixel.
  heatmaps[3, 5, 4, 5], heatmaps[3, 5, 3, 5], heatmaps[3, 5, 5, 5] = 9.0, 2.0, 2.0  # no step.
  want_coords, want_scores = codec.decode_heatmaps(heatmaps)
  got_coords, got_scores = jax.jit(deploy_graph.decode_heatmaps)(heatmaps)
  np.testing.assert_array_equal(np.asarray(got_coords), want_coords)
  np.testing.assert_array_equal(np.asarray(got_scores), want_scores)


def test_graph_is_the_students_branch_and_the_codec(deployed):
  """JAX side of the file tests: the deployed function is the branch's network plus decode."""
  jax_out = deployed['jax']
  np.testing.assert_allclose(jax_out['heatmaps'], deployed['branch_heatmaps'], atol=1e-6)
  helper = codec.HeatmapCodec((SIZE, SIZE), (HEATMAP, HEATMAP), sigma=2.0)
  keypoints, scores = helper.decode(jax_out['heatmaps'])
  np.testing.assert_allclose(jax_out['keypoints'], keypoints, atol=1e-5)
  np.testing.assert_array_equal(jax_out['scores'], scores)


def assert_matches_jax(got: dict[str, np.ndarray], want: dict[str, np.ndarray]):
  for name in deploy_graph.OUTPUT_NAMES:
    assert got[name].shape == want[name].shape, name
    assert got[name].dtype == np.float32, name
  np.testing.assert_allclose(got['heatmaps'], want['heatmaps'], rtol=0, atol=HEATMAP_ATOL)
  np.testing.assert_allclose(got['scores'], want['scores'], rtol=0, atol=HEATMAP_ATOL)
  np.testing.assert_allclose(got['keypoints'], want['keypoints'], rtol=0, atol=KEYPOINT_ATOL)


def test_tflite_file_matches_jax(deployed):
  got = run_tflite(os.path.join(deployed['folder'], 'model.tflite'), deployed['crops'])
  assert_matches_jax(got, deployed['jax'])
  # A batch size the converter never saw: the batch dimension is dynamic.
  one = run_tflite(os.path.join(deployed['folder'], 'model.tflite'), deployed['crops'][:1])
  np.testing.assert_allclose(one['heatmaps'], got['heatmaps'][:1], rtol=0, atol=HEATMAP_ATOL)


def test_onnx_file_matches_jax(deployed):
  pytest.importorskip('onnxruntime')
  pytest.importorskip('tf2onnx')
  got = run_onnx(os.path.join(deployed['folder'], 'model.onnx'), deployed['crops'])
  assert_matches_jax(got, deployed['jax'])


def test_model_json_records_the_files(deployed):
  with open(os.path.join(deployed['folder'], store.DESCRIPTION_FILE)) as f:
    recorded = json.load(f)['deployment']
  assert recorded == deployed['deployment']
  assert set(recorded) == ({'tflite', 'onnx'} if HAS_ONNX else {'tflite'})
  for entry in recorded.values():
    assert os.path.exists(os.path.join(deployed['folder'], entry['file']))
    assert set(entry['outputs']) == set(deploy_graph.OUTPUT_NAMES)
    assert entry['flip_test'] is False


def test_formats_parse_and_name_the_key():
  assert deploy.parse_formats('onnx, TFLite') == ('orbax', 'onnx', 'tflite')
  assert deploy.parse_formats(('orbax',)) == ('orbax',)
  assert deploy.parse_formats('') == ('orbax',)
  with pytest.raises(ValueError, match=r"config.export.formats.*\['savedmodel'\]"):
    deploy.parse_formats('orbax,savedmodel')


def test_mobilepose_branch_export_errors():
  variables = {'params': {'encoder': {}, 'decoder_0': {}, 'decoder_1': {}},
               'batch_stats': {'encoder': {}, 'decoder_0': {}, 'decoder_1': {}}}
  config = network_config('mobilepose', fau='released', num_branches=2)
  exported = export_student(variables, -1, config)
  assert exported['params']['decoder_0'] is variables['params']['decoder_1']
  assert set(exported['params']) == {'encoder', 'decoder_0'}  # the FAU stays behind.
  assert deployed_model_config(config, -1) == network_config('mobilepose', num_branches=1)
  with pytest.raises(ValueError, match='out of range'):
    export_student(variables, 2, config)
  config['mobilepose']['num_branches'] = 3
  with pytest.raises(ValueError, match=r"decoder_2.*config.model.mobilepose"):
    export_student(variables, 2, config)


@pytest.mark.slow
def test_mode_export_writes_a_mobilepose_student_with_its_deployment_files(tmp_path):
  """`--mode export` (export_trained) on a 2-decoder MobilePose run, with a TFLite file."""
  from configs import default
  from main_runs import tiny_synthetic_config
  from okdhp_jax.experiment import Experiment, RunProgress, export_trained

  config = tiny_synthetic_config(str(tmp_path), num_train=8)
  default.set_network(config, 'mobilepose')
  config.model.mobilepose.num_branches = 2
  config.model.fau = 'released'
  # TFLite only: the `deployed` fixture already holds a MobilePose ONNX file to JAX, and
  # tf2onnx's conversion is the slowest step here.
  config.export.update(checkpoint='latest', branch=1, formats='orbax,tflite')
  workdir = str(tmp_path / 'run')
  trainer = Experiment(config, workdir)
  trainer.state = trainer.state.replace(step=trainer.state.step + 5)
  trainer.save(5, RunProgress(), metric=None)
  trainer.wait_for_saves()

  exporter = Experiment(config, workdir)  # a later start, as `--mode export` makes one
  description = export_trained(exporter, export_dir=str(tmp_path / 'x'))
  variables, saved = store.load_exported(str(tmp_path / 'x'))
  assert (saved['model']['name'], saved['model']['mobilepose']['num_branches'],
          saved['model']['fau']) == ('mobilepose', 1, 'none')
  assert set(variables['params']) == {'encoder', 'decoder_0'}
  np.testing.assert_array_equal(variables['params']['decoder_0']['score']['kernel'],
                                trainer.state.params['decoder_1']['score']['kernel'])
  assert saved['deployment'] == description['deployment']
  files = {entry['file'] for entry in saved['deployment'].values()}
  assert files == {'model.tflite'}
  assert tuple(config.data.input_size) == (SIZE, SIZE)  # runlocal, as photo_crops.
  crops = photo_crops()
  infer = deploy_graph.deployed_function(saved['model'], saved['num_joints'], (SIZE, SIZE),
                                         tuple(config.data.heatmap_size))
  want = dict(zip(deploy_graph.OUTPUT_NAMES,
                  (np.asarray(a) for a in jax.jit(infer)(variables, crops))))
  assert_matches_jax(run_tflite(str(tmp_path / 'x/model.tflite'), crops), want)

  # An export without deployment formats leaves no stale files behind.
  exporter.config.export.formats = 'orbax'
  description = export_trained(exporter, export_dir=str(tmp_path / 'x'))
  assert 'deployment' not in description
  assert not (tmp_path / 'x/model.tflite').exists() and not (tmp_path / 'x/model.onnx').exists()
