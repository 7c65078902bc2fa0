r"""Synthetic articulated figures with exact joints, in the MPII layout and record format.

  python -m data_prep.synthetic --out DIR --num 2000 [--num-valid 200] [--size 128] [--seed 0]
      [--overwrite] [--plain] [--figures 1] [--occluders 1] [--occluder-prob 0.35]
      [--background-shapes 5] [--lean-std 12] [--height-range 0.55 0.95] [--front-prob 0.5]

Each image holds one 16-joint figure (MPII joint order) built from proportions of a human body
(head, torso, arms and legs in head units), with random but plausible joint angles, seen from
the front or the back, over a random background of gradients and shapes. Right limbs are warm
colours and left limbs cool ones, so left and right are learnable. A random occluder hides part
of the body: joints under it, or outside the image, get visibility 0 (`--plain` draws neither
background clutter nor occluders). The valid split also gets
a `gt_valid.mat` (pos_gt_src 16x2xN and headboxes_src 2x2xN, 1-based; jnt_missing 16xN) with a
square head box of side = head length, so PCKh runs unchanged. Records are dataset 'mpii'.

The colours make the figures chiral: mirrored, a figure shows warm limbs that a horizontal
flip relabels as left, which no unflipped figure does. Train and test on them without flips
(config.data.flip=False, config.eval.flip_test=False); dataset_info.json says
'sides_by_colour': true, and okdhp_jax.data.prepare refuses flips on such records.

`Difficulty` makes the task harder (configs/study.py uses it): several figures per image (the
labelled target, whose box centres the crop, and unlabelled distractors in the same colours,
behind or in front of it), more occluders and background shapes, more lean, a wider spread of
figure sizes. Its defaults draw exactly the figures above (the same bytes, the same records).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile

import numpy as np
from PIL import Image, ImageDraw
from scipy.io import savemat

from data_prep import common
from okdhp_jax.data import image_files
from okdhp_jax.data import meta as meta_lib
from okdhp_jax.data import records

NUM_JOINTS = 16
# MPII indices.
R_ANK, R_KNE, R_HIP, L_HIP, L_KNE, L_ANK, PELVIS, THORAX, NECK, HEAD = range(10)
R_WRI, R_ELB, R_SHO, L_SHO, L_ELB, L_WRI = range(10, 16)

# (joint a, joint b, width in head units, colour); right limbs warm, left limbs cool.
LIMBS = (
    (R_HIP, R_KNE, 0.55, (200, 60, 40)), (R_KNE, R_ANK, 0.45, (240, 140, 30)),
    (L_HIP, L_KNE, 0.55, (40, 80, 200)), (L_KNE, L_ANK, 0.45, (30, 170, 220)),
    (R_SHO, R_ELB, 0.42, (220, 40, 120)), (R_ELB, R_WRI, 0.35, (250, 200, 40)),
    (L_SHO, L_ELB, 0.42, (100, 40, 200)), (L_ELB, L_WRI, 0.35, (40, 200, 120)),
)
TORSO_COLOUR = (150, 150, 150)
HEAD_COLOUR = (230, 190, 160)


@dataclasses.dataclass(frozen=True)
class Difficulty:
  """What makes a figure hard to read. The defaults draw the original figures, byte for byte.

  Attributes:
    num_figures: figures per image: the labelled target (its box centres the crop) plus
      num_figures - 1 unlabelled distractors of the same kind, placed anywhere.
    front_prob: chance that a distractor stands in front of the target; the target's joints
      it covers get visibility 0. Otherwise it is drawn behind the target.
    occluders: occluder rectangles tried per image (clutter only), each over a random target
      joint with probability occluder_prob; joints under one get visibility 0.
    occluder_prob: see occluders.
    background_shapes: at most this many ellipses and rectangles on a cluttered background.
    lean_std: standard deviation of the torso's lean in degrees (the pose spread).
    height_range: the target's height as a fraction of the image side (the scale spread).
  """

  num_figures: int = 1
  front_prob: float = 0.5
  occluders: int = 1
  occluder_prob: float = 0.35
  background_shapes: int = 5
  lean_std: float = 12.0
  height_range: tuple[float, float] = (0.55, 0.95)

  def __post_init__(self):
    low, high = self.height_range
    if self.num_figures < 1 or self.occluders < 0 or self.background_shapes < 0:
      raise ValueError(f'{self}: num_figures must be >= 1, occluders and background_shapes >= 0')
    if not (0 < low <= high and 0 <= self.front_prob <= 1 and 0 <= self.occluder_prob <= 1
            and self.lean_std >= 0):
      raise ValueError(f'{self}: needs 0 < height_range[0] <= height_range[1], lean_std >= 0 '
                       'and probabilities in [0, 1]')

  @classmethod
  def from_dict(cls, values: dict) -> 'Difficulty':
    values = dict(values)
    if 'height_range' in values:
      values['height_range'] = tuple(float(v) for v in values['height_range'])
    return cls(**values)

  def changed(self) -> dict:
    """The fields that differ from the defaults, JSON-ready (tuples as lists)."""
    default = Difficulty()
    return {f.name: list(v) if isinstance(v, tuple) else v
            for f in dataclasses.fields(self)
            if (v := getattr(self, f.name)) != getattr(default, f.name)}


DEFAULT_DIFFICULTY = Difficulty()
DIFFICULTY_FIELDS = tuple(f.name for f in dataclasses.fields(Difficulty))


def _direction(angle_deg: float) -> np.ndarray:
  """Unit vector at `angle_deg` from straight down (y-down image), counter-clockwise on screen."""
  a = np.deg2rad(angle_deg)
  return np.array([np.sin(a), np.cos(a)])


def make_pose(rng: np.random.Generator, size: int,
              difficulty: Difficulty = DEFAULT_DIFFICULTY) -> tuple[np.ndarray, float]:
  """Random plausible pose: joints [16, 2] in pixels and the head length (unit) in pixels."""
  height = rng.uniform(*difficulty.height_range) * size
  unit = height / 7.5  # figure height in head units.
  joints = np.zeros((NUM_JOINTS, 2))
  lean = rng.normal(0, difficulty.lean_std)
  up = -_direction(lean)                       # torso direction (pelvis -> thorax).
  side = np.array([-up[1], up[0]])             # towards image-right when upright.
  facing = 1.0 if rng.random() < 0.75 else -1.0  # front view: right limbs on image-left.
  joints[PELVIS] = (size * rng.uniform(0.35, 0.65), size * rng.uniform(0.45, 0.65))
  joints[THORAX] = joints[PELVIS] + up * 2.6 * unit
  neck_dir = -_direction(lean + rng.normal(0, 10))
  joints[NECK] = joints[THORAX] + neck_dir * 0.4 * unit
  joints[HEAD] = joints[NECK] + neck_dir * 1.0 * unit
  for sign, sho, elb, wri in ((-facing, R_SHO, R_ELB, R_WRI), (facing, L_SHO, L_ELB, L_WRI)):
    joints[sho] = joints[THORAX] + side * sign * 0.85 * unit
    # Arm angle from hanging down, positive = outward.
    upper = lean + sign * rng.uniform(-25, 170)
    joints[elb] = joints[sho] + _direction(upper) * 1.45 * unit
    lower = upper + sign * rng.uniform(-10, 140) * rng.choice([-1, 1])
    joints[wri] = joints[elb] + _direction(lower) * 1.25 * unit
  for sign, hip, kne, ank in ((-facing, R_HIP, R_KNE, R_ANK), (facing, L_HIP, L_KNE, L_ANK)):
    joints[hip] = joints[PELVIS] + side * sign * 0.5 * unit
    thigh = lean * 0.3 + sign * rng.uniform(-15, 50)
    joints[kne] = joints[hip] + _direction(thigh) * 1.9 * unit
    shin = thigh + rng.uniform(-90, 5) * sign * rng.choice([-1, 1], p=[0.3, 0.7])
    joints[ank] = joints[kne] + _direction(shin) * 1.8 * unit
  joints += rng.normal(0, 0.08 * unit, joints.shape)
  return joints, unit


def _background(rng: np.random.Generator, size: int, max_shapes: int = 5) -> Image.Image:
  a, b = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
  t = np.linspace(0, 1, size)[:, None, None]
  gradient = a * (1 - t) + b * t
  if rng.random() < 0.5:
    gradient = np.transpose(gradient, (1, 0, 2))
  array = np.broadcast_to(gradient, (size, size, 3)).copy()
  array += rng.normal(0, rng.uniform(0, 20), array.shape)
  image = Image.fromarray(np.clip(array, 0, 255).astype(np.uint8))
  draw = ImageDraw.Draw(image)
  for _ in range(rng.integers(0, max_shapes + 1)):
    x0, y0 = rng.uniform(-0.2, 1.0, 2) * size
    w, h = rng.uniform(0.05, 0.5, 2) * size
    colour = tuple(int(v) for v in rng.integers(0, 256, 3))
    shape = draw.ellipse if rng.random() < 0.5 else draw.rectangle
    shape([x0, y0, x0 + w, y0 + h], fill=colour)
  return image


def _plain_background(rng: np.random.Generator, size: int) -> Image.Image:
  colour = tuple(int(v) for v in rng.integers(0, 256, 3))
  return Image.new('RGB', (size, size), colour)


def _figure_shapes(rng: np.random.Generator, joints: np.ndarray, unit: float) -> list:
  """The drawing of one figure as (kind, geometry, fill, line width) in painting order."""
  # Python ints and min/max: np.clip on scalars made this a third of the generation time. The
  # draws (one per channel) are the same as ever, so the figures are too.
  jitter = lambda c: tuple(min(255, max(0, int(v) + int(rng.integers(-25, 26)))) for v in c)
  torso = [joints[R_SHO], joints[L_SHO], joints[L_HIP], joints[R_HIP]]
  shapes = [('polygon', [tuple(p) for p in torso], jitter(TORSO_COLOUR), 0),
            ('line', [tuple(joints[PELVIS]), tuple(joints[THORAX])], jitter(TORSO_COLOUR),
             max(1, int(0.9 * unit))),
            ('line', [tuple(joints[THORAX]), tuple(joints[NECK])], jitter(HEAD_COLOUR),
             max(1, int(0.35 * unit)))]
  head_centre = (joints[NECK] + joints[HEAD]) / 2
  r = 0.5 * np.linalg.norm(joints[HEAD] - joints[NECK])
  shapes.append(('ellipse', [head_centre[0] - 0.8 * r, head_centre[1] - r,
                             head_centre[0] + 0.8 * r, head_centre[1] + r],
                 jitter(HEAD_COLOUR), 0))
  for i in rng.permutation(len(LIMBS)):
    a, b, width, colour = LIMBS[i]
    w = max(1, int(width * unit))
    shapes.append(('line', [tuple(joints[a]), tuple(joints[b])], jitter(colour), w))
    for j in (a, b):
      shapes.append(('ellipse', [joints[j][0] - w / 2, joints[j][1] - w / 2,
                                 joints[j][0] + w / 2, joints[j][1] + w / 2], jitter(colour), 0))
  return shapes


def _paint(draw: ImageDraw.ImageDraw, shapes: list, fill=None) -> None:
  """Paints shapes in their own colours, or all in `fill` (a mask)."""
  for kind, geometry, colour, width in shapes:
    colour = colour if fill is None else fill
    if kind == 'line':
      draw.line(geometry, fill=colour, width=width)
    else:
      getattr(draw, kind)(geometry, fill=colour)


def _distractor(rng: np.random.Generator, size: int, difficulty: Difficulty):
  """(joints [16, 2], unit) of an unlabelled figure with its pelvis anywhere in the image."""
  joints, unit = make_pose(rng, size, difficulty)
  pelvis = np.array([rng.uniform(0.05, 0.95), rng.uniform(0.25, 0.85)]) * size
  return joints + (pelvis - joints[PELVIS]), unit


def _covered(mask: Image.Image, joints: np.ndarray) -> np.ndarray:
  """[16] bool: the joint's pixel is painted in `mask`."""
  array = np.asarray(mask)
  size = array.shape[0]
  xy = np.clip(np.round(joints).astype(int), 0, size - 1)
  return array[xy[:, 1], xy[:, 0]] > 0


def render(rng: np.random.Generator, size: int, clutter: bool = True,
           difficulty: Difficulty = DEFAULT_DIFFICULTY):
  """One figure: (image uint8 [size, size, 3], joints [16, 2], vis [16], head length px).

  clutter=False draws the figure on a plain background with no occluder: the same poses and
  colours with the distractions taken away, for tests that must learn within seconds.
  `difficulty` adds distractor figures, occluders, background shapes and pose and size spread
  (its defaults change nothing). The joints and visibility are the target figure's.
  """
  joints, unit = make_pose(rng, size, difficulty)
  image = (_background(rng, size, difficulty.background_shapes) if clutter
           else _plain_background(rng, size))
  draw = ImageDraw.Draw(image)
  vis = np.ones(NUM_JOINTS, np.float32)
  distractors = [(*_distractor(rng, size, difficulty), rng.random() < difficulty.front_prob)
                 for _ in range(difficulty.num_figures - 1)]
  for other, other_unit, in_front in distractors:
    if not in_front:
      _paint(draw, _figure_shapes(rng, other, other_unit))
  _paint(draw, _figure_shapes(rng, joints, unit))
  front = [(other, other_unit) for other, other_unit, in_front in distractors if in_front]
  if front:
    mask = Image.new('L', (size, size), 0)
    mask_draw = ImageDraw.Draw(mask)
    for other, other_unit in front:
      shapes = _figure_shapes(rng, other, other_unit)
      _paint(draw, shapes)
      _paint(mask_draw, shapes, fill=255)
    vis[_covered(mask, joints)] = 0
  for _ in range(difficulty.occluders if clutter else 0):
    if rng.random() < difficulty.occluder_prob:  # an occluder over part of the body.
      target = joints[rng.integers(NUM_JOINTS)]
      w, h = rng.uniform(0.6, 2.5, 2) * unit
      x0, y0 = target - rng.uniform(0.2, 0.8, 2) * (w, h)
      colour = tuple(int(v) for v in rng.integers(0, 256, 3))
      draw.rectangle([x0, y0, x0 + w, y0 + h], fill=colour)
      hidden = ((joints[:, 0] >= x0) & (joints[:, 0] <= x0 + w) & (joints[:, 1] >= y0)
                & (joints[:, 1] <= y0 + h))
      vis[hidden] = 0
  outside = ((joints[:, 0] < 0) | (joints[:, 0] > size - 1) | (joints[:, 1] < 0)
             | (joints[:, 1] > size - 1))
  vis[outside] = 0
  return np.asarray(image), joints, vis, float(np.linalg.norm(joints[HEAD] - joints[NECK]))


def person_box(joints: np.ndarray, unit: float):
  """Centre [2] and square scale [2] (final, like the converted MPII boxes)."""
  low, high = joints.min(0) - 0.5 * unit, joints.max(0) + 0.5 * unit
  center = (low + high) / 2
  s = max(high - low) * 1.25 / 200.0
  return center, np.array([s, s])


def figure_example(seed: int, index: int, size: int, clutter: bool = True,
                   difficulty: Difficulty = DEFAULT_DIFFICULTY):
  """(PersonExample, head box [2, 2] 0-based) for one figure, deterministic in (seed, index)."""
  rng = np.random.default_rng([seed, index])
  image, joints, vis, head_len = render(rng, size, clutter, difficulty)
  center, scale = person_box(joints, head_len)
  head_centre = (joints[NECK] + joints[HEAD]) / 2
  headbox = np.stack([head_centre - head_len / 2, head_centre + head_len / 2])
  half = 100.0 * scale[0]
  example = records.PersonExample(
      image_bytes=image_files.encode_jpeg(image), image_filename=f'synthetic/{seed}/{index:07d}.jpg',
      image_id=index, image_height=size, image_width=size, person_index=index,
      center=center, scale=scale, joints=joints, joints_vis=vis,
      box=np.array([center[0] - half, center[1] - half, 2 * half, 2 * half]),
      score=1.0, area=(2 * half) ** 2)
  return example, headbox


def write_gt_valid(path: str, joints: np.ndarray, vis: np.ndarray, headboxes: np.ndarray):
  """gt_valid.mat for N people: joints [N, 16, 2], vis [N, 16], headboxes [N, 2, 2], 0-based."""
  names = np.empty((1, NUM_JOINTS), object)
  short = ('rank', 'rkne', 'rhip', 'lhip', 'lkne', 'lank', 'pelv', 'thor', 'neck', 'head',
           'rwri', 'relb', 'rsho', 'lsho', 'lelb', 'lwri')
  for i, name in enumerate(short):
    names[0, i] = np.array([name])
  savemat(path, {
      'pos_gt_src': np.transpose(joints + 1.0, (1, 2, 0)),
      'jnt_missing': np.transpose(1 - vis, (1, 0)).astype(np.uint8),
      'headboxes_src': np.transpose(headboxes + 1.0, (1, 2, 0)),
      'dataset_joints': names,
  })


def candidates(examples, split: str) -> list[common.Candidate]:
  """Wraps ready examples as converter candidates (no image file to read)."""
  return [common.Candidate(f'synthetic {split}[{i}]', '', e.image_filename,
                           lambda image, e=e: e, require_visible=False)
          for i, e in enumerate(examples)]


def generate(out_dir: str, num_train: int, num_valid: int, *, size: int = 128, seed: int = 0,
             clutter: bool = True, difficulty: Difficulty = DEFAULT_DIFFICULTY,
             show_progress: bool = True, overwrite: bool = False) -> dict:
  """Writes train/valid splits (dataset 'mpii') and the valid split's gt_valid.mat.

  `overwrite`: replace records already in out_dir (common.write_records).
  """
  report = common.Report()
  train = [figure_example(seed, i, size, clutter, difficulty)[0] for i in range(num_train)]
  valid_pairs = [figure_example(seed + 1_000_003, i, size, clutter, difficulty)
                 for i in range(num_valid)]
  valid = [e for e, _ in valid_pairs]
  with tempfile.TemporaryDirectory() as tmp:
    gt_path = os.path.join(tmp, 'gt_valid.mat')
    if valid:
      write_gt_valid(gt_path, np.stack([e.joints for e in valid]),
                     np.stack([e.joints_vis for e in valid]),
                     np.stack([h for _, h in valid_pairs]))
    info = {'dataset': 'mpii', 'num_joints': NUM_JOINTS, 'source': 'synthetic', 'seed': seed,
            'image_size': size, 'clutter': clutter, records.SIDES_BY_COLOUR: True}
    if difficulty.changed():
      info['difficulty'] = difficulty.changed()
    return common.write_records(
        out_dir, {'train': candidates(train, 'train'), 'valid': candidates(valid, 'valid')},
        info, report=report, extra_files={'gt_valid.mat': gt_path} if valid else None,
        show_progress=show_progress, overwrite=overwrite)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--out', required=True)
  parser.add_argument('--overwrite', action='store_true',
                      help='replace the records (of any dataset) already in --out')
  parser.add_argument('--num', type=int, default=2000, help='train figures')
  parser.add_argument('--num-valid', '--num_valid', dest='num_valid',
                      type=int, default=200, help='valid figures')
  parser.add_argument('--size', type=int, default=128, help='image side in pixels')
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument('--plain', action='store_true',
                      help='plain backgrounds and no occluders (quicker to learn)')
  default = DEFAULT_DIFFICULTY
  harder = parser.add_argument_group('difficulty (defaults: the original figures)')
  harder.add_argument('--figures', dest='num_figures', type=int, default=default.num_figures,
                      help='figures per image: the labelled target + unlabelled distractors')
  harder.add_argument('--front-prob', '--front_prob', dest='front_prob', type=float,
                      default=default.front_prob,
                      help='chance a distractor stands in front of the target')
  harder.add_argument('--occluders', type=int, default=default.occluders,
                      help='occluders tried per image')
  harder.add_argument('--occluder-prob', '--occluder_prob', dest='occluder_prob', type=float,
                      default=default.occluder_prob, help='chance each occluder is drawn')
  harder.add_argument('--background-shapes', '--background_shapes', dest='background_shapes',
                      type=int, default=default.background_shapes,
                      help='at most this many shapes on a background')
  harder.add_argument('--lean-std', '--lean_std', dest='lean_std', type=float,
                      default=default.lean_std, help='torso lean spread, degrees')
  harder.add_argument('--height-range', '--height_range', dest='height_range', type=float,
                      nargs=2, default=default.height_range, metavar=('LOW', 'HIGH'),
                      help='target height as a fraction of the image side')
  args = parser.parse_args(argv)
  try:
    difficulty = Difficulty.from_dict({name: getattr(args, name) for name in DIFFICULTY_FIELDS})
    info = generate(args.out, args.num, args.num_valid, size=args.size, seed=args.seed,
                    clutter=not args.plain, difficulty=difficulty, overwrite=args.overwrite)
  except (ValueError, OSError) as error:  # e.g. --out holds other records
    print(f'error: {error}', file=sys.stderr)
    return 1
  print(f'wrote {info["splits"]} synthetic figures to {args.out}')
  return 0


if __name__ == '__main__':
  assert meta_lib.MPII.num_joints == NUM_JOINTS
  sys.exit(main())
