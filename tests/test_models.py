"""Shapes, structure, FAU weights, dtype switch and config validation of the networks."""

from __future__ import annotations

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from configs.default import get_config, set_network
from okdhp_jax.models import (MobilePose, MultiBranchHourglass, PoseOutputs, build_model,
                              init_variables, plain_hourglass_config)
from okdhp_jax.models import batch_norm as batch_norm_lib
from okdhp_jax.models.fau import PaperFAU, ReleasedFAU
from okdhp_jax.models.mobilepose import channel_shuffle, pixel_shuffle
from model_helpers import random_batch_stats

J = 16
FEATURES = 16
IMAGE_SHAPE = (2, 64, 64, 3)


def images(seed=0):
  return jax.random.normal(jax.random.key(seed), IMAGE_SHAPE)


def plain_hourglass(num_stacks, dtype='float32'):
  """A plain `num_stacks`-stack hourglass (FEATURES channels, depth 4), as build_model makes it."""
  config = plain_hourglass_config(num_stacks, features=FEATURES, depth=4, dtype=dtype)
  return build_model(config, J, (64, 64))


@pytest.fixture(scope='module')
def hourglass_f32():
  model = plain_hourglass(2)
  variables = init_variables(model, jax.random.key(1), (1, 64, 64, 3))
  variables['batch_stats'] = random_batch_stats(variables['batch_stats'])
  outputs = jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, images())
  return variables, outputs


def test_plain_hourglass_returns_every_stack_as_one_branch(hourglass_f32):
  variables, outputs = hourglass_f32
  # The names of a pytorch-pose `hg` and of an exported branch: stem, stack_0 .. stack_{N-1}.
  assert set(variables['params']) == {'stem', 'stack_0', 'stack_1'}
  assert outputs.shared == () and outputs.fau_weights is None and outputs.num_branches == 1
  stacks = outputs.branches[0]
  assert len(stacks) == 2
  for heatmaps in stacks:
    assert heatmaps.shape == (2, 16, 16, J) and heatmaps.dtype == jnp.float32
  assert not np.allclose(stacks[0], stacks[1])
  np.testing.assert_array_equal(outputs.ensemble, stacks[-1])


@pytest.mark.slow
def test_bfloat16_compute_is_finite_and_close_to_float32(hourglass_f32):
  variables, reference = hourglass_f32
  model = plain_hourglass(2, dtype='bfloat16')
  outputs = jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, images())
  for got, want in zip(outputs.branches[0], reference.branches[0]):
    assert np.all(np.isfinite(got))
    # bfloat16 keeps 8 mantissa bits (~0.4 % per op); after two stacks we allow 5 % of the
    # output range.
    scale = float(jnp.max(jnp.abs(want)))
    assert float(jnp.max(jnp.abs(got - want))) <= 0.05 * scale


def test_param_dtype_is_float32_under_bfloat16_compute():
  model = plain_hourglass(1, dtype='bfloat16')
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros(IMAGE_SHAPE),
                                             train=False))
  assert {leaf.dtype for leaf in jax.tree.leaves(shapes)} == {jnp.dtype(jnp.float32)}


@pytest.fixture(scope='module')
def multi_branch():
  model = MultiBranchHourglass(J, num_shared_stacks=1, branch_stacks=(1, 2), features=FEATURES,
                               depth=2, fau='released')
  variables = init_variables(model, jax.random.key(2), (1, 64, 64, 3))
  outputs, updates = jax.jit(lambda v, x: model.apply(v, x, train=True, mutable=['batch_stats']))(
      variables, images())
  return model, variables, outputs, updates


def test_multi_branch_output_structure(multi_branch):
  model, variables, outputs, _ = multi_branch
  assert isinstance(outputs, PoseOutputs)
  assert len(outputs.shared) == 1
  assert [len(b) for b in outputs.branches] == [1, 2]
  assert outputs.fau_weights.shape == (2, 2, J)
  assert outputs.ensemble.shape == (2, 16, 16, J)
  assert set(variables['params']) == {'stem', 'shared_0', 'branch_0_stack_0', 'branch_1_stack_0',
                                      'branch_1_stack_1', 'fau'}


def test_ensemble_is_fau_weighted_sum_of_each_branch_last_stack(multi_branch):
  _, _, outputs, _ = multi_branch
  weights = np.asarray(outputs.fau_weights)
  np.testing.assert_allclose(weights.sum(axis=1), 1.0, atol=1e-6)
  last0, last1 = np.asarray(outputs.branches[0][0]), np.asarray(outputs.branches[1][1])
  expected = weights[:, None, None, 0, :] * last0 + weights[:, None, None, 1, :] * last1
  np.testing.assert_allclose(outputs.ensemble, expected, rtol=1e-5, atol=1e-6)


def test_train_mode_updates_batch_stats(multi_branch):
  _, variables, _, updates = multi_branch
  before = flax.traverse_util.flatten_dict(variables['batch_stats'])
  after = flax.traverse_util.flatten_dict(updates['batch_stats'])
  assert before.keys() == after.keys()
  changed = [k for k in before if not np.allclose(before[k], after[k])]
  assert len(changed) == len(before)


@pytest.mark.parametrize('fau_class', [ReleasedFAU, PaperFAU])
@pytest.mark.parametrize('num_branches', [1, 3])
def test_fau_weights_sum_to_one_over_branches(fau_class, num_branches):
  fau = fau_class(num_branches=num_branches, num_joints=5, features=8, hidden=4)
  x = jax.random.normal(jax.random.key(0), (2, 8, 8, 6))
  variables = init_variables(fau, jax.random.key(1), x.shape)
  weights = jax.jit(lambda v: fau.apply(v, x, train=False))(variables)
  assert weights.shape == (2, num_branches, 5)
  np.testing.assert_allclose(np.sum(weights, axis=1), 1.0, atol=1e-6)
  assert np.all(weights > 0)


def test_fau_paths():
  def conv_names(fau):
    shapes = jax.eval_shape(lambda: fau.init(jax.random.key(0), jnp.zeros((1, 8, 8, 6)),
                                             train=False))
    return sorted(k for k, v in shapes['params'].items() if 'kernel' in v)

  # Paper FAU: 3x3, 5x5, 7x7 (+1x1 each) and a pooled path, whatever the branch count.
  paper2, paper4 = (conv_names(PaperFAU(num_branches=b, num_joints=5, features=8))
                    for b in (2, 4))
  assert paper2 == paper4 == ['conv3', 'conv5', 'conv7', 'proj3', 'proj5', 'proj7', 'proj_pool']
  # Released FAU: one conv per branch, kernels 3, 5, 7, ...
  released = ReleasedFAU(num_branches=4, num_joints=5, features=8)
  shapes = jax.eval_shape(lambda: released.init(jax.random.key(0), jnp.zeros((1, 8, 8, 6)),
                                                train=False))
  kernels = [shapes['params'][f'conv_{b}']['kernel'].shape[0] for b in range(4)]
  assert kernels == [3, 5, 7, 9]


# Each network's sizes for these tests (the defaults elsewhere).
SMALL = {'hourglass': dict(features=FEATURES, depth=2), 'mobilepose': {}}


def _model_config(network='hourglass', **overrides):
  """configs/default.py's config.model for `network`, small; `overrides` set shared fields
  (fau, dtype, ...) or the network's own (config.model.<network>)."""
  config = set_network(get_config(), network).model
  config[network].update(SMALL[network])
  for key, value in overrides.items():
    section = config if key in config else config[network]
    section[key] = value
  return config


def test_no_fau_with_several_branches_is_uniform_mean():
  model = build_model(_model_config(num_shared_stacks=1, branch_stacks=(1, 1), fau='none'), J,
                      (64, 64))
  variables = init_variables(model, jax.random.key(3), (1, 64, 64, 3))
  outputs = jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, images())
  assert outputs.fau_weights is None
  expected = (np.asarray(outputs.branches[0][-1]) + np.asarray(outputs.branches[1][-1])) / 2
  np.testing.assert_allclose(outputs.ensemble, expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize('network, overrides, input_size, key', [
    ('hourglass', dict(branch_stacks=()), (64, 64),
     'config.model.hourglass.branch_stacks must be non-empty'),
    ('hourglass', dict(num_shared_stacks=0, branch_stacks=(0,)), (64, 64),
     'config.model.hourglass.branch_stacks'),
    ('hourglass', dict(branch_stacks=(2, 0)), (64, 64), 'config.model.hourglass.branch_stacks'),
    ('hourglass', dict(num_shared_stacks=-1), (64, 64),
     'config.model.hourglass.num_shared_stacks'),
    ('hourglass', dict(depth=4), (63, 64),
     r'config.data.input_size \(63, 64\) must be divisible by 64.*config.model.hourglass.depth'),
    ('hourglass', dict(depth=4), (32, 32), 'config.data.input_size'),
    ('hourglass', dict(features=30), (64, 64), 'config.model.hourglass.features'),
    ('hourglass', dict(fau='sk'), (64, 64), 'config.model.fau'),
    ('hourglass', dict(name='resnet'), (64, 64),
     r"config.model.name must be one of \(.*'hourglass'"),
    # The name switched without set_network: the network's section is missing.
    ('hourglass', dict(name='mobilepose'), (64, 64),
     "config.model has no 'mobilepose' section.*set_network"),
    ('hourglass', dict(dtype='float8'), (64, 64), 'config.model.dtype'),
    # float64 without 64-bit JAX would silently run in float32.
    ('hourglass', dict(param_dtype='float64'), (64, 64),
     'config.model.param_dtype=float64 needs 64-bit'),
    ('mobilepose', dict(backbone='vgg'), (64, 64),
     r"config.model.mobilepose.backbone must be one of \('resnet18', 'mobilenetv2', "
     r"'shufflenetv2'\)"),
    ('mobilepose', dict(num_branches=0), (64, 64), 'config.model.mobilepose.num_branches'),
    ('mobilepose', {}, (48, 64), 'config.data.input_size .* divisible by 32'),
])
def test_invalid_configs_fail_at_construction(network, overrides, input_size, key):
  with pytest.raises(ValueError, match=key):
    build_model(_model_config(network, **overrides), J, input_size)


def test_build_model_accepts_plain_dicts_and_config_dicts():
  config = _model_config().to_dict()
  config['hourglass']['branch_stacks'] = [1, 1]
  assert isinstance(build_model(config, J, (64, 64)), MultiBranchHourglass)
  assert isinstance(build_model(ml_collections.ConfigDict(config), J), MultiBranchHourglass)


def test_set_network_keeps_the_selected_network_section_only():
  config = _model_config('mobilepose')
  assert set(config) == {'name', 'fau', 'fau_hidden', 'dtype', 'param_dtype', 'mobilepose'}
  assert dict(config.mobilepose) == {'backbone': 'resnet18', 'num_branches': 3}


@pytest.mark.parametrize('backbone', ['resnet18', 'mobilenetv2', 'shufflenetv2'])
def test_mobilepose_shapes(backbone):
  model = build_model(_model_config('mobilepose', backbone=backbone, fau='paper'), J, (64, 64))
  outputs = jax.eval_shape(lambda: model.init_with_output(
      jax.random.key(0), jnp.zeros(IMAGE_SHAPE), train=False))[0]
  assert outputs.shared == ()
  assert [len(b) for b in outputs.branches] == [1, 1, 1]
  assert outputs.branches[0][0].shape == (2, 16, 16, J)  # output stride 4
  assert outputs.fau_weights.shape == (2, 3, J)


@pytest.mark.slow
def test_mobilepose_multi_branch_forward():
  model = MobilePose(J, 'shufflenetv2', num_branches=2, fau='released', decoder_features=32)
  variables = init_variables(model, jax.random.key(5), (1, 64, 64, 3))
  outputs = jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, images())
  np.testing.assert_allclose(np.sum(outputs.fau_weights, axis=1), 1.0, atol=1e-6)
  assert set(variables['params']) == {'encoder', 'decoder_0', 'decoder_1', 'fau'}
  assert not np.allclose(outputs.branches[0][0], outputs.branches[1][0])
  assert np.all(np.isfinite(outputs.ensemble))


def test_pixel_shuffle_matches_pytorch_definition():
  # PyTorch: out[c, h*r + i, w*r + j] = in[c*r*r + i*r + j, h, w].
  r, c, h, w = 2, 3, 2, 4
  x = np.arange(c * r * r * h * w, dtype=np.float32).reshape(1, h, w, c * r * r)
  expected = np.zeros((1, h * r, w * r, c), np.float32)
  for ch in range(c):
    for i in range(r):
      for j in range(r):
        expected[0, i::r, j::r, ch] = x[0, :, :, ch * r * r + i * r + j]
  np.testing.assert_array_equal(pixel_shuffle(jnp.asarray(x), r), expected)


def test_channel_shuffle_matches_pytorch_definition():
  # PyTorch (groups 2): view(g, c/g).transpose -> new channel k*g + g_ = old g_*(c/g) + k.
  x = jnp.arange(6, dtype=jnp.float32).reshape(1, 1, 1, 6)
  np.testing.assert_array_equal(channel_shuffle(x, 2)[0, 0, 0], [0, 3, 1, 4, 2, 5])


def test_batch_norm_running_variance_is_unbiased_as_pytorch():
  """One training step by hand: normalise with the biased batch variance, but move the running
  variance towards the unbiased one (n / (n - 1)), as torch.nn.BatchNorm2d does."""
  x = np.random.default_rng(0).normal(2.0, 3.0, (2, 3, 2, 4)).astype(np.float32)
  bn = batch_norm_lib.BatchNorm()
  assert jax.tree.map(np.shape, bn.init(jax.random.key(0), x)) == {
      'params': {'bias': (4,), 'scale': (4,)}, 'batch_stats': {'mean': (4,), 'var': (4,)}}
  scale = np.linspace(0.5, 2.0, 4, dtype=np.float32)
  bias = np.linspace(-1.0, 1.0, 4, dtype=np.float32)
  variables = {'params': {'scale': scale, 'bias': bias},
               'batch_stats': {'mean': np.full(4, 0.5, np.float32),
                               'var': np.full(4, 2.0, np.float32)}}
  y, updated = bn.apply(variables, x, mutable=['batch_stats'])

  values = x.reshape(-1, 4)  # 12 values per channel
  mean, biased, unbiased = values.mean(0), values.var(0), values.var(0, ddof=1)
  np.testing.assert_allclose(updated['batch_stats']['mean'], 0.9 * 0.5 + 0.1 * mean, rtol=1e-6)
  np.testing.assert_allclose(updated['batch_stats']['var'], 0.9 * 2.0 + 0.1 * unbiased,
                             rtol=1e-6)
  assert not np.allclose(updated['batch_stats']['var'], 0.9 * 2.0 + 0.1 * biased, rtol=1e-3)
  np.testing.assert_allclose(y, (x - mean) / np.sqrt(biased + 1e-5) * scale + bias,
                             rtol=1e-5, atol=1e-5)

  # Eval mode: the running statistics normalise, and nothing is updated.
  eval_bn = batch_norm_lib.BatchNorm(use_running_average=True)
  y_eval = eval_bn.apply(variables, x)
  np.testing.assert_allclose(y_eval, (x - 0.5) / np.sqrt(2.0 + 1e-5) * scale + bias,
                             rtol=1e-5, atol=1e-5)


def _batch_norm_by_autodiff(x, scale, bias, epsilon, dtype):
  """The training-mode forward pass written plainly, for jax.grad to differentiate."""
  stats_dtype = jnp.promote_types(jnp.float32, jnp.promote_types(x.dtype, scale.dtype))
  wide, axes = x.astype(stats_dtype), tuple(range(x.ndim - 1))
  mean = wide.mean(axes)
  var = jnp.square(wide - mean).mean(axes)
  y = (x - mean) * (jax.lax.rsqrt(var + epsilon) * scale.astype(stats_dtype)) + bias
  return y.astype(dtype), mean, var


@pytest.mark.parametrize('dtype, rtol', [('float64', 1e-12), ('float32', 1e-5)])
def test_batch_norm_backward_is_the_gradient_of_its_forward(dtype, rtol):
  """normalize_batch's written-out backward against jax.grad of the plain forward pass, with
  cotangents on all three outputs (y, the batch mean and the batch variance), on inputs with a
  large mean (where a careless variance gradient cancels)."""
  rng = np.random.default_rng(1)
  jax.config.update('jax_enable_x64', dtype == 'float64')
  try:
    x = jnp.asarray(rng.normal(3.0, 2.0, (3, 5, 4, 6)), dtype)
    scale, bias = (jnp.asarray(rng.normal(m, 0.5, 6), dtype) for m in (1.0, 0.0))
    dy, dmean, dvar = (jnp.asarray(rng.normal(0, 1, s), dtype) for s in (x.shape, 6, 6))

    def loss(fn):
      def total(x, scale, bias):
        y, mean, var = fn(x, scale, bias, 1e-5, dtype)
        return (y * dy).sum() + (mean * dmean).sum() + (var * dvar).sum()
      return jax.grad(total, argnums=(0, 1, 2))

    written = loss(batch_norm_lib.normalize_batch)(x, scale, bias)
    expected = loss(_batch_norm_by_autodiff)(x, scale, bias)
    for name, got, want in zip(('x', 'scale', 'bias'), written, expected):
      assert got.dtype == want.dtype, name
      scale_of = float(jnp.abs(want).max())
      np.testing.assert_allclose(got, want, rtol=0, atol=rtol * scale_of, err_msg=name)
    # The forward pass is the plain one, bit for bit.
    for got, want in zip(batch_norm_lib.normalize_batch(x, scale, bias, 1e-5, dtype),
                         _batch_norm_by_autodiff(x, scale, bias, 1e-5, dtype)):
      np.testing.assert_array_equal(got, want)
  finally:
    jax.config.update('jax_enable_x64', False)


def test_batch_norm_backward_reduces_twice():
  """The point of writing the backward out: 2 reductions (sum dy, sum dy * x_hat) after the
  forward pass's 2 (mean, variance), where differentiating the forward pass needs more."""
  x = jnp.ones((2, 4, 4, 8), jnp.bfloat16)
  scale, bias = jnp.ones(8), jnp.zeros(8)

  def reductions(fn):
    grad = jax.grad(lambda x, s, b: fn(x, s, b, 1e-5, jnp.bfloat16)[0].astype(jnp.float32).sum(),
                    argnums=(0, 1, 2))
    return str(jax.make_jaxpr(grad)(x, scale, bias)).count('reduce_sum')

  assert reductions(batch_norm_lib.normalize_batch) == 2 + 2 + 1  # + the loss's own sum
  assert reductions(_batch_norm_by_autodiff) > 2 + 2 + 1
