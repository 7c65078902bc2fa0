"""Exporting one hourglass branch gives a plain hourglass with that branch's outputs."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from okdhp_jax.models import (build_model, deployed_model_config, export_student, init_variables,
                              plain_hourglass_config)
from model_helpers import random_batch_stats

J = 16
FEATURES = 16
DEPTH = 2


def images():
  return jax.random.normal(jax.random.key(0), (2, 64, 64, 3))


def training_config(num_shared, branch_stacks, fau='released'):
  """config.model (a dict) of a small multi-branch hourglass."""
  config = plain_hourglass_config(1, features=FEATURES, depth=DEPTH)
  config['hourglass'].update(num_shared_stacks=num_shared, branch_stacks=branch_stacks)
  config['fau'] = fau
  return config


_PLAIN_OUTPUTS_CACHE = {}


def plain_outputs(model_config, variables):
  """Outputs of the deployed network `model_config` (one compile per stack count)."""
  key = tuple(model_config['hourglass']['branch_stacks'])
  if key not in _PLAIN_OUTPUTS_CACHE:
    model = build_model(model_config, J, (64, 64))
    _PLAIN_OUTPUTS_CACHE[key] = jax.jit(lambda v, x: model.apply(v, x, train=False))
  return _PLAIN_OUTPUTS_CACHE[key](variables, images())


@pytest.fixture(scope='module', params=[(1, (1, 1)), (1, (1, 2))], ids=['balanced', 'unbalanced'])
def trained_multi_branch(request):
  config = training_config(*request.param)
  model = build_model(config, J, (64, 64))
  variables = init_variables(model, jax.random.key(1), (1, 64, 64, 3))
  variables['batch_stats'] = random_batch_stats(variables['batch_stats'])
  outputs = jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, images())
  return config, variables, outputs


def test_exported_branch_reproduces_branch_outputs(trained_multi_branch):
  config, variables, outputs = trained_multi_branch
  num_shared = config['hourglass']['num_shared_stacks']
  for branch, num_private in enumerate(config['hourglass']['branch_stacks']):
    exported = export_student(variables, branch, config)
    assert set(exported['params']) == {'stem'} | {
        f'stack_{k}' for k in range(num_shared + num_private)}
    plain = plain_outputs(deployed_model_config(config, branch), exported)
    want = outputs.shared + outputs.branches[branch]
    assert plain.num_branches == 1 and len(plain.branches[0]) == len(want)
    for g, w in zip(plain.branches[0], want):
      np.testing.assert_allclose(g, w, rtol=1e-6, atol=1e-6)


def test_deployed_config_builds_a_model_for_the_exported_variables(trained_multi_branch):
  config, variables, _ = trained_multi_branch
  num_shared, branch_stacks = (config['hourglass'][k]
                               for k in ('num_shared_stacks', 'branch_stacks'))
  branch = -1  # counts from the end
  plain_config = deployed_model_config(config, branch)
  assert plain_config == plain_hourglass_config(num_shared + branch_stacks[-1],
                                                features=FEATURES, depth=DEPTH)
  model = build_model(plain_config, J, (64, 64))
  exported = export_student(variables, branch, config)
  abstract = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 64, 64, 3)),
                                               train=False))
  shapes = lambda tree: jax.tree.map(lambda a: a.shape, tree)
  assert shapes(abstract) == shapes(exported)


def test_export_of_a_single_branch_network_is_the_identity():
  config = plain_hourglass_config(3, features=8, depth=DEPTH)
  variables = jax.eval_shape(lambda: build_model(config, J).init(
      jax.random.key(0), jnp.zeros((1, 64, 64, 3)), train=False))
  for num_shared, branch_stacks in ((0, (3,)), (1, (2,))):
    config['hourglass'].update(num_shared_stacks=num_shared, branch_stacks=branch_stacks)
    exported = export_student(variables, 0, config)
    assert jax.tree.structure(exported) == jax.tree.structure(variables)


def test_export_errors_name_the_config_keys():
  config = training_config(1, (1, 1), fau='none')
  variables = jax.eval_shape(lambda: build_model(config, J).init(
      jax.random.key(0), jnp.zeros((1, 64, 64, 3)), train=False))
  with pytest.raises(ValueError, match=r'branch 2 is out of range.*config.model.hourglass has 2'):
    export_student(variables, 2, config)
  with pytest.raises(ValueError, match='branch -3 is out of range'):
    deployed_model_config(config, -3)
  config['hourglass']['num_shared_stacks'] = 2
  with pytest.raises(ValueError, match=r'shared_1.*config.model.hourglass.num_shared_stacks'):
    export_student(variables, 0, config)
  config['hourglass'].update(num_shared_stacks=1, branch_stacks=(2, 1))
  with pytest.raises(ValueError, match=r'branch_0_stack_1.*config.model.hourglass.branch_stacks'):
    export_student(variables, 0, config)
