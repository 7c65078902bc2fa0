"""Exporting one branch gives a plain StackedHourglass with that branch's outputs."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from okdhp_jax.models import MultiBranchHourglass, StackedHourglass, build_model, init_variables
from okdhp_jax.export.branch import export_branch, exported_model_config
from model_helpers import random_batch_stats

J = 16
FEATURES = 16
DEPTH = 2


def images():
  return jax.random.normal(jax.random.key(0), (2, 64, 64, 3))


_PLAIN_OUTPUTS_CACHE = {}


def plain_outputs(num_stacks, variables):
  """Outputs of StackedHourglass(num_stacks) (one compile per stack count)."""
  if num_stacks not in _PLAIN_OUTPUTS_CACHE:
    model = StackedHourglass(num_stacks, features=FEATURES, num_joints=J, depth=DEPTH)
    _PLAIN_OUTPUTS_CACHE[num_stacks] = jax.jit(lambda v, x: model.apply(v, x, train=False))
  return _PLAIN_OUTPUTS_CACHE[num_stacks](variables, images())


@pytest.fixture(scope='module', params=[(1, (1, 1)), (1, (1, 2))], ids=['balanced', 'unbalanced'])
def trained_multi_branch(request):
  num_shared, branch_stacks = request.param
  model = MultiBranchHourglass(J, num_shared, branch_stacks, features=FEATURES, depth=DEPTH,
                               fau='released')
  variables = init_variables(model, jax.random.key(1), (1, 64, 64, 3))
  variables['batch_stats'] = random_batch_stats(variables['batch_stats'])
  outputs = jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, images())
  return num_shared, branch_stacks, variables, outputs


def test_exported_branch_reproduces_branch_outputs(trained_multi_branch):
  num_shared, branch_stacks, variables, outputs = trained_multi_branch
  for branch, num_private in enumerate(branch_stacks):
    exported = export_branch(variables, branch, num_shared, branch_stacks)
    assert set(exported['params']) == {'stem'} | {
        f'stack_{k}' for k in range(num_shared + num_private)}
    got = plain_outputs(num_shared + num_private, exported)
    want = outputs.shared + outputs.branches[branch]
    assert len(got) == len(want)
    for g, w in zip(got, want):
      np.testing.assert_allclose(g, w, rtol=1e-6, atol=1e-6)


def test_exported_config_builds_a_model_for_the_exported_variables(trained_multi_branch):
  num_shared, branch_stacks, variables, _ = trained_multi_branch
  model_config = {'name': 'hourglass', 'num_shared_stacks': num_shared,
                  'branch_stacks': branch_stacks, 'features': FEATURES, 'depth': DEPTH,
                  'fau': 'released', 'fau_hidden': 64, 'backbone': 'resnet18',
                  'dtype': 'float32', 'param_dtype': 'float32'}
  branch = len(branch_stacks) - 1
  plain_config = exported_model_config(model_config, branch)
  assert plain_config['num_shared_stacks'] == 0 and plain_config['fau'] == 'none'
  assert tuple(plain_config['branch_stacks']) == (num_shared + branch_stacks[branch],)
  model = build_model(plain_config, J, (64, 64))
  exported = export_branch(variables, branch, num_shared, branch_stacks)
  abstract = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 64, 64, 3)),
                                               train=False))
  shapes = lambda tree: jax.tree.map(lambda a: a.shape, tree)
  assert shapes(abstract) == shapes(exported)


def test_export_of_a_single_branch_network_is_the_identity():
  variables = jax.eval_shape(lambda: StackedHourglass(3, features=8, num_joints=J, depth=DEPTH)
                             .init(jax.random.key(0), jnp.zeros((1, 64, 64, 3)), train=False))
  for num_shared, branch_stacks in ((0, (3,)), (1, (2,))):
    exported = export_branch(variables, 0, num_shared, branch_stacks)
    assert jax.tree.structure(exported) == jax.tree.structure(variables)


def test_export_errors_name_the_config_keys():
  variables = jax.eval_shape(lambda: MultiBranchHourglass(
      J, 1, (1, 1), features=8, depth=DEPTH, fau='none').init(
          jax.random.key(0), jnp.zeros((1, 64, 64, 3)), train=False))
  with pytest.raises(ValueError, match='out of range'):
    export_branch(variables, 2, 1, (1, 1))
  with pytest.raises(ValueError, match=r'shared_1.*config.model.num_shared_stacks'):
    export_branch(variables, 0, 2, (1, 1))
  with pytest.raises(ValueError, match=r'branch_0_stack_1.*config.model.branch_stacks'):
    export_branch(variables, 0, 1, (2, 1))
