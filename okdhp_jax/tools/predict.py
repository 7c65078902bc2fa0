r"""Runs an exported pose network on one image: prints joints and scores, draws the skeleton.

  python -m okdhp_jax.tools.predict --checkpoint runs/hg4/export --image person.jpg \
      [--box x,y,w,h] --out pose.png

The person box defaults to the whole image. The crop, flip test and decoding are the ones the
evaluation uses (tf.data crop op, flip-test predict step, the heatmap codec's decoding).
"""

from __future__ import annotations

import argparse
import io
import sys

import numpy as np


def parse_box(text: str) -> tuple[float, float, float, float]:
  try:
    x, y, w, h = (float(v) for v in text.split(','))
  except ValueError:
    raise ValueError(f'--box {text!r} must be four numbers x,y,w,h') from None
  if w <= 0 or h <= 0:
    raise ValueError(f'--box {text!r} needs a positive width and height')
  return x, y, w, h


def read_jpeg(path: str) -> tuple[bytes, np.ndarray]:
  """JPEG bytes for the crop op (other formats re-encoded at quality 95) and the RGB pixels."""
  from PIL import Image, UnidentifiedImageError
  try:
    with open(path, 'rb') as f:
      data = f.read()
    image = Image.open(io.BytesIO(data))
    image.load()
  except FileNotFoundError:
    raise FileNotFoundError(f'--image {path} does not exist') from None
  except (UnidentifiedImageError, OSError) as error:
    raise ValueError(f'--image {path} is not a readable image ({error})') from None
  pixels = np.asarray(image.convert('RGB'))
  if image.format != 'JPEG':
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format='JPEG', quality=95)
    data = buffer.getvalue()
  return data, pixels


def predict(checkpoint: str, image_path: str, box=None):
  """Returns (joints [J, 2] image pixels, scores [J], meta, RGB image)."""
  import ml_collections

  from okdhp_jax import sharding
  from okdhp_jax.codecs import heatmap as heatmap_codec
  from okdhp_jax.data import augment, geometry, meta as meta_lib
  from okdhp_jax.data.tf_host import tf
  from okdhp_jax.evaluation import predict_step as predict_step_lib
  from okdhp_jax.export import store
  from okdhp_jax.models import build_model

  variables, description = store.load_exported(checkpoint)
  meta = meta_lib.get_meta(description.get('dataset', 'mpii'))
  input_size = tuple(description.get('input_size', (256, 256)))
  encoded, pixels = read_jpeg(image_path)
  height, width = pixels.shape[:2]
  box = box or (0.0, 0.0, float(width), float(height))
  center, scale = geometry.box_to_center_scale(box, input_size[1] / input_size[0])
  matrix = augment.affine_matrix(tf.constant(center), tf.constant(scale), 0.0, input_size)
  crop = augment.to_uint8(augment.crop_image(tf.constant(encoded), height, width, matrix,
                                             input_size))
  model = build_model(ml_collections.ConfigDict(description['model']), meta.num_joints,
                      input_size)
  eval_config = ml_collections.ConfigDict({'eval': {'flip_test': True, 'shift_heatmap': True}})
  predict_step = predict_step_lib.make_predict_step(eval_config, model,
                                                    mesh=sharding.make_mesh(1),
                                                    flip_perm=meta.flip_permutation())
  heatmaps = np.asarray(predict_step(variables, crop.numpy()[None])['ensemble'])
  joints, scores = heatmap_codec.heatmaps_to_image_coords(heatmaps, center[None], scale[None])
  return joints[0], scores[0], meta, pixels


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--checkpoint', required=True, help='export folder (model.json + variables)')
  parser.add_argument('--image', required=True)
  parser.add_argument('--box', default=None, help='person box x,y,w,h in pixels (default: image)')
  parser.add_argument('--out', default=None, help='PNG with the predicted skeleton drawn')
  parser.add_argument('--score-threshold', type=float, default=0.2,
                      help='joints scoring below this are not drawn')
  args = parser.parse_args(argv)
  try:
    box = parse_box(args.box) if args.box else None
    joints, scores, meta, pixels = predict(args.checkpoint, args.image, box)
  except (FileNotFoundError, ValueError) as error:
    print(f'predict: error: {error}', file=sys.stderr)
    return 1
  print(f'{"joint":<16}{"x":>9}{"y":>9}{"score":>8}')
  for name, (x, y), score in zip(meta.joint_names, joints, scores):
    print(f'{name:<16}{x:9.1f}{y:9.1f}{score:8.3f}')
  if args.out:
    from okdhp_jax.evaluation import visualize
    drawn = visualize.draw_pose(pixels, joints, meta, scores=scores,
                                score_threshold=args.score_threshold, radius=4, width=3)
    visualize.save_png(args.out, drawn)
    print(f'Skeleton drawn to {args.out}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
