"""Optimiser schedule (the paper's MPII protocol) and train-state creation."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import default
from okdhp_jax import sharding
from okdhp_jax.models.outputs import PoseOutputs
from okdhp_jax.training import optimizer, state as state_lib


def test_steps_per_epoch_keeps_last_partial_batch():
  assert optimizer.steps_per_epoch(22246, 16) == 1391  # 1390.375 -> ceil
  assert optimizer.steps_per_epoch(32, 16) == 2
  with pytest.raises(ValueError, match='config.data.num_train_examples'):
    optimizer.steps_per_epoch(0, 16)


def test_paper_schedule():
  optim = default.get_config().optim
  spe = optimizer.steps_per_epoch(22246, 16)
  _, schedule = optimizer.make_optimizer(optim, steps_per_epoch=spe, global_batch_size=16)
  lr = lambda step: float(schedule(step))
  np.testing.assert_allclose(lr(0), 2.5e-4)
  np.testing.assert_allclose(lr(90 * spe - 1), 2.5e-4)
  np.testing.assert_allclose(lr(90 * spe), 2.5e-5, rtol=1e-6)   # first update of epoch 90
  np.testing.assert_allclose(lr(120 * spe - 1), 2.5e-5, rtol=1e-6)
  np.testing.assert_allclose(lr(120 * spe), 2.5e-6, rtol=1e-5)
  np.testing.assert_allclose(lr(150 * spe), 2.5e-6, rtol=1e-5)


def test_linear_scaling_and_coinciding_boundaries():
  optim = default.get_config().optim
  optim.scale_lr_with_batch = True
  _, schedule = optimizer.make_optimizer(optim, steps_per_epoch=10, global_batch_size=64)
  np.testing.assert_allclose(float(schedule(0)), 1e-3)  # 2.5e-4 * 64 / 16
  optim.scale_lr_with_batch = False
  optim.lr_decay_epochs = (1.0, 1.02)  # both round to step 10: decays compound.
  _, schedule = optimizer.make_optimizer(optim, steps_per_epoch=10, global_batch_size=16)
  np.testing.assert_allclose(float(schedule(10)), 2.5e-6, rtol=1e-5)


def test_adam_without_weight_decay():
  optim = default.get_config().optim
  tx, _ = optimizer.make_optimizer(optim, steps_per_epoch=10, global_batch_size=16)
  params = {'w': jnp.array([1.0, -2.0, 3.0])}
  grads = {'w': jnp.array([0.5, -4.0, 0.0])}
  updates, _ = tx.update(grads, tx.init(params), params)
  # Adam's first step is -lr * g / (|g| + eps); a zero gradient (no decay) moves nothing.
  np.testing.assert_allclose(updates['w'], [-2.5e-4, 2.5e-4, 0.0], rtol=1e-4)
  optim.weight_decay = 0.1  # PyTorch-style L2: decay enters the gradient before Adam.
  tx, _ = optimizer.make_optimizer(optim, steps_per_epoch=10, global_batch_size=16)
  updates, _ = tx.update(grads, tx.init(params), params)
  np.testing.assert_allclose(updates['w'][2], -2.5e-4, rtol=1e-4)


class TinyNet(nn.Module):
  @nn.compact
  def __call__(self, images, *, train):
    x = nn.Conv(4, (3, 3))(images)
    x = nn.BatchNorm(use_running_average=not train)(x)
    heatmaps = nn.Conv(2, (1, 1))(x)
    return PoseOutputs(shared=(), branches=((heatmaps,),), fau_weights=None, ensemble=heatmaps)


def test_created_state_is_the_models_tree_replicated():
  config = default.get_config('runlocal')
  mesh = sharding.make_mesh(1)
  state = state_lib.create_train_state(config, TinyNet(), jax.random.key(0), mesh=mesh,
                                       steps_per_epoch=5)
  # What model.init and the optimiser would give, as shapes only.
  tx, _ = optimizer.make_optimizer(config.optim, steps_per_epoch=5, global_batch_size=8)
  variables = jax.eval_shape(lambda: TinyNet().init(
      jax.random.key(0), jnp.zeros((1, 64, 64, 3)), train=False))
  expected = state_lib.TrainState(
      step=jax.ShapeDtypeStruct((), jnp.int32), params=variables['params'],
      batch_stats=variables['batch_stats'],
      opt_state=jax.eval_shape(tx.init, variables['params']))
  assert jax.tree.structure(expected) == jax.tree.structure(state)
  for spec, leaf in zip(jax.tree.leaves(expected), jax.tree.leaves(state)):
    assert (spec.shape, spec.dtype) == (leaf.shape, leaf.dtype)
    assert leaf.sharding == sharding.replicated(mesh) and leaf.sharding.is_fully_replicated
  assert int(state.step) == 0 and 'batch_stats' in state.variables
  assert isinstance(state.opt_state, tuple) and optax.tree.norm(state.params) > 0
