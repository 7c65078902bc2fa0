r"""Draws crops as training sees them: each with its joints and, beside it, its target heatmaps.

  python -m okdhp_jax.tools.browse_data --records DIR --split train --count 16 --out grid.png
  python -m okdhp_jax.tools.browse_data --records DIR --split valid --out eval_crops.png
  python -m okdhp_jax.tools.browse_data --records DIR --config configs/coco_hg4.py --seed 3 \
      --columns 4 --out grid.png

The crops come from the project's own tf.data pipeline (okdhp_jax/data/pipeline.py): for the
config's train split, the first COUNT crops of the training stream of --seed (what the first
steps of a one-process run train on: scale, rotation, flip and half-body drawn as training
draws them); for any other split (valid, valid_det), the unaugmented evaluation crops in record
order. Joints are drawn in the dataset meta's side colours (left, right, centre; invisible
joints and joints outside the crop are not drawn), and the heatmaps beside each crop are the
targets the train step renders (okdhp_jax/codecs/heatmap.py): the maximum over joints, coloured
by the side of the joint it belongs to, over the dimmed crop, with the joints as white dots.

Without --config, the settings are those of the config the project trains such records with:
configs/default.py for MPII, configs/coco_hg4.py for COCO and CrowdPose, configs/synthetic.py
for records whose sides are told apart by colour (generated figures, alone or in the bundled
MPII data; no flips). config.data.detections is ignored: pass --split valid_det for detection
boxes.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import os
import sys

import numpy as np

TOOL = 'browse_data'
BACKGROUND = (24, 24, 24)  # visualize.grid's canvas colour
GAP = 2                    # between a crop and its heatmaps
LEGEND_LINE = 14
# Crops are enlarged by a whole factor until their short side is at least this (a 64x64 crop
# to 192x192; 256x192 ones stay as they are).
MIN_SIDE = 160
# The config each kind of records trains with when --config is not given (configs/ files).
DEFAULT_CONFIGS = {'mpii': 'default.py', 'coco': 'coco_hg4.py', 'crowdpose': 'coco_hg4.py',
                   'sides_by_colour': 'synthetic.py'}


class BrowseError(ValueError):
  """Bad input the command line names (printed as one line)."""


def parse_args(argv=None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(prog=f'python -m okdhp_jax.tools.{TOOL}',
                                   description=__doc__.split('\n\n')[0])
  parser.add_argument('--records', help='folder of converted records (dataset_info.json and '
                      'shards); default: the --config file\'s config.data.records_dir')
  parser.add_argument('--split', default='train', help='split to draw: the train split '
                      'augmented, any other one as evaluation crops (default: train)')
  parser.add_argument('--count', type=int, default=16, help='crops to draw (default: 16)')
  parser.add_argument('--columns', type=int, default=4, help='crops per row (default: 4)')
  parser.add_argument('--config', help='training config file[:arg] whose config.data '
                      '(augmentation, input and heatmap size, sigma) is used; default: the one '
                      'the records train with: configs/default.py (MPII), configs/coco_hg4.py '
                      '(COCO, CrowdPose), configs/synthetic.py (generated figures)')
  parser.add_argument('--seed', type=int, help='augmentation and shuffle seed (default: the '
                      "config's seed, as training uses it)")
  parser.add_argument('--out', default='browse_data.png', help='PNG to write (default: browse_data.png)')
  return parser.parse_args(argv)


# ---------------------------------------------------------------- checks and config

def check_args(args: argparse.Namespace) -> None:
  """BrowseError for bad numbers or an --out that cannot be written (before TF loads)."""
  from okdhp_jax import console
  if args.count < 1:
    raise BrowseError(f'--count must be at least 1; got {args.count}')
  if args.columns < 1:
    raise BrowseError(f'--columns must be at least 1; got {args.columns}')
  if os.path.isdir(args.out):
    raise BrowseError(f'--out {args.out} is a folder; name the PNG file to write')
  try:
    console.check_writable(os.path.dirname(os.path.abspath(args.out)), '--out')
  except console.UnwritableFolderError as error:
    raise BrowseError(str(error)) from None


def read_info(records_dir: str) -> dict:
  """dataset_info.json of --records, or BrowseError saying what the folder lacks."""
  from okdhp_jax.data import records
  if not os.path.isdir(records_dir):
    raise BrowseError(f'--records {records_dir} does not exist (or is not a folder)')
  if not os.path.exists(os.path.join(records_dir, records.DATASET_INFO)):
    raise BrowseError(
        f'--records {records_dir} is not a records folder: it has no {records.DATASET_INFO}; '
        'make one with python -m data_prep.mpii, data_prep.coco or data_prep.synthetic')
  return records.read_dataset_info(records_dir)


def default_config_file(info: dict) -> str:
  """configs/ file the records train with (DEFAULT_CONFIGS), as a path."""
  from okdhp_jax.data import records
  key = 'sides_by_colour' if info.get(records.SIDES_BY_COLOUR) else info.get('dataset')
  if key not in DEFAULT_CONFIGS:
    raise BrowseError(f'the records hold {info.get("dataset")!r} people, which no config here '
                      'trains on; pass --config')
  folder = os.path.dirname(importlib.util.find_spec('configs').origin)
  return os.path.join(folder, DEFAULT_CONFIGS[key])


def load_config(args: argparse.Namespace):
  """(config, records info, what the settings are called), checked against the records."""
  from okdhp_jax.data import checks
  from okdhp_jax.tools import config_file
  config = None
  if args.config:
    try:
      config = config_file.load_config(args.config)
    except FileNotFoundError as error:
      raise BrowseError(str(error)) from None
  records_dir = args.records or (config.data.records_dir if config else None)
  if not records_dir:
    raise BrowseError('name the records: --records DIR (or a --config whose '
                      'config.data.records_dir holds them)')
  info = read_info(records_dir)
  source = args.config
  if config is None:
    path = default_config_file(info)
    source = f'configs/{os.path.basename(path)}'
    config = config_file.load_config(path)
    config.data.dataset = info.get('dataset')  # CrowdPose trains with COCO's settings.
  if (info.get('dataset'), info.get('num_joints')) != (
      config.data.dataset, _num_joints(config.data.dataset)):
    raise BrowseError(
        f'--records {records_dir} holds {info.get("dataset")!r} records '
        f'({info.get("num_joints")} joints) but --config {args.config} reads '
        f'config.data.dataset={config.data.dataset!r}')
  config.data.records_dir = records_dir
  config.data.detections = ''  # --split names the split read, '_det' included.
  if args.split not in info.get('splits', {}):
    raise BrowseError(f'--split {args.split!r} is not in --records {records_dir}; it has '
                      f'{sorted(info.get("splits", {}))}')
  try:
    checks.check_flips(config)
  except ValueError as error:
    if args.split == config.data.train_split and config.data.flip:
      print(f'{TOOL}: warning: training refuses this config on these records ({error}); '
            'drawn anyway', file=sys.stderr)
  return config, info, source


def _num_joints(dataset: str):
  from okdhp_jax.data import meta as meta_lib
  try:
    return meta_lib.get_meta(dataset).num_joints
  except ValueError:
    return None


def describe(data_config, augmented: bool) -> str:
  """One line: the augmentation (or none) and the targets."""
  d = data_config
  size = 'x'.join(str(int(s)) for s in d.input_size)
  heat = 'x'.join(str(int(s)) for s in d.heatmap_size)
  if augmented:
    parts = [f'scale 1 +- {d.scale_factor:g}' if d.scale_factor else 'no scaling',
             (f'rotation sd {d.rotation_factor:g} deg (p {d.rotation_prob:g})'
              if d.rotation_factor and d.rotation_prob else 'no rotation'),
             'flip p 0.5' if d.flip else 'no flip']
    if d.half_body_prob:
      parts.append(f'half body p {d.half_body_prob:g}')
    crops = 'augmented: ' + ', '.join(parts)
  else:
    crops = 'unaugmented evaluation crops'
  return f'{size} crops, {crops}; targets {heat}, sigma {d.sigma:g}'


# ---------------------------------------------------------------- crops and targets

def read_crops(config, meta, split: str, count: int, seed: int) -> tuple[dict, bool]:
  """The first `count` crops of `split` from the project's pipeline, and whether augmented.

  Returns:
    ({'image' uint8 [N, H, W, 3], 'joints' [N, J, 2] input pixels, 'joints_vis' [N, J]}, bool);
    N = count for the train split (an endless stream), at most count for the others.
  """
  from okdhp_jax.data import pipeline
  files = pipeline.split_files(config.data, split)
  augmented = split == config.data.train_split
  if augmented:
    dataset = pipeline.build_train_dataset(config.data, meta, local_batch_size=count, seed=seed)
  else:
    dataset = pipeline.build_eval_dataset(config.data, meta, split=split, local_batch_size=count)
  batch = next(pipeline.numpy_batches(dataset.take(1), files=files, split=split))
  keep = batch['valid'] if 'valid' in batch else np.ones(len(batch['image']), bool)
  return {k: np.asarray(batch[k])[keep] for k in ('image', 'joints', 'joints_vis')}, augmented


def target_heatmaps(data_config, joints, joints_vis) -> np.ndarray:
  """float32 [N, h, w, J]: the train step's targets (HeatmapCodec.encode) of these joints."""
  from okdhp_jax.codecs.heatmap import HeatmapCodec
  heatmaps, _ = HeatmapCodec.from_config(data_config).encode(joints, joints_vis)
  return np.asarray(heatmaps)


# ---------------------------------------------------------------- drawing

def enlargement(input_size, min_side: int) -> int:
  """Whole factor that makes the crop's short side at least min_side (as draw_crops does)."""
  return max(1, -(-min_side // min(input_size)))


def _sampling(size: int, factor: int, stride: float, heat_size: int) -> np.ndarray:
  """[size * factor, heat_size] bilinear weights: display pixel -> heatmap pixels.

  Display pixel X is input pixel (X + 0.5) / factor - 0.5; heatmap pixel u sits on input pixel
  u * stride (the codec's mu = int(x / stride + 0.5)), so blobs land under their joints.
  """
  u = ((np.arange(size * factor) + 0.5) / factor - 0.5) / stride
  u = np.clip(u, 0, heat_size - 1)
  low = np.clip(np.floor(u).astype(int), 0, max(heat_size - 2, 0))
  frac = u - low
  weights = np.zeros((len(u), heat_size))
  rows = np.arange(len(u))
  np.add.at(weights, (rows, low), 1 - frac)
  np.add.at(weights, (rows, np.minimum(low + 1, heat_size - 1)), frac)
  return weights


def heatmap_panel(crop_big: np.ndarray, heatmaps: np.ndarray, factor: int, meta,
                  side_colors) -> np.ndarray:
  """uint8 [kH, kW, 3]: max over joints of heatmaps [h, w, J] in its joint's side colour,
  blended over the dimmed enlarged crop."""
  big_h, big_w = crop_big.shape[:2]
  heat_h, heat_w = heatmaps.shape[:2]
  in_h, in_w = big_h // factor, big_w // factor
  rows = _sampling(in_h, factor, in_h / heat_h, heat_h)
  columns = _sampling(in_w, factor, in_w / heat_w, heat_w)
  maps = np.einsum('Yh,hwj->Ywj', rows, heatmaps)  # separable: rows, then columns
  maps = np.einsum('Ywj,Xw->YXj', maps, columns)
  value = np.clip(maps.max(axis=-1), 0.0, 1.0)[..., None]
  palette = np.array([side_colors[s] for s in meta.joint_sides], np.float64)
  colour = palette[maps.argmax(axis=-1)]
  dimmed = crop_big.astype(np.float64) * 0.35
  return np.round(dimmed * (1 - value) + colour * value).astype(np.uint8)


def draw_tile(crop, joints, joints_vis, heatmaps, meta, factor: int) -> np.ndarray:
  """uint8 [kH, 2 kW + GAP, 3]: the enlarged crop with its skeleton | its target heatmaps."""
  from PIL import Image

  from okdhp_jax.evaluation import visualize
  height, width = crop.shape[:2]
  big = np.asarray(Image.fromarray(crop).resize((width * factor, height * factor),
                                                Image.BILINEAR))
  xy = (np.asarray(joints, np.float64) + 0.5) * factor - 0.5  # pixel centres at integers
  posed = visualize.draw_pose(big, xy, meta, scores=joints_vis, score_threshold=0.5,
                              radius=max(2, round(factor * 1.5)), width=max(2, factor))
  panel = heatmap_panel(big, heatmaps, factor, meta, visualize.SIDE_COLORS)
  dots = dataclasses.replace(meta, skeleton=())  # joints only: blobs should sit under them
  panel = visualize.draw_pose(panel, xy, dots, scores=joints_vis, score_threshold=0.5,
                              color=visualize.GT_COLOR, radius=1)
  gap = np.full((height * factor, GAP, 3), BACKGROUND, np.uint8)
  return np.concatenate([posed, gap, panel], axis=1)


def _wrap(draw, text: str, width: int) -> list[str]:
  lines, line = [], ''
  for word in text.split(' '):
    trial = f'{line} {word}'.strip()
    if line and draw.textlength(trial) > width:
      lines.append(line)
      line = word
    else:
      line = trial
  return lines + [line]


def add_legend(image: np.ndarray, caption: str) -> np.ndarray:
  """`image` with a strip below: the side colours, then `caption` wrapped to its width."""
  from PIL import Image, ImageDraw

  from okdhp_jax.evaluation import visualize
  pad = 4
  probe = ImageDraw.Draw(Image.new('RGB', (1, 1)))
  lines = _wrap(probe, caption, image.shape[1] - 2 * pad)
  canvas = Image.new('RGB', (image.shape[1], image.shape[0] + (len(lines) + 1) * LEGEND_LINE
                             + 2 * pad), BACKGROUND)
  canvas.paste(Image.fromarray(image), (0, 0))
  draw = ImageDraw.Draw(canvas)
  x, y = pad, image.shape[0] + pad
  for text, color in (('left joints', visualize.SIDE_COLORS['left']),
                      ('right', visualize.SIDE_COLORS['right']),
                      ('centre', visualize.SIDE_COLORS['centre']),
                      ('beside each crop: its target heatmaps (max over joints, in the '
                       "joint's colour), joints as white dots", visualize.GT_COLOR)):
    draw.rectangle([x, y + 2, x + 10, y + 10], fill=color)
    draw.text((x + 14, y), text, fill=(230, 230, 230))
    x += 14 + int(draw.textlength(text)) + 12
  for line in lines:
    y += LEGEND_LINE
    draw.text((pad, y), line, fill=(230, 230, 230))
  return np.asarray(canvas)


def draw_grid(crops: dict, heatmaps: np.ndarray, meta, *, columns: int, caption: str,
              min_side: int) -> np.ndarray:
  """uint8 picture: one tile per crop (draw_tile) in visualize.grid's rows, legend below."""
  from okdhp_jax.evaluation import visualize
  factor = enlargement(crops['image'].shape[1:3], min_side)
  tiles = [draw_tile(crops['image'][i], crops['joints'][i], crops['joints_vis'][i],
                     heatmaps[i], meta, factor) for i in range(len(crops['image']))]
  return add_legend(visualize.grid(tiles, columns=columns, legend=False), caption)


# ---------------------------------------------------------------- command

def main(argv=None) -> int:
  args = parse_args(argv)
  try:
    check_args(args)
    config, info, source = load_config(args)
    from okdhp_jax.data import meta as meta_lib
    from okdhp_jax.evaluation import visualize
    meta = meta_lib.get_meta(config.data.dataset)
    seed = config.seed if args.seed is None else args.seed
    records_dir = config.data.records_dir
    print(f'{TOOL}: reading {args.count} {args.split!r} crops of {records_dir} '
          f'({meta.name}, {info["splits"][args.split]} records) with the data settings of '
          f'{source}, seed {seed}', flush=True)
    crops, augmented = read_crops(config, meta, args.split, args.count, seed)
    if not len(crops['image']):
      raise BrowseError(f'--split {args.split!r} of {records_dir} yields no crops')
    heatmaps = target_heatmaps(config.data, crops['joints'], crops['joints_vis'])
    caption = (f'{records_dir} ({meta.name}), split {args.split}, seed {seed}, settings of '
               f'{source}: {describe(config.data, augmented)}')
    picture = draw_grid(crops, heatmaps, meta, columns=args.columns, caption=caption,
                        min_side=MIN_SIDE)
    path = visualize.save_png(args.out, picture)
  except (FileNotFoundError, ValueError) as error:
    print(f'{TOOL}: error: {error}', file=sys.stderr)
    return 1
  visible = int((crops['joints_vis'] > 0.5).sum())
  print(f'{TOOL}: wrote {path} ({picture.shape[1]}x{picture.shape[0]} px): '
        f'{len(crops["image"])} {"augmented" if augmented else "evaluation"} crops, '
        f'{visible} visible joints of {crops["joints_vis"].size}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
