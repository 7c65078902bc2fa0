"""Convs that feed a training-mode BatchNorm: their biases get no gradient, and nothing else
changes (models/hourglass.py, `conv(..., into_batch_norm=...)`).

The reference is the same network with plain convs, differentiated by autodiff in float64:
its gradient for those biases is rounding noise around zero; every other gradient, the
outputs and the new running statistics are the same. (Evaluation builds plain convs.)
"""

from __future__ import annotations

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from configs.default import get_config
from model_helpers import weighted_sum
from okdhp_jax.models import build_model, hourglass, init_variables
from okdhp_jax.models.fau import PaperFAU

J = 16


def _train_gradients(module, variables, inputs, monkeypatch, *, plain: bool):
  """(flat gradients, (outputs, new batch_stats)) of one training-mode call, in float64;
  `plain`: with plain convs everywhere, for this call only."""
  def loss(params):
    outputs, updated = module.apply({'params': params, 'batch_stats': variables['batch_stats']},
                                    inputs, train=True, mutable=['batch_stats'])
    return weighted_sum(outputs), (outputs, updated)

  with monkeypatch.context() as patch:
    if plain:
      patch.setattr(hourglass, '_BiasUntrainedConv', nn.Conv)
    # A new function each call, so the plain convs are traced rather than taken from a cache.
    grads, aux = jax.jit(jax.grad(loss, has_aux=True))(variables['params'])
  return flax.traverse_util.flatten_dict(grads, sep='/'), aux


def _untrained_by_structure(keys) -> set[str]:
  """The biases whose conv feeds a BatchNorm, read off the layer names: a bottleneck's conv1
  and conv2, the stem's conv1, each stack's fc, the FAU's convs before its BatchNorms."""
  expected = set()
  for key in keys:
    path, leaf = key.rsplit('/', 1)
    parent, name = path.rsplit('/', 1) if '/' in path else ('', path)
    if leaf != 'bias':
      continue
    in_bottleneck = name in ('conv1', 'conv2') and f'{parent}/conv3/kernel' in keys
    in_fau = parent.split('/')[-1] in ('fau', '') and name.startswith('conv')
    stack_fc = name == 'fc' and f'{parent}/fc_bn/scale' in keys
    if in_bottleneck or in_fau or stack_fc or key == 'stem/conv1/bias':
      expected.add(key)
  return expected


def _check(ours, reference, minimum):
  (grads, aux), (reference_grads, reference_aux) = ours, reference
  assert grads.keys() == reference_grads.keys()
  untrained = {k for k, g in grads.items() if k.endswith('/bias') and not np.any(g)}
  assert untrained == _untrained_by_structure(set(grads)), sorted(untrained)
  assert len(untrained) >= minimum
  # Autodiff's gradient of those biases is zero up to float64 rounding of the whole pass...
  scale = max(float(np.abs(g).max()) for g in reference_grads.values())
  for key in untrained:
    assert float(np.abs(reference_grads[key]).max()) < 1e-12 * scale, key
  # ...and every other gradient, the outputs and the running statistics are autodiff's.
  for key in grads.keys() - untrained:
    np.testing.assert_allclose(grads[key], reference_grads[key], rtol=1e-9,
                               atol=1e-13 * scale, err_msg=key)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-12), aux, reference_aux)


def test_okdhp_network_biases_into_batch_norm_get_no_gradient(monkeypatch):
  config = get_config().model
  config.hourglass.update(features=16, depth=1, num_shared_stacks=0, branch_stacks=(1, 1))
  config.update(fau='released', fau_hidden=8, dtype='float64', param_dtype='float64')
  jax.config.update('jax_enable_x64', True)
  try:
    model = build_model(config, J, (32, 32))
    variables = init_variables(model, jax.random.key(0), (1, 32, 32, 3))
    images = jax.random.normal(jax.random.key(1), (2, 32, 32, 3), jnp.float64)
    ours = _train_gradients(model, variables, images, monkeypatch, plain=False)
    reference = _train_gradients(model, variables, images, monkeypatch, plain=True)
    # The variables (names, shapes, PyTorch's initial values) are the plain convs'.
    monkeypatch.setattr(hourglass, '_BiasUntrainedConv', nn.Conv)
    plain = init_variables(model, jax.random.key(0), (1, 32, 32, 3))
  finally:
    jax.config.update('jax_enable_x64', False)
  assert ours[0]['stem/conv1/bias'].dtype == np.float64
  jax.tree.map(np.testing.assert_array_equal, plain, variables)
  # 2 stacks of 5 bottlenecks and the stem's 3: 26, with 2 fc, the stem's conv and 2 FAU convs.
  _check(ours, reference, minimum=31)


def test_paper_fau_biases_into_batch_norm_get_no_gradient(monkeypatch):
  fau = PaperFAU(num_branches=3, num_joints=J, features=8, hidden=8, dtype=jnp.float64,
                 param_dtype=jnp.float64)
  jax.config.update('jax_enable_x64', True)
  try:
    features = jax.random.normal(jax.random.key(2), (2, 8, 8, 8), jnp.float64)
    variables = fau.init(jax.random.key(3), features, train=False)
    ours = _train_gradients(fau, variables, features, monkeypatch, plain=False)
    reference = _train_gradients(fau, variables, features, monkeypatch, plain=True)
  finally:
    jax.config.update('jax_enable_x64', False)
  _check(ours, reference, minimum=3)  # conv3, conv5, conv7; not the projections
