"""Every config loads, composes from the default, and describes a valid model."""

from __future__ import annotations

import glob
import importlib
import os

import pytest

from okdhp_jax.data import meta as meta_lib
from okdhp_jax.models import validate_model_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG_NAMES = sorted(
    os.path.basename(p)[:-3] for p in glob.glob(os.path.join(ROOT, 'configs', '*.py'))
    if os.path.basename(p) not in ('__init__.py', 'common.py'))
PAPER_VARIANTS = {
    'hg2', 'hg4', 'hg8', 'hg4_unbalanced', 'hg2_baseline', 'hg4_baseline', 'hg8_baseline',
    'hg4_fpd', 'coco_hg4', 'mobilepose_resnet18', 'mobilepose_mobilenetv2',
    'mobilepose_shufflenetv2', 'mobilepose_resnet18_baseline', 'mobilepose_mobilenetv2_baseline',
    'mobilepose_shufflenetv2_baseline',
}


def load(name, arg=None):
  return importlib.import_module(f'configs.{name}').get_config(arg)


def test_every_paper_variant_has_a_config():
  assert PAPER_VARIANTS <= set(CONFIG_NAMES)


@pytest.mark.parametrize('name', CONFIG_NAMES)
@pytest.mark.parametrize('arg', [None, 'runlocal'])
def test_config_describes_a_valid_model(name, arg):
  config = load(name, arg)
  meta = meta_lib.get_meta(config.data.dataset)
  validate_model_config(config.model, meta.num_joints, tuple(config.data.input_size))
  module = importlib.import_module(f'configs.{name}')
  assert f'configs/{name}.py' in module.__doc__, 'the docstring must hold the command'


def test_paper_structures():
  assert load('hg4').model.num_shared_stacks == 2
  assert tuple(load('hg4').model.branch_stacks) == (2, 2, 2)
  assert tuple(load('hg4_unbalanced').model.branch_stacks) == (2, 4, 6)
  hg8 = load('hg8')
  assert hg8.model.num_shared_stacks == 4 and tuple(hg8.model.branch_stacks) == (4, 4, 4)
  base = load('hg8_baseline')
  assert (base.model.num_shared_stacks, tuple(base.model.branch_stacks)) == (0, (8,))
  assert base.model.fau == 'none' and base.loss.kd_weight == 0.0
  assert load('hg4_fpd').trainer == 'fpd'
  coco = load('coco_hg4')
  assert tuple(coco.data.input_size) == (256, 192) and tuple(coco.data.heatmap_size) == (64, 48)
  assert coco.data.scale_factor == 0.3 and coco.data.rotation_factor == 40.0
  default = load('hg4')
  assert default.optim.learning_rate == 2.5e-4 and tuple(default.optim.lr_decay_epochs) == (90, 120)
  assert default.train.batch_size == 16 and default.train.num_epochs == 150
  assert default.loss.kd_weight == 2.0 and default.loss.ensemble_weight == 1.0


def test_runlocal_points_at_bundled_samples():
  config = load('hg4', 'runlocal')
  assert config.data.bundled == 'mpii'
  assert tuple(config.data.input_size) == (64, 64)
  assert not config.data.flip and not config.eval.flip_test  # mostly synthetic figures.
  coco = load('coco_hg4', 'runlocal')
  assert coco.data.bundled == 'coco'
  assert coco.data.flip and coco.eval.flip_test  # real people only.
  assert load('synthetic').data.bundled == 'synthetic'


# Parameter counts of the released code's networks (its hourglass_okd_share_less.py at 16
# joints, FAU included), counted in PyTorch.
RELEASED_PARAMS = {'hg2_released': 24_627_792, 'hg4': 30_915_696, 'hg8_released': 43_491_504}


@pytest.mark.parametrize('name', sorted(RELEASED_PARAMS))
def test_released_layouts_have_the_released_parameter_counts(name):
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top

  from okdhp_jax.models import build_model  # pylint: disable=g-import-not-at-top
  config = load(name)
  shared = {'hg2_released': 0, 'hg4': 2, 'hg8_released': 6}[name]
  assert (config.model.num_shared_stacks, tuple(config.model.branch_stacks)) == (shared,
                                                                                 (2, 2, 2))
  model = build_model(config.model, 16, (64, 64))  # the count does not depend on the input size
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 64, 64, 3)),
                                             train=False))['params']
  assert sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(shapes)) == (
      RELEASED_PARAMS[name])
