"""FPD method: teacher loaded from an export, frozen, its last stack as the soft target."""

from __future__ import annotations

import jax
import ml_collections
import numpy as np
import pytest

from configs import default
from okdhp_jax import methods, sharding
from okdhp_jax.codecs.heatmap import render_heatmaps
from okdhp_jax.data import normalization
from okdhp_jax.export.store import save_exported
from okdhp_jax.methods import fpd
from okdhp_jax.models import build_model
from okdhp_jax.training import state as state_lib
from okdhp_jax.training import step as step_lib

NUM_JOINTS = 16
def init_key():
  return jax.random.key(0, impl='unsafe_rbg')  # compiles much faster than threefry on CPU.


def model_config(num_stacks: int) -> ml_collections.ConfigDict:
  config = default.get_config('runlocal').model
  config.hourglass.update(features=16, depth=1, num_shared_stacks=0, branch_stacks=(num_stacks,))
  config.fau = 'none'
  return config


def fpd_config():
  config = default.get_config('runlocal')  # 64x64 input, 16x16 maps, batch 8
  config.model = model_config(1)
  default.set_method(config, 'fpd')
  return config


def make_batch(seed: int):
  rng = np.random.default_rng(seed)
  return {
      'image': rng.integers(0, 256, (8, 64, 64, 3), np.uint8),
      'joints': rng.uniform(0, 64, size=(8, NUM_JOINTS, 2)).astype(np.float32),
      'joints_vis': (rng.uniform(size=(8, NUM_JOINTS)) > 0.2).astype(np.float32),
  }


@pytest.fixture(scope='module')
def teacher_export(tmp_path_factory):
  """A 2-stack plain hourglass with perturbed BatchNorm statistics, exported."""
  teacher = build_model(model_config(2), NUM_JOINTS, (64, 64))
  variables = teacher.init(jax.random.key(1, impl='unsafe_rbg'), np.zeros((1, 64, 64, 3)),
                           train=False)
  # Non-trivial running statistics, so eval mode (running stats) differs from train mode.
  variables = dict(variables, batch_stats=jax.tree.map(
      lambda x: x + 0.3, variables['batch_stats']))
  path = str(tmp_path_factory.mktemp('teacher'))
  save_exported(path, variables, {'model': model_config(2).to_dict(), 'num_joints': NUM_JOINTS,
                                  'input_size': [64, 64], 'heatmap_size': [16, 16]})
  return path, variables


@pytest.fixture(scope='module')
def fpd_run(teacher_export):
  path, _ = teacher_export
  config = fpd_config()
  config.fpd.teacher_checkpoint = path
  mesh = sharding.make_mesh(1)
  student = build_model(config.model, NUM_JOINTS, config.data.input_size)
  method = methods.create(config, num_joints=NUM_JOINTS)
  assert isinstance(method, fpd.FPD)
  frozen = method.frozen_state(mesh)
  state = state_lib.create_train_state(config, student, init_key(), mesh=mesh,
                                       steps_per_epoch=10)
  initial = jax.device_get(state)
  train_step = step_lib.make_train_step(config, student, method, mesh=mesh, steps_per_epoch=10,
                                        num_joints=NUM_JOINTS)
  history = []
  for i in range(3):
    state, metrics = train_step(state, frozen, make_batch(i))
    history.append(jax.device_get(metrics))
  return dict(config=config, student=student, teacher=method.teacher,
              teacher_variables=frozen.variables, initial=initial, history=history,
              train_step=train_step)


@pytest.mark.slow
def test_load_teacher_round_trip(teacher_export, fpd_run):
  _, saved = teacher_export
  images = normalization.normalize(make_batch(0)['image'][:2])
  want = build_model(model_config(2), NUM_JOINTS).apply(saved, images, train=False)
  got = fpd_run['teacher'].apply(fpd_run['teacher_variables'], images, train=False)
  np.testing.assert_allclose(fpd.teacher_last_heatmaps(got), want.branches[0][-1], rtol=1e-5,
                             atol=1e-6)


@pytest.mark.slow
def test_loss_is_alpha_mix_of_gt_and_teacher(fpd_run):
  """Recompute the first step's loss outside the step, in NumPy, from the model outputs."""
  config, batch = fpd_run['config'], make_batch(0)
  images = normalization.normalize(batch['image'])  # as the step does on the device.
  initial = fpd_run['initial']
  student_out, _ = fpd_run['student'].apply(
      {'params': initial.params, 'batch_stats': initial.batch_stats}, images,
      train=True, mutable=['batch_stats'])
  teacher_out = fpd_run['teacher'].apply(fpd_run['teacher_variables'], images, train=False)
  teacher_maps = np.asarray(teacher_out.branches[0][-1])  # the LAST of its 2 stacks.
  target, weight = render_heatmaps(batch['joints'], batch['joints_vis'], input_size=(64, 64),
                                   heatmap_size=(16, 16), sigma=config.data.sigma)
  w = np.asarray(weight)[:, None, None, :]
  pred = np.asarray(student_out.branches[0][-1])
  mse_gt = 0.5 * np.mean(((pred - np.asarray(target)) * w)**2)
  mse_teacher = 0.5 * np.mean(((pred - teacher_maps) * w)**2)
  metrics = fpd_run['history'][0]
  np.testing.assert_allclose(metrics['mse_stacks'], mse_gt, rtol=1e-5)
  np.testing.assert_allclose(metrics['mse_teacher'], mse_teacher, rtol=1e-5)
  np.testing.assert_allclose(metrics['loss'], 0.5 * mse_gt + 0.5 * mse_teacher, rtol=1e-5)
  assert abs(mse_gt - mse_teacher) > 1e-3 * mse_gt  # the two terms really differ.


@pytest.mark.slow
def test_trains_and_compiles_once(fpd_run):
  losses = [m['loss'] for m in fpd_run['history']]
  assert all(np.isfinite(losses))
  assert fpd_run['train_step']._cache_size() == 1  # pylint: disable=protected-access


def test_bad_alpha_and_empty_path():
  config = fpd_config()
  config.fpd.alpha = 1.5
  with pytest.raises(ValueError, match='config.fpd.alpha'):
    methods.create(config, num_joints=NUM_JOINTS)
  config.fpd.alpha = 0.5
  with pytest.raises(ValueError, match='config.fpd.teacher_checkpoint'):
    methods.create(config, num_joints=NUM_JOINTS).frozen_state(sharding.make_mesh(1))
