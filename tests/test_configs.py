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
  assert load('hg4').model.hourglass.num_shared_stacks == 2
  assert tuple(load('hg4').model.hourglass.branch_stacks) == (2, 2, 2)
  assert tuple(load('hg4_unbalanced').model.hourglass.branch_stacks) == (2, 4, 6)
  hg8 = load('hg8').model.hourglass
  assert hg8.num_shared_stacks == 4 and tuple(hg8.branch_stacks) == (4, 4, 4)
  base = load('hg8_baseline')
  assert (base.model.hourglass.num_shared_stacks,
          tuple(base.model.hourglass.branch_stacks)) == (0, (8,))
  assert base.model.fau == 'none' and base.loss.kd_weight == 0.0
  # A network's section comes with the network.
  mobilepose = load('mobilepose_resnet18_baseline').model
  assert 'hourglass' not in mobilepose and 'mobilepose' not in load('hg4').model
  assert (mobilepose.mobilepose.backbone, mobilepose.mobilepose.num_branches) == ('resnet18', 1)
  assert load('mobilepose_shufflenetv2').model.mobilepose.num_branches == 3
  assert load('hg4_fpd').method == 'fpd' and load('hg4_fpd').fpd.alpha == 0.5
  assert 'fpd' not in load('hg4')  # a method's section comes with the method.
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


@pytest.mark.parametrize('name', [n for n in CONFIG_NAMES
                                  if n not in ('quickstart', 'synthetic', 'study')])
def test_runlocal_is_applied_last(name):
  """What runlocal sets holds whatever the leaf config set before it (COCO's epochs too)."""
  config = load(name, 'runlocal')
  assert (config.train.batch_size, config.train.num_epochs) == (8, 3)
  assert config.data.bundled == config.data.dataset and config.data.num_train_examples == 0


def test_parse_arg_types_the_fields_and_names_the_bad_ones():
  from configs import default  # pylint: disable=g-import-not-at-top
  arg = default.parse_arg('runlocal,steps=5,rate=0.5,name=x', runlocal=False, steps=1, rate=1.0,
                          name='', flip=True)
  assert (arg.runlocal, arg.steps, arg.rate, arg.name, arg.flip) == (True, 5, 0.5, 'x', True)
  assert default.parse_arg(None, runlocal=False).runlocal is False
  with pytest.raises(ValueError, match=r"'runlokal'.*expected one of \['runlocal'\]"):
    default.parse_arg('runlokal', runlocal=False)
  with pytest.raises(ValueError, match="steps takes a int"):
    default.parse_arg('steps=five', steps=1)
  with pytest.raises(ValueError, match="'steps' needs a value"):
    default.parse_arg('steps', steps=1)


def test_the_old_trainer_key_is_refused_with_the_new_one():
  from okdhp_jax import methods  # pylint: disable=g-import-not-at-top
  config = load('hg4')
  config.trainer = 'okdhp'
  with pytest.raises(ValueError, match=r'config.trainer=.okdhp.: the key is config.method now'):
    methods.create(config, num_joints=16)


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
  hourglass = config.model.hourglass
  assert (hourglass.num_shared_stacks, tuple(hourglass.branch_stacks)) == (shared, (2, 2, 2))
  model = build_model(config.model, 16, (64, 64))  # the count does not depend on the input size
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 64, 64, 3)),
                                             train=False))['params']
  assert sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(shapes)) == (
      RELEASED_PARAMS[name])
