"""A network registered in this file trains, evaluates and exports through the real code; the
registry's lookups and shared checks."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import default
from okdhp_jax import experiment as experiment_lib
from okdhp_jax import models
from okdhp_jax.data import normalization
from okdhp_jax.inference import PosePredictor
from okdhp_jax.models import registry
from okdhp_jax.precision import at_least_float32

from main_runs import tiny_synthetic_config

TOY = 'toy_two_convs'
STRIDE = 4  # heatmaps are input / 4, as the configs' heatmap sizes expect.


class TwoConvNet(nn.Module):
  """`images [b, H, W, 3] -> PoseOutputs`: a shared strided trunk, one 1x1 head per branch,
  and the FAU reading the trunk."""

  num_joints: int
  width: int = 8
  num_branches: int = 2
  fau: str = 'none'
  fau_hidden: int = 8
  dtype: object = jnp.float32
  param_dtype: object = jnp.float32

  @nn.compact
  def __call__(self, images, *, train):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    x = nn.Conv(self.width, (3, 3), strides=(STRIDE, STRIDE), name='trunk', **kw)(
        images.astype(self.dtype))
    x = nn.relu(nn.BatchNorm(use_running_average=not train, name='trunk_bn', **kw)(x))
    branches = tuple(
        (at_least_float32(nn.Conv(self.num_joints, (1, 1), name=f'head_{b}', **kw)(x)),)
        for b in range(self.num_branches))
    fau = models.make_fau(self.fau, num_branches=self.num_branches, num_joints=self.num_joints,
                          features=self.width, hidden=self.fau_hidden, **kw)
    weights = None if fau is None else fau(x, train=train)
    ensemble = models.ensemble_heatmaps(tuple(h[-1] for h in branches), weights)
    return models.PoseOutputs(shared=(), branches=branches, fau_weights=weights,
                              ensemble=ensemble)


@models.register(TOY)
class TwoConvSpec(models.NetworkSpec):
  """`TwoConvNet` from config.model.toy_two_convs: width, num_branches."""

  def default_config(self):
    return {'width': 8, 'num_branches': 2}

  def check(self, model_config, num_joints, input_size):
    del num_joints, input_size
    if int(self.fields(model_config)['width']) < 1:
      raise ValueError(f'config.model.{TOY}.width must be >= 1')

  def input_divisor(self, model_config):
    return STRIDE

  def num_branches(self, model_config):
    return int(self.fields(model_config)['num_branches'])

  def build(self, model_config, num_joints):
    return TwoConvNet(num_joints, **self.fields(model_config), fau=model_config['fau'],
                      fau_hidden=int(model_config['fau_hidden']),
                      **registry.compute_dtypes(model_config))

  def export_branch(self, variables, branch, model_config):
    renames = {'trunk': 'trunk', 'trunk_bn': 'trunk_bn', 'head_0': f'head_{branch}'}
    return registry.rename_variables(variables, renames, f'is config.model.{TOY} right')

  def deployed_config(self, model_config, branch):
    fields = dict(self.fields(model_config), num_branches=1)
    return dict(registry.shared_fields(model_config, fau='none'), **{TOY: fields})


def toy_config(tmp_path):
  """Two steps (16 generated figures, batch 8, one epoch) of the toy with 2 branches + FAU."""
  config = tiny_synthetic_config(str(tmp_path), num_train=16)
  default.set_network(config, TOY)
  config.model.update(fau='released', fau_hidden=4)
  config.train.update(num_epochs=1, log_every_steps=1, num_images_to_draw=0)
  config.eval.batch_size = 8
  return config


@pytest.mark.slow  # a real (tiny) run: compiles the train step, the predict step, a predictor.
def test_a_network_registered_in_a_test_trains_evaluates_and_exports(tmp_path):
  config = toy_config(tmp_path)
  assert set(config.model) == {'name', 'fau', 'fau_hidden', 'dtype', 'param_dtype', TOY}
  workdir = str(tmp_path / 'run')
  experiment = experiment_lib.Experiment(config, workdir)
  assert isinstance(experiment.model, TwoConvNet)
  run = experiment_lib.train_and_evaluate(experiment)
  assert experiment.step == 2
  assert set(run.history[-1].metrics) == {'branch_0', 'branch_1', 'ensemble'}

  export_dir = str(tmp_path / 'export')
  description = experiment_lib.export_trained(experiment, export_dir=export_dir, progress=run)
  branch = description['branch']
  assert description['model'] == {
      'name': TOY, 'fau': 'none', 'fau_hidden': 4, 'dtype': 'auto', 'param_dtype': 'float32',
      TOY: {'width': 8, 'num_branches': 1}}

  # The predictor builds the deployed network from model.json, checks the exported variables
  # fit it, and gives the trained branch's heatmaps.
  predictor = PosePredictor.from_export(export_dir, flip_test=False, batch_size=2)
  crops = np.random.default_rng(0).integers(0, 256, (2, *config.data.input_size, 3), np.uint8)
  trained = experiment.model.apply(experiment.state.variables, normalization.normalize(crops),
                                   train=False)
  np.testing.assert_allclose(predictor.heatmaps(crops), trained.branch_heatmaps[branch],
                             rtol=1e-6, atol=1e-6)


def training_toy_config(**fields):
  return models.network_config(TOY, fau='released', **fields)


def test_the_module_functions_reach_the_registered_spec():
  config = training_toy_config(num_branches=3)
  assert models.num_branches(config) == 3 and models.input_divisor(config) == STRIDE
  assert TOY in models.network_names() and models.get_spec(TOY).name == TOY
  assert models.deployed_model_config(config, -1)[TOY] == {'width': 8, 'num_branches': 1}
  variables = jax.eval_shape(lambda: models.build_model(config, 5).init(
      jax.random.key(0), jnp.zeros((1, 8, 8, 3)), train=False))
  exported = models.export_student(variables, 2, config)
  assert exported['params']['head_0'] is variables['params']['head_2']
  assert set(exported['params']) == {'trunk', 'trunk_bn', 'head_0'}  # no FAU
  assert set(exported['batch_stats']) == {'trunk_bn'}


def test_checks_name_the_key():
  with pytest.raises(ValueError, match=f'config.model.{TOY}.width must be >= 1'):
    models.build_model(training_toy_config(width=0), 5)
  with pytest.raises(ValueError, match=r'config.data.input_size \(6, 8\) must be divisible by 4'):
    models.validate_model_config(training_toy_config(), 5, (6, 8))
  with pytest.raises(ValueError, match=f"config.model.{TOY} has no fields \\['depth'\\]"):
    training_toy_config(depth=2)
  with pytest.raises(ValueError, match='branch 2 is out of range'):
    models.deployed_model_config(training_toy_config(), 2)
  with pytest.raises(ValueError, match=r"config.model.name must be one of \(.*'hourglass'"):
    models.get_spec('resnet')


def test_a_name_cannot_be_registered_twice():
  with pytest.raises(ValueError, match="a network named 'hourglass' is already registered"):
    @models.register('hourglass')
    class Another(models.NetworkSpec):  # pylint: disable=unused-variable
      pass
  with pytest.raises(TypeError, match='NetworkSpec subclasses'):
    models.register('not_a_spec')(object)


def test_the_builtin_networks_deploy_one_branch_without_fau():
  hourglass = models.network_config('hourglass', fau='released', num_shared_stacks=1,
                                    branch_stacks=(1, 2, 3), features=8, depth=2)
  assert models.num_branches(hourglass) == 3 and models.input_divisor(hourglass) == 16
  assert models.deployed_model_config(hourglass, 2) == models.plain_hourglass_config(
      4, features=8, depth=2)
  mobilepose = models.network_config('mobilepose', fau='paper', backbone='shufflenetv2')
  assert models.num_branches(mobilepose) == 3 and models.input_divisor(mobilepose) == 32
  assert models.deployed_model_config(mobilepose, 1) == models.network_config(
      'mobilepose', backbone='shufflenetv2', num_branches=1)
