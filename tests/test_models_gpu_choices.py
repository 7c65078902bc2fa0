"""What a GPU program runs instead of the per-branch convolutions computes what they compute,
from and into the same variables: the branches' private stacks as one vmapped computation
(`config.model.hourglass.fuse_branches`) with the 1x1 convs as matrix products
(`.pointwise_matmul`).

The reference is the same network with both 'never', in float64 so that only the order of the
arithmetic can differ. The train step on 8 devices with both 'always' is held to the reference
step on one device by tests/test_training_step.py.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs.default import get_config
from model_helpers import weighted_sum
from okdhp_jax.models import build_model, init_variables
from okdhp_jax.models.hourglass import _PointwiseMatmul

J = 5
SIZE = 32
# Stated tolerances [measured on a 2-core AMD EPYC]: outputs and running statistics rtol 1e-12
# plus 1e-12 of the leaf's largest value [2e-12 relative on a value 1e-3 of its leaf's
# largest]; each gradient within 1e-11 of the network's largest |gradient| [2e-15].
RTOL_64 = 1e-12
GRAD_RTOL_64 = 1e-11


def _network(branch_stacks, fuse_branches, dtype='float64', pointwise_matmul=None):
  config = get_config().model
  # No shared stack and no FAU (neither is fused): the smallest program with every case.
  config.hourglass.update(features=16, depth=1, num_shared_stacks=0,
                          branch_stacks=branch_stacks, fuse_branches=fuse_branches,
                          pointwise_matmul=pointwise_matmul or fuse_branches)
  config.update(fau='none', dtype=dtype, param_dtype=dtype)
  return build_model(config, J, (SIZE, SIZE))


def _train_and_eval(models, variables, images):
  """For each model: (gradients, training outputs, new batch_stats, evaluation outputs), as
  numpy, all from one program (one compile)."""
  def results(model):
    def loss(params):
      outputs, updated = model.apply(
          {'params': params, 'batch_stats': variables['batch_stats']}, images, train=True,
          mutable=['batch_stats'])
      return weighted_sum(outputs), (outputs, updated['batch_stats'])

    grads, (outputs, batch_stats) = jax.grad(loss, has_aux=True)(variables['params'])
    return grads, outputs, batch_stats, model.apply(variables, images, train=False)

  return jax.device_get(jax.jit(lambda: [results(model) for model in models])())


@pytest.fixture(scope='module')
def fused_and_per_branch():
  # Level 0: the three branches from one input; level 1: two end there, one goes on (each
  # group reads part of the stacked inputs); level 2: that one, from all of the stacked inputs.
  jax.config.update('jax_enable_x64', True)
  try:
    # 'always': both choices (fused branches, 1x1 matrix products); 'never': neither.
    fused, per_branch = (_network((2, 2, 3), f) for f in ('always', 'never'))
    variables = init_variables(per_branch, jax.random.key(0), (1, SIZE, SIZE, 3))
    fused_init = init_variables(fused, jax.random.key(0), (1, SIZE, SIZE, 3))
    # Running statistics away from their initial values, so evaluation reads them.
    rng = np.random.default_rng(0)
    variables['batch_stats'] = jax.tree.map(
        lambda leaf: jnp.asarray(rng.uniform(0.5, 1.5, leaf.shape)), variables['batch_stats'])
    images = jax.random.normal(jax.random.key(1), (3, SIZE, SIZE, 3), jnp.float64)
    return (fused_init, variables, *_train_and_eval((fused, per_branch), variables, images))
  finally:
    jax.config.update('jax_enable_x64', False)


def test_same_variables(fused_and_per_branch):
  fused_init, variables, _, _ = fused_and_per_branch
  assert jax.tree.structure(fused_init) == jax.tree.structure(variables)
  jax.tree.map(np.testing.assert_array_equal, fused_init['params'], variables['params'])


def test_same_outputs_statistics_and_gradients(fused_and_per_branch):
  _, variables, fused, per_branch = fused_and_per_branch
  (grads, outputs, batch_stats, evaluated), (ref_grads, ref_outputs, ref_stats, ref_eval) = (
      fused, per_branch)
  assert jax.tree.leaves(grads)[0].dtype == np.float64
  def check(a, b):  # near-zero values: rounding scales with the leaf's largest value.
    np.testing.assert_allclose(a, b, rtol=RTOL_64, atol=RTOL_64 * float(np.abs(b).max()))

  jax.tree.map(check, outputs, ref_outputs)
  jax.tree.map(check, evaluated, ref_eval)
  # Every branch's running statistics were updated (none kept its given value) and agree.
  jax.tree.map(check, batch_stats, ref_stats)
  moved = jax.tree.map(lambda new, old: bool(np.all(new != old)), batch_stats,
                       variables['batch_stats'])
  assert all(jax.tree.leaves(moved))
  tolerance = GRAD_RTOL_64 * max(float(np.abs(g).max()) for g in jax.tree.leaves(ref_grads))
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=0, atol=tolerance), grads,
               ref_grads)
  assert jax.tree.structure(grads) == jax.tree.structure(variables['params'])


@pytest.mark.parametrize('key', ['fuse_branches', 'pointwise_matmul'])
def test_gpu_setting_leaves_other_platforms_program_as_it_was(key):
  """'gpu' (the default) traces the per-branch convolution network on this CPU: the same
  jaxpr; 'always' another."""
  images = jnp.zeros((2, SIZE, SIZE, 3))
  jaxprs = {}
  for choice in ('gpu', 'never', 'always'):
    model = _network((1, 1, 1), 'never', 'float32', 'never')
    model = model.clone(**{key: choice})
    variables = jax.eval_shape(lambda m=model: m.init(jax.random.key(0), images, train=False))
    jaxprs[choice] = str(jax.make_jaxpr(
        lambda v, x, m=model: m.apply(v, x, train=True, mutable=['batch_stats']))(
            variables, images))
  assert jaxprs['gpu'] == jaxprs['never']
  assert jaxprs['always'] != jaxprs['never']
  assert ('dot_general' in jaxprs['always']) == (key == 'pointwise_matmul')


@pytest.mark.parametrize('key', ['fuse_branches', 'pointwise_matmul'])
def test_bad_setting_names_the_key(key):
  config = get_config().model
  config.hourglass[key] = 'sometimes'
  with pytest.raises(ValueError, match=rf'config.model.hourglass.{key} must be one of'):
    build_model(config, J, (SIZE, SIZE))


def test_pointwise_matmul_is_the_1x1_convolution():
  """`_PointwiseMatmul` against `lax.conv_general_dilated` on a 1x1 kernel: values and both
  gradients, float64 (exact up to the order of the sums); other kernels are refused."""
  jax.config.update('jax_enable_x64', True)
  try:
    rng = np.random.default_rng(0)
    inputs = jnp.asarray(rng.normal(size=(2, 5, 4, 6)))
    kernel = jnp.asarray(rng.normal(size=(1, 1, 6, 3)))
    numbers = jax.lax.conv_dimension_numbers(inputs.shape, kernel.shape, ('NHWC', 'HWIO', 'NHWC'))
    def conv(x, k):
      return jax.lax.conv_general_dilated(x, k, (1, 1), ((0, 0), (0, 0)),
                                          dimension_numbers=numbers)
    def matmul(x, k):
      return _PointwiseMatmul()(x, k, (1, 1), ((0, 0), (0, 0)), lhs_dilation=(1, 1),
                                rhs_dilation=(1, 1), dimension_numbers=numbers)
    weights = jnp.asarray(rng.normal(size=(2, 5, 4, 3)))
    for f in (conv, matmul):
      assert f(inputs, kernel).shape == (2, 5, 4, 3)
    expected = jax.value_and_grad(lambda x, k: jnp.sum(conv(x, k) * weights), (0, 1))(
        inputs, kernel)
    got = jax.value_and_grad(lambda x, k: jnp.sum(matmul(x, k) * weights), (0, 1))(
        inputs, kernel)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-13), got, expected)
    with pytest.raises(ValueError, match='1x1, stride-1, ungrouped'):
      _PointwiseMatmul()(inputs, jnp.zeros((3, 3, 6, 3)), (1, 1), ((1, 1), (1, 1)),
                         dimension_numbers=numbers)
  finally:
    jax.config.update('jax_enable_x64', False)
