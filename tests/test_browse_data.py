"""tools/browse_data: the pipeline's crops drawn with their joints where the pipeline put them,
target blobs under the joints, and bad input refused in one line."""

from __future__ import annotations

import os

import ml_collections
import numpy as np
import pytest
from PIL import Image

from data_prep import mpii, synthetic
from okdhp_jax.data import meta as meta_lib
from okdhp_jax.evaluation import visualize
from okdhp_jax.tools import browse_data
from sample_data import MPII_SAMPLES, mpii_annotations

PAD = 4  # visualize.grid's spacing around tiles


@pytest.fixture(scope='module')
def folders(tmp_path_factory):
  """Real MPII people (the 5 samples in both splits) and generated figures (sides by colour)."""
  root = tmp_path_factory.mktemp('browse')
  real = str(root / 'mpii')
  mpii.convert(mpii_annotations(root / 'annotations'), MPII_SAMPLES, real, show_progress=False)
  figures = str(root / 'figures')
  synthetic.generate(figures, 4, 3, size=64, seed=1, show_progress=False)
  return {'mpii': real, 'figures': figures}


def _pipeline_crops(argv):
  """What the tool reads for these arguments, read again through its own config choice."""
  args = browse_data.parse_args(argv)
  config, _, _ = browse_data.load_config(args)
  meta = meta_lib.get_meta(config.data.dataset)
  crops, augmented = browse_data.read_crops(config, meta, args.split, args.count,
                                            config.seed if args.seed is None else args.seed)
  return config, meta, crops, augmented


def _check_grid(path, config, meta, crops, columns):
  """Grid size, and a dot of each visible joint's side colour where the pipeline put it."""
  picture = np.asarray(Image.open(path).convert('RGB'))
  factor = browse_data.enlargement(config.data.input_size, browse_data.MIN_SIDE)
  height, width = (int(s) * factor for s in config.data.input_size)
  tile_w = 2 * width + browse_data.GAP
  count = len(crops['image'])
  rows, shown_columns = -(-count // columns), min(columns, count)
  assert picture.shape[1] == shown_columns * (tile_w + PAD) + PAD
  assert rows * (height + PAD) + PAD + 2 * browse_data.LEGEND_LINE <= picture.shape[0] <= (
      rows * (height + PAD) + PAD + 6 * browse_data.LEGEND_LINE)
  found = total = 0
  for i in range(count):
    row, column = divmod(i, columns)
    top, left = PAD + row * (height + PAD), PAD + column * (tile_w + PAD)
    for j in np.flatnonzero(crops['joints_vis'][i] > 0.5):
      x, y = np.round((crops['joints'][i, j] + 0.5) * factor - 0.5).astype(int)
      near = picture[top + max(0, y - 3):top + y + 4, left + max(0, x - 3):left + x + 4]
      colour = visualize.SIDE_COLORS[meta.joint_sides[j]]
      found += bool(np.all(near == np.array(colour, np.uint8), axis=-1).any())
      total += 1
  assert total > 0 and found >= 0.9 * total, (found, total)  # a later dot may cover one
  return picture


def test_augmented_train_crops_show_the_pipelines_joints(folders, tmp_path, capsys):
  out = str(tmp_path / 'train.png')
  argv = ['--records', folders['mpii'], '--split', 'train', '--count', '5', '--columns', '3',
          '--seed', '3', '--out', out]
  assert browse_data.main(argv) == 0
  printed = capsys.readouterr().out
  assert 'configs/default.py' in printed and f'wrote {out}' in printed
  config, meta, crops, augmented = _pipeline_crops(argv)
  assert augmented and config.data.flip and config.data.rotation_factor > 0
  assert len(crops['image']) == 5
  _check_grid(out, config, meta, crops, columns=3)


def test_evaluation_crops_of_figures(folders, tmp_path, capsys):
  out = str(tmp_path / 'pictures' / 'valid.png')
  argv = ['--records', folders['figures'], '--split', 'valid', '--count', '8', '--out', out]
  assert browse_data.main(argv) == 0
  assert 'configs/synthetic.py' in capsys.readouterr().out  # figures: no flips
  config, meta, crops, augmented = _pipeline_crops(argv)
  assert not augmented and len(crops['image']) == 3  # the whole split, padding left out
  _check_grid(out, config, meta, crops, columns=4)


def test_target_blobs_sit_under_their_joints():
  """One joint per side on a black 64x64 crop, 16x16 targets: each blob's brightest pixel is
  within a heatmap stride of its joint, in its side's colour."""
  meta = meta_lib.MPII
  joints = np.full((1, 16, 2), 30.0)
  vis = np.zeros((1, 16))
  left, right = meta.joint_names.index('l_wrist'), meta.joint_names.index('r_wrist')
  joints[0, left], joints[0, right] = (13.0, 22.0), (47.0, 41.0)
  vis[0, [left, right]] = 1
  data = ml_collections.ConfigDict(dict(input_size=(64, 64), heatmap_size=(16, 16), sigma=1.0))
  heatmaps = browse_data.target_heatmaps(data, joints, vis)
  assert heatmaps.shape == (1, 16, 16, 16)
  factor = 3
  panel = browse_data.heatmap_panel(np.zeros((192, 192, 3), np.uint8), heatmaps[0], factor,
                                    meta, visualize.SIDE_COLORS)
  for j, side in ((left, 'left'), (right, 'right')):
    x, y = (joints[0, j] + 0.5) * factor - 0.5
    window = panel[int(y) - 20:int(y) + 21, int(x) - 20:int(x) + 21].astype(int).sum(-1)
    dy, dx = np.unravel_index(window.argmax(), window.shape)
    assert abs(dx - 20) <= 2 * factor and abs(dy - 20) <= 2 * factor  # half a stride of 4
    peak = panel[int(y) - 20 + dy, int(x) - 20 + dx]
    np.testing.assert_allclose(peak, visualize.SIDE_COLORS[side], atol=40)


@pytest.mark.parametrize('case', ['missing', 'not records', 'split', 'count', 'out'])
def test_bad_input_is_one_line_naming_it(folders, tmp_path, capsys, case):
  (tmp_path / 'a_file').write_text('')
  argv = {'missing': ['--records', str(tmp_path / 'nowhere')],
          'not records': ['--records', str(tmp_path)],
          'split': ['--records', folders['mpii'], '--split', 'test'],
          'count': ['--records', folders['mpii'], '--count', '0'],
          'out': ['--records', folders['mpii'], '--out', str(tmp_path / 'a_file' / 'x.png')],
          }[case]
  if '--out' not in argv:
    argv += ['--out', str(tmp_path / 'grid.png')]
  assert browse_data.main(argv) == 1
  error = capsys.readouterr().err
  assert error.startswith('browse_data: error: ') and error.count('\n') == 1
  assert {'missing': 'nowhere does not exist', 'not records': 'is not a records folder',
          'split': "--split 'test' is not in", 'count': '--count must be at least 1',
          'out': 'cannot be written'}[case] in error
  assert not os.path.exists(tmp_path / 'grid.png')
