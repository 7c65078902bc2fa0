"""The optimiser's pieces shaped for the compiled program (okdhp_jax/training/optimizer.py): the
gradient norm as one dot product (except on a TPU), and gradients read in the parameters' layout on
a GPU only."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from okdhp_jax.training import optimizer

from traced_platforms import one_device_mesh

SHAPES = {'conv': (3, 3, 8, 16), 'bias': (16,), 'fc': (16, 4), 'scalar': ()}


def _tree(dtype, seed=0):
  rng = np.random.default_rng(seed)
  return {name: jnp.asarray(rng.normal(size=shape), dtype) for name, shape in SHAPES.items()}


@pytest.mark.parametrize('dtype, rtol', [('float64', 1e-14), ('float32', 1e-6)])
def test_gradient_norm_is_optax_tree_norm(dtype, rtol):
  """The norm as one dot of the concatenated leaves is optax.tree.norm's value, in the leaves'
  dtype; traced for a GPU or this CPU the step takes it, for a TPU optax.tree.norm itself."""
  jax.config.update('jax_enable_x64', dtype == 'float64')
  try:
    tree = _tree(dtype)
    got = jax.jit(optimizer.global_norm)(tree)
    assert got.dtype == jnp.dtype(dtype)
    np.testing.assert_allclose(got, optax.tree.norm(tree), rtol=rtol)
    with jax.sharding.use_abstract_mesh(one_device_mesh('gpu')):
      assert 'dot_general' in str(jax.make_jaxpr(optimizer.global_norm)(tree))
    assert 'dot_general' in str(jax.make_jaxpr(optimizer.global_norm)(tree))  # this CPU
    with jax.sharding.use_abstract_mesh(one_device_mesh('tpu')):
      assert 'dot_general' not in str(jax.make_jaxpr(optimizer.global_norm)(tree))
  finally:
    jax.config.update('jax_enable_x64', False)


def _adam():
  config = ml_collections.ConfigDict(dict(
      learning_rate=1e-3, scale_lr_with_batch=False, base_batch_size=32, lr_decay_epochs=[],
      lr_decay_factor=0.1, weight_decay=0.0))
  tx, _ = optimizer.make_optimizer(config, steps_per_epoch=10, global_batch_size=32)
  return tx


def test_gradients_keep_the_parameters_layout_on_a_gpu_only():
  """Traced for a GPU, every gradient of two or more dimensions is pinned to the row-major
  layout the parameters have; elsewhere nothing is. The state is optax.adam's (the
  checkpoint format), and so are the updates."""
  tx, params = _adam(), _tree('float32')
  plain = optax.adam(optax.piecewise_constant_schedule(1e-3, {}), b1=0.9, b2=0.999, eps=1e-8)
  state = tx.init(params)
  assert jax.tree.structure(state) == jax.tree.structure(plain.init(params))

  def update(grads, state, params):
    return tx.update(grads, state, params)

  def constraints(mesh):
    with jax.sharding.use_abstract_mesh(mesh):
      return str(jax.make_jaxpr(update)(params, state, params)).count('layout_constraint')

  assert constraints(one_device_mesh('gpu')) == 2  # 'conv' and 'fc'
  assert constraints(jax.sharding.get_abstract_mesh()) == 0  # no mesh: this CPU backend
  got, _ = jax.jit(update)(_tree('float32', seed=1), state, params)
  want, _ = jax.jit(plain.update)(_tree('float32', seed=1), state, params)
  for name in SHAPES:
    np.testing.assert_array_equal(got[name], want[name], err_msg=name)
