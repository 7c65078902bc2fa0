"""`config.model.hourglass.remat`: bottlenecks that recompute their convolutions' inputs in the
backward pass keep the variables and need less memory; only a training step recomputes, and
only on a GPU unless asked ('gpu', the default). That they compute the same outputs,
running statistics and gradients is held by tests/test_training_step.py, whose 8-device runs
use it (float32 and float64 against the 1-device step without it)."""

from __future__ import annotations

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import pytest

from configs.default import get_config
from model_helpers import weighted_sum
from okdhp_jax.models import build_model, init_variables
from okdhp_jax.models.hourglass import RematBottleneck
from okdhp_jax.models.registry import network_config

J = 5
SIZE = 64


def _network(remat):
  config = get_config().model
  config.hourglass.update(features=32, depth=2, num_shared_stacks=1, branch_stacks=(1, 1),
                          remat=remat)
  config.update(fau='none', dtype='float32', param_dtype='float32')
  return build_model(config, J, (SIZE, SIZE))


def _residual_bytes(model, variables):
  """Bytes of what the training-mode forward pass keeps for the backward pass (the arrays the
  VJP closes over). The GPU compile's temporary memory follows them (`gpu_program`); XLA's
  CPU backend schedules its buffers its own way and reports the same for both programs."""
  images = jnp.zeros((8, SIZE, SIZE, 3))
  def loss(params):
    outputs, _ = model.apply({'params': params, 'batch_stats': variables['batch_stats']},
                             images, train=True, mutable=['batch_stats'])
    return weighted_sum(outputs)

  vjp = jax.eval_shape(lambda params: jax.vjp(loss, params)[1], variables['params'])
  return sum(leaf.size * leaf.dtype.itemsize for leaf in jax.tree.leaves(vjp))


def test_same_variables_less_kept_for_the_backward_pass():
  kept, remat = _network('never'), _network('always')
  variables = init_variables(kept, jax.random.key(0), (1, SIZE, SIZE, 3))
  remat_variables = init_variables(remat, jax.random.key(0), (1, SIZE, SIZE, 3))
  assert jax.tree.structure(remat_variables) == jax.tree.structure(variables)
  jax.tree.map(np.testing.assert_array_equal, remat_variables, variables)
  kept_bytes, remat_bytes = (_residual_bytes(model, variables) for model in (kept, remat))
  # [2-core AMD EPYC, 2026-12-07: 25.7 MB without, 11.5 MB with, parameters included.]
  assert remat_bytes < 0.6 * kept_bytes, (remat_bytes, kept_bytes)


def test_bad_value_names_the_key():
  # A ConfigDict refuses a bool for a str field itself; an export's model.json is a dict.
  config = network_config('hourglass', remat='yes')
  with pytest.raises(ValueError, match=r'config.model.hourglass.remat must be one of'):
    build_model(config, J, (SIZE, SIZE))


@pytest.mark.parametrize('stored, recomputes', [(True, True), (False, False)])
def test_an_export_from_when_remat_was_true_or_false_still_builds(stored, recomputes):
  """model.json of an export written before remat was a GPU choice holds a bool."""
  config = network_config('hourglass', remat=stored)
  assert build_model(config, J, (SIZE, SIZE)).remat == ('always' if recomputes else 'never')


def test_only_a_training_pass_on_a_gpu_recomputes():
  """'gpu' traces the plain bottlenecks on this CPU, 'always' the recomputing ones, and
  evaluation the plain ones whatever the choice (a one-stack network: tracing is the cost)."""
  images = jnp.zeros((1, 16, 16, 3))
  def jaxpr(choice, train):
    config = get_config().model
    config.hourglass.update(features=8, depth=1, num_shared_stacks=0, branch_stacks=(1,),
                            remat=choice)
    config.update(fau='none')
    model = build_model(config, J, (16, 16))
    variables = jax.eval_shape(lambda: model.init(jax.random.key(0), images, train=False))
    return str(jax.make_jaxpr(lambda v: model.apply(v, images, train=train,
                                                    mutable=['batch_stats']))(variables))
  on_this_cpu, recomputing = jaxpr('gpu', True), jaxpr('always', True)
  assert on_this_cpu == jaxpr('never', True)
  assert ' remat2[' in recomputing and ' remat2[' not in on_this_cpu
  assert jaxpr('always', False) == jaxpr('never', False)


def _weight_casts(jaxpr, weight_shapes) -> int:
  """float32 -> bfloat16 casts of arrays of `weight_shapes` in `jaxpr` and its sub-jaxprs."""
  count = 0
  for eqn in jaxpr.eqns:
    if eqn.primitive.name == 'convert_element_type':
      aval = eqn.invars[0].aval
      count += aval.dtype == jnp.float32 and tuple(aval.shape) in weight_shapes
    for sub in jax.extend.core.jaxprs_in_params(eqn.params):
      count += _weight_casts(sub, weight_shapes)
  return count


def test_a_bfloat16_bottleneck_keeps_its_cast_weights_for_the_backward_pass():
  """The backward pass reuses the forward's bfloat16 weights instead of casting them again:
  recomputed, each cast was a GPU kernel of its own (about 500 of OKDHP-HG4's)."""
  block = RematBottleneck(features=16, dtype=jnp.bfloat16, param_dtype=jnp.float32)
  x = jnp.ones((2, 8, 8, 16), jnp.bfloat16)
  variables = block.init(jax.random.key(0), x, True)
  weight_shapes = {tuple(w.shape) for w in jax.tree.leaves(variables['params'])}

  def forward(params):
    y, _ = block.apply({'params': params, 'batch_stats': variables['batch_stats']}, x, True,
                       mutable=['batch_stats'])
    return y

  y, backward = jax.vjp(forward, variables['params'])
  assert _weight_casts(jax.make_jaxpr(forward)(variables['params']).jaxpr, weight_shapes) > 0
  assert _weight_casts(jax.make_jaxpr(backward)(y).jaxpr, weight_shapes) == 0
