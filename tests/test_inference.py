"""The inference API: evaluation's crop and predictions, one compile, clear refusals, COCO out.

One tiny COCO hourglass export (1 stack, 32 channels, 64 px input, random weights) and one
predictor at batch 4 serve the module, so the step compiles once.
"""

from __future__ import annotations

import io
import json
import os

import jax
import ml_collections
import numpy as np
import pytest
from PIL import Image

from okdhp_jax import sharding
from okdhp_jax.codecs import heatmap as heatmap_codec
from okdhp_jax.data import augment, geometry, image_files, meta as meta_lib
from okdhp_jax.data.tf_host import tf
from okdhp_jax.evaluation import coco_eval, predict_step as predict_step_lib
from okdhp_jax.export import store
from okdhp_jax.inference import PosePredictor, images
from okdhp_jax.models import build_model, network_config, plain_hourglass_config
from okdhp_jax.models.initializers import init_variables
from okdhp_jax.tools import predict as predict_tool
from model_helpers import random_batch_stats
import test_images_hostile as hostile

SIZE = 64
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLES = os.path.join(ROOT, 'data_prep', 'samples', 'coco')
IMAGE = os.path.join(SAMPLES, '000000000785.jpg')  # 640 x 425
OTHER = os.path.join(SAMPLES, '000000040083.jpg')
BOXES = np.array([[280.0, 45, 225, 333], [10, 20, 100, 150], [-50, 300, 120, 200]])


def save_export(folder, model_config, *, dataset='coco'):
  num_joints = meta_lib.get_meta(dataset).num_joints
  model = build_model(ml_collections.ConfigDict(model_config), num_joints, (SIZE, SIZE))
  variables = init_variables(model, jax.random.key(0), (1, SIZE, SIZE, 3))
  variables['batch_stats'] = random_batch_stats(variables['batch_stats'])
  store.save_exported(folder, variables, {
      'model': model_config, 'num_joints': num_joints, 'dataset': dataset,
      'input_size': [SIZE, SIZE], 'heatmap_size': [SIZE // 4] * 2})
  return folder


@pytest.fixture(scope='module')
def export(tmp_path_factory):
  config = plain_hourglass_config(1, features=32, depth=2)
  return save_export(str(tmp_path_factory.mktemp('export')), config)


@pytest.fixture(scope='module')
def predictor(export):
  return PosePredictor.from_export(export, batch_size=4)


def evaluation_crop(path, box, max_decode_reduction=8):
  """The crop the eval pipeline makes of a record holding this image and box."""
  with open(path, 'rb') as f:
    encoded = f.read()
  width, height = Image.open(path).size
  center, scale = geometry.box_to_center_scale(box, 1.0)
  parsed = {'image/encoded': tf.constant(encoded), 'image/height': height,
            'image/width': width, 'person/center': tf.constant(center),
            'person/scale': tf.constant(scale), 'person/joints': tf.zeros([17, 2]),
            'person/joints_vis': tf.zeros([17]), 'image/id': 0, 'person/index': 0,
            'person/box': box, 'person/score': 1.0, 'person/area': 1.0}
  example = augment.eval_example(parsed, input_size=(SIZE, SIZE),
                                 max_decode_reduction=max_decode_reduction)
  return example['image'].numpy(), center, scale


def test_crops_and_predictions_are_the_evaluations(predictor, export):
  """The API's crop is the eval pipeline's, and its joints those of the eval predict step."""
  expected = [evaluation_crop(IMAGE, box) for box in BOXES]
  crops = np.stack([e[0] for e in expected])
  centers, scales = np.stack([e[1] for e in expected]), np.stack([e[2] for e in expected])
  np.testing.assert_array_equal(
      images.crop_people(images.open_image(IMAGE), centers, scales, (SIZE, SIZE)), crops)

  model = build_model(ml_collections.ConfigDict(predictor.description['model']), 17,
                      (SIZE, SIZE))
  step = predict_step_lib.make_predict_step(
      ml_collections.ConfigDict({'eval': {'flip_test': True, 'shift_heatmap': True}}), model,
      mesh=sharding.make_mesh(1), flip_perm=meta_lib.COCO.flip_permutation())
  variables, _ = store.load_exported(export)
  padded = np.concatenate([crops, np.zeros_like(crops[:1])])
  heatmaps = np.asarray(step(variables, padded)['ensemble'])[:3]
  codec = heatmap_codec.HeatmapCodec((SIZE, SIZE), (SIZE // 4, SIZE // 4), sigma=2.0)
  crop_keypoints, scores = codec.decode(heatmaps)  # as the evaluation decodes.
  keypoints = geometry.input_to_image(crop_keypoints, centers, scales, (SIZE, SIZE))

  result = predictor.predict(IMAGE, BOXES)
  np.testing.assert_allclose(result.scores, scores, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(result.keypoints, keypoints, atol=1e-3)
  np.testing.assert_array_equal(result.boxes, BOXES)


def test_compiles_once_for_any_number_of_people(predictor):
  """People from several images share batches; the last one is padded, nothing recompiles."""
  predictor.predict(IMAGE)  # compiled by now (the module's first call, or earlier tests).
  compiles = []

  def listen(event, duration, **kwargs):
    if event == '/jax/core/compile/backend_compile_duration':
      compiles.append(duration)

  jax.monitoring.register_event_duration_secs_listener(listen)
  try:
    one = predictor.predict(IMAGE, BOXES[0])
    together = predictor.predict_many([IMAGE, OTHER, IMAGE], [BOXES, None, BOXES[:0]])
    many = predictor.predict(OTHER, np.tile(BOXES[:2], (5, 1)))  # 10 people: 3 batches.
    assert compiles == [] and predictor.compile_count == 1
    jax.jit(lambda x: x * 3)(np.zeros((7, 5, 3)))  # the listener does hear a compile.
    assert len(compiles) == 1
  finally:
    jax.monitoring.unregister_event_duration_listener(listen)
  assert [len(r) for r in together] == [3, 1, 0] and len(one) == 1 and len(many) == 10
  assert together[0].keypoints.shape == (3, 17, 2) and together[0].scores.shape == (3, 17)
  assert together[2].keypoints.shape == (0, 17, 2)
  # A person's joints do not depend on who shares the batch, nor on the row they sit in.
  np.testing.assert_allclose(together[0].scores[0], one.scores[0], rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(together[0].keypoints[0], one.keypoints[0], atol=1e-3)
  np.testing.assert_allclose(many.scores[2], many.scores[0], rtol=1e-5, atol=1e-6)
  whole = predictor.predict(OTHER)
  np.testing.assert_array_equal(whole.boxes, [[0, 0, *Image.open(OTHER).size]])
  np.testing.assert_allclose(together[1].scores, whole.scores, rtol=1e-5, atol=1e-6)
  with pytest.raises(ValueError, match=r'crops must be uint8 \[4, 64, 64, 3\]'):
    predictor.heatmaps(np.zeros((3, SIZE, SIZE, 3), np.uint8))


def test_pixels_bytes_and_png_are_cropped_as_the_records_would_hold_them(predictor, tmp_path):
  """Arrays and PNGs are JPEG-encoded at quality 95, as data_prep writes the records."""
  pixels = np.asarray(Image.open(IMAGE).convert('RGB'))
  png = tmp_path / 'image.png'
  Image.fromarray(pixels).save(png)
  jpeg = image_files.encode_jpeg(pixels)
  from_array, from_png, from_bytes = predictor.predict_many([pixels, str(png), jpeg],
                                                            [BOXES[:1]] * 3)
  np.testing.assert_array_equal(from_array.scores, from_png.scores)
  np.testing.assert_array_equal(from_array.scores, from_bytes.scores)
  grey = predictor.predict(pixels[..., 0], BOXES[:1])
  assert grey.scores.shape == (1, 17)
  with pytest.raises(ValueError, match=r'images\[0\]: pixel arrays must be uint8'):
    predictor.predict(pixels.astype(np.float32))


def test_boxes_outside_the_image_and_missing_files_are_refused_by_name(predictor, tmp_path):
  # Issue 16: a box with no overlap used to give 16 joints scoring near 1 and no warning.
  with pytest.raises(ValueError, match=r'box 1 \(x, y, w, h = 700, 10, 50, 50\) lies entirely '
                                       r'outside .*000000000785.jpg \(640x425 pixels\)'):
    predictor.predict(IMAGE, [[10, 10, 50, 50], [700, 10, 50, 50]])
  with pytest.raises(ValueError, match='outside'):
    predictor.predict(IMAGE, [[-60, 10, 50, 50]])  # ends before x = 0
  with pytest.raises(ValueError, match='positive width'):
    predictor.predict(IMAGE, [[10, 10, 0, 50]])
  with pytest.raises(ValueError, match=r'must be \[N, 4\]'):
    predictor.predict(IMAGE, [[10, 10, 50]])
  missing = str(tmp_path / 'nobody.jpg')
  with pytest.raises(FileNotFoundError, match='nobody.jpg does not exist'):
    predictor.predict_many([IMAGE, missing])
  (tmp_path / 'notes.jpg').write_text('not an image')
  with pytest.raises(ValueError, match='notes.jpg is not a readable image'):
    predictor.predict(str(tmp_path / 'notes.jpg'))
  assert len(predictor.predict(IMAGE, [[600, 400, 100, 100]])) == 1  # partly inside is fine.


def test_detections_file_to_coco_results(predictor, tmp_path):
  detections_file = os.path.join(SAMPLES, 'test_coco_det_AP_H_56.json')
  with open(detections_file) as f:
    detections = json.load(f)
  results = predictor.predict_detections(detections_file, SAMPLES)
  assert 0 < len(results) <= len(detections)
  assert {r['image_id'] for r in results} == {d['image_id'] for d in detections}
  assert all(len(r['keypoints']) == 3 * 17 and r['category_id'] == 1 for r in results)
  metrics = coco_eval.run_cocoeval(coco_eval.load_coco(os.path.join(SAMPLES, 'test_coco.json')),
                                   results, meta_lib.COCO.oks_sigmas)
  assert set(metrics) == set(coco_eval.METRIC_NAMES)
  confident = predictor.predict_detections(detections, SAMPLES, score_threshold=0.9)
  assert len(confident) <= sum(d['score'] >= 0.9 for d in detections) < len(detections)

  with pytest.raises(FileNotFoundError, match=r'image_id 785: none of 000000000785.jpg, 785.jpg'):
    predictor.predict_detections(detections[:2], str(tmp_path))
  with pytest.raises(FileNotFoundError, match='nothing.json does not exist'):
    predictor.predict_detections(str(tmp_path / 'nothing.json'), SAMPLES)
  outside = [dict(detections[0], bbox=[900, 10, 40, 40])]
  with pytest.raises(ValueError, match=r'detections entry 0 \(image_id 785\).*entirely outside'):
    predictor.predict_detections(outside, SAMPLES)
  with pytest.raises(ValueError, match='entry 1 needs an image_id, a bbox of 4 numbers'):
    predictor.predict_detections([detections[0], {'image_id': [785], 'bbox': [1, 2, 3, 4]}],
                                 SAMPLES)
  (tmp_path / 'annotations.json').write_text(json.dumps({'images': []}))
  with pytest.raises(ValueError, match='not a COCO detections file'):
    predictor.predict_detections(str(tmp_path / 'annotations.json'), SAMPLES)


def test_predict_tool_draws_every_box_and_writes_coco_results(export, tmp_path, capsys):
  out = tmp_path / 'pose.png'
  code = predict_tool.main(['--checkpoint', export, '--image', IMAGE, '--box', '280,45,225,333',
                            '--box', '10,20,100,150', '--out', str(out), '--no-compile-cache'])
  printed = capsys.readouterr()
  assert code == 0, printed.err
  assert 'person 1: box x,y,w,h = 10,20,100,150' in printed.out and 'left_ankle' in printed.out
  drawn = np.asarray(Image.open(out))
  assert drawn.shape == (425, 640, 3)  # the full-resolution image
  assert (drawn != np.asarray(Image.open(IMAGE).convert('RGB'))).any()

  code = predict_tool.main(['--checkpoint', export, '--image', IMAGE, '--box', '700,10,50,50',
                            '--no-compile-cache'])
  error = capsys.readouterr().err
  assert code == 1 and '--box (x, y, w, h = 700, 10, 50, 50) lies entirely outside' in error
  assert 'Traceback' not in error

  results = tmp_path / 'keypoints.json'
  code = predict_tool.main(['--checkpoint', export, '--detections',
                            os.path.join(SAMPLES, 'test_coco_det_AP_H_56.json'), '--image-dir',
                            SAMPLES, '--results', str(results), '--batch-size', '4',
                            '--no-compile-cache'])
  assert code == 0, capsys.readouterr().err
  assert 'on 4 images written' in capsys.readouterr().out
  assert len(json.loads(results.read_text())) > 0
  with pytest.raises(SystemExit):
    predict_tool.main(['--checkpoint', export, '--detections', 'dets.json'])


def test_predict_tool_reads_16_bit_images_and_refuses_hostile_ones_in_one_line(
    export, predictor, tmp_path, capsys):
  """Issue 37: a full-range 16-bit PNG is predicted and drawn as the 8-bit picture it holds
  (Pillow alone makes it white); a forged 20000x20000 header and a truncated JPEG are one line
  naming the file, with no traceback and no TensorFlow graph listing."""
  grey = np.asarray(Image.open(IMAGE).convert('L'))
  Image.fromarray(grey).save(tmp_path / 'grey8.png')
  hostile.save_sixteen_bit(tmp_path / 'grey16.png', grey)
  printed, drawn = [], []
  for name in ('grey8.png', 'grey16.png'):
    out = tmp_path / f'drawn_{name}'
    code = predict_tool.main(['--checkpoint', export, '--image', str(tmp_path / name), '--box',
                              '280,45,225,333', '--out', str(out), '--no-compile-cache'])
    result = capsys.readouterr()
    assert code == 0, result.err
    printed.append(result.out.replace(name, ''))
    drawn.append(np.asarray(Image.open(out)))
  assert printed[0] == printed[1]
  np.testing.assert_array_equal(drawn[0], drawn[1])

  (tmp_path / 'bomb.jpg').write_bytes(hostile.forged_jpeg())
  (tmp_path / 'cut.jpg').write_bytes(hostile.truncated_jpeg(IMAGE))
  expected = {'bomb.jpg': 'bomb.jpg is 20000x20000 = 400,000,000 pixels, over the limit of '
                          '89,478,485: set OKDHP_MAX_IMAGE_PIXELS to a larger number to read it',
              'cut.jpg': 'cut.jpg is truncated: its JPEG data'}
  for name, message in expected.items():
    code = predict_tool.main(['--checkpoint', export, '--image', str(tmp_path / name),
                              '--no-compile-cache'])
    error = capsys.readouterr().err.strip()
    assert code == 1 and len(error.splitlines()) == 1, error
    assert error.startswith('predict: error: ') and message in error, error
    with pytest.raises(ValueError, match=f'^{message}'):  # the inference API, from bytes
      predictor.predict_many([(tmp_path / name).read_bytes()], names=[name])


def test_read_jpeg_keeps_jpeg_bytes_and_reencodes_others(tmp_path):
  data, pixels = predict_tool.read_jpeg(IMAGE)
  with open(IMAGE, 'rb') as f:
    assert data == f.read()
  assert pixels.shape == (425, 640, 3)
  Image.fromarray(pixels).save(tmp_path / 'image.png')
  data, _ = predict_tool.read_jpeg(str(tmp_path / 'image.png'))
  assert Image.open(io.BytesIO(data)).format == 'JPEG'


def test_mobilepose_student_export(tmp_path):
  """A one-branch MobilePose (ResNet18, no FAU) as main's export writes it, on MPII joints."""
  config = network_config('mobilepose', backbone='resnet18', num_branches=1)
  predictor = PosePredictor.from_export(save_export(str(tmp_path / 'mp'), config, dataset='mpii'),
                                        batch_size=2)
  result = predictor.predict(IMAGE, BOXES)
  assert result.keypoints.shape == (3, 16, 2) and np.isfinite(result.keypoints).all()
  assert predictor.compile_count == 1


def test_bench_predict_prints_a_row_per_batch(capsys):
  from okdhp_jax.tools import bench_predict
  config = os.path.join(ROOT, 'configs', 'hg2_baseline.py')
  bench_predict.main(['--config', f'{config}:runlocal', '--batch', '2',
                      '--calls', '1'])
  table = capsys.readouterr().out
  assert '| HG2 (32 ch) student | 64x64 | 2 |' in table and 'people/s' in table


def test_an_export_whose_variables_do_not_fit_its_model_json_is_refused(export, tmp_path):
  """Variables of one network beside the model.json of another: named, not a Flax traceback."""
  variables, description = store.load_exported(export)
  model = description['model']
  wider = dict(description, model=dict(model, hourglass=dict(model['hourglass'], features=48)))
  mixed = str(tmp_path / 'mixed')
  store.save_exported(mixed, variables, wider)
  with pytest.raises(ValueError, match=r'the variables do not match the network model.json '
                                       r'describes: params/\S+ is \(.*\) in the file, \(.*\) '
                                       r'for the network'):
    PosePredictor.from_export(mixed, batch_size=4)
  relabelled = str(tmp_path / 'relabelled')
  store.save_exported(relabelled, variables, dict(description, dataset='mpii'))
  with pytest.raises(ValueError, match='num_joints=17, but its dataset .mpii. has 16 joints'):
    PosePredictor.from_export(relabelled, batch_size=4)


def test_the_crop_decodes_at_the_scale_the_export_was_trained_with(export, tmp_path):
  """model.json's max_decode_reduction reaches the crop: a run trained with full-size decoding
  (1) gets full-size crops, not the default reduced decode; a value outside 1/2/4/8 is refused."""
  variables, description = store.load_exported(export)
  full_size = str(tmp_path / 'full_size')
  store.save_exported(full_size, variables, dict(description, max_decode_reduction=1))
  predictor = PosePredictor.from_export(full_size, batch_size=4)
  assert predictor.max_decode_reduction == 1
  source = images.open_image(IMAGE)
  crops = next(predictor._batches([source], [BOXES[:1]])).crops  # pylint: disable=protected-access
  exact, _, _ = evaluation_crop(IMAGE, BOXES[0], max_decode_reduction=1)
  reduced, _, _ = evaluation_crop(IMAGE, BOXES[0])
  np.testing.assert_array_equal(crops[0], exact)
  assert np.abs(exact.astype(int) - reduced).max() > 0  # the box shrinks 4x: the caps differ
  odd = str(tmp_path / 'odd')
  store.save_exported(odd, variables, dict(description, max_decode_reduction=3))
  with pytest.raises(ValueError, match=r"odd: model.json's max_decode_reduction=3: choose one "
                                       r'of \(1, 2, 4, 8\)'):
    PosePredictor.from_export(odd, batch_size=4)
