"""Losses against answers computed by hand."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from okdhp_jax.models.outputs import PoseOutputs
from okdhp_jax.methods import okdhp
from okdhp_jax.methods import losses


def loss_config(**overrides):
  config = ml_collections.ConfigDict(dict(
      use_target_weight=True, ensemble_weight=1.0, kd_weight=2.0, kd_temperature=1.0,
      kd_ramp_epochs=90.0, stop_gradient_teacher=False))
  config.update(overrides)
  return config


def test_joints_mse_by_hand():
  pred = np.zeros((2, 2, 2, 3), np.float32)
  target = np.zeros_like(pred)
  pred[0, 0, 0, 0] = 2.0     # joint 0, visible: squared error 4.
  pred[1, 1, 1, 2] = 5.0     # joint 2 of person 1 is invisible: ignored.
  weight = np.array([[1, 1, 1], [1, 1, 0]], np.float32)
  # Per joint 0.5 * mean over 2*2*2 = 8 values: joint 0 -> 0.5 * 4 / 8; average over 3 joints.
  np.testing.assert_allclose(losses.joints_mse(pred, target, weight), 0.5 * 4 / 8 / 3)


def test_sums_over_stacks_are_the_terms_summed():
  """joints_mse_sum and pixelwise_kl_sum (one reduction each) against the per-stack terms
  summed, values and gradients, in float64 at temperatures 1 and 2: they differ only in the
  order of the additions."""
  jax.config.update('jax_enable_x64', True)
  try:
    keys = jax.random.split(jax.random.key(8), 5)
    preds = [jax.random.normal(k, (2, 4, 5, 3), jnp.float64) * 3 for k in keys[:3]]
    target = jax.random.uniform(keys[3], (2, 4, 5, 3), jnp.float64)
    weight = jnp.array([[1.0, 0.0, 1.0], [1.0, 1.0, 0.5]], jnp.float64)
    teacher = jax.random.normal(keys[4], (2, 4, 5, 3), jnp.float64)

    def at_once(ps, t, temperature):
      return (losses.joints_mse_sum(ps, target, weight),
              losses.pixelwise_kl_sum(ps, t, weight, temperature))

    def term_by_term(ps, t, temperature):
      return (sum(losses.joints_mse(p, target, weight) for p in ps),
              sum(losses.pixelwise_kl(p, t, weight, temperature) for p in ps))

    @jax.jit
    def values_and_gradients(temperature):
      # Per form and term: (value, gradients with respect to the predictions and the teacher).
      return [[jax.value_and_grad(lambda ps, t, f=form, i=term: f(ps, t, temperature)[i],
                                  argnums=(0, 1))(preds, teacher) for term in (0, 1)]
              for form in (at_once, term_by_term)]

    for temperature in (1.0, 2.0):
      got, want = values_and_gradients(temperature)
      assert got[0][0].dtype == jnp.float64 and float(got[1][0]) > 0.1
      for (value, grads), (value_want, grads_want) in zip(got, want):
        np.testing.assert_allclose(value, value_want, rtol=1e-13)
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-15),
                     grads, grads_want)
  finally:
    jax.config.update('jax_enable_x64', False)


def test_kl_identical_maps_is_zero():
  maps = jax.random.normal(jax.random.key(0), (2, 4, 4, 3))
  np.testing.assert_allclose(losses.pixelwise_kl(maps, maps, jnp.ones((2, 3))), 0.0, atol=1e-7)


def test_kl_known_pair():
  # One person, one joint, 1x2 map. Teacher logits (0, 0) -> p = (1/2, 1/2);
  # student logits (log 3, 0) -> q = (3/4, 1/4).
  # KL(p || q) = 1/2 log(2/3) + 1/2 log(2), divided by B*H*W = 2.
  teacher = np.zeros((1, 1, 2, 1), np.float32)
  pred = np.array([math.log(3.0), 0.0], np.float32).reshape(1, 1, 2, 1)
  want = (0.5 * math.log(0.5 / 0.75) + 0.5 * math.log(0.5 / 0.25)) / 2
  np.testing.assert_allclose(losses.pixelwise_kl(pred, teacher, np.ones((1, 1))), want,
                             rtol=1e-6)
  # Summed (not averaged) over joints: two copies of the joint give twice the value.
  pred2, teacher2 = np.concatenate([pred] * 2, -1), np.concatenate([teacher] * 2, -1)
  np.testing.assert_allclose(losses.pixelwise_kl(pred2, teacher2, np.ones((1, 2))), 2 * want,
                             rtol=1e-6)
  # Temperature 2: logits halved, times T^2 = 4. q = (sqrt3, 1) / (sqrt3 + 1).
  q = np.array([math.sqrt(3.0), 1.0]) / (math.sqrt(3.0) + 1)
  want_t2 = 4 * np.sum(0.5 * np.log(0.5 / q)) / 2
  np.testing.assert_allclose(losses.pixelwise_kl(pred, teacher, np.ones((1, 1)), 2.0), want_t2,
                             rtol=1e-6)


def test_invisible_joint_contributes_nothing():
  key1, key2 = jax.random.split(jax.random.key(1))
  pred = jax.random.normal(key1, (2, 4, 4, 3))
  teacher = jax.random.normal(key2, (2, 4, 4, 3))
  weight = jnp.array([[1.0, 0.0, 1.0], [1.0, 1.0, 1.0]])
  base_kl = losses.pixelwise_kl(pred, teacher, weight)
  base_mse = losses.joints_mse(pred, jnp.zeros_like(pred), weight)
  assert base_kl > 0 and base_mse > 0
  # Changing the invisible joint's maps arbitrarily changes neither loss.
  pred2 = pred.at[0, :, :, 1].set(100.0 * jax.random.normal(key2, (4, 4)))
  teacher2 = teacher.at[0, :, :, 1].set(-7.0)
  np.testing.assert_allclose(losses.pixelwise_kl(pred2, teacher2, weight), base_kl, rtol=1e-6)
  np.testing.assert_allclose(losses.joints_mse(pred2, jnp.zeros_like(pred), weight), base_mse,
                             rtol=1e-6)


def test_ramp():
  np.testing.assert_allclose(losses.kd_ramp(0.0, 90.0), math.exp(-5), rtol=1e-6)
  np.testing.assert_allclose(losses.kd_ramp(90.0, 90.0), 1.0)
  np.testing.assert_allclose(losses.kd_ramp(200.0, 90.0), 1.0)
  np.testing.assert_allclose(losses.kd_ramp(45.0, 90.0), math.exp(-5 * 0.25), rtol=1e-6)


@pytest.mark.parametrize('integer_epoch', [False, True])
def test_ramp_epoch_is_integer_only_when_asked(integer_epoch):
  """The released code evaluates the ramp at the integer epoch; the default at step / steps."""
  outputs = _outputs(jax.random.key(4), num_branches=2, fau=True)
  config = loss_config(kd_ramp_integer_epoch=integer_epoch)
  ramps = [float(okdhp.okdhp_loss(outputs, jnp.zeros((2, 4, 4, 3)), jnp.ones((2, 3)),
                                  loss_config=config, epoch=e)[1]['kd_ramp'])
           for e in (0.0, 0.9, 1.0, 45.5)]
  smooth = [math.exp(-5 * (1 - e / 90) ** 2) for e in (0.0, 0.9, 1.0, 45.5)]
  stepped = [math.exp(-5 * (1 - e / 90) ** 2) for e in (0.0, 0.0, 1.0, 45.0)]
  np.testing.assert_allclose(ramps, stepped if integer_epoch else smooth, rtol=1e-6)


def _outputs(key, num_branches, fau):
  keys = jax.random.split(key, 8)
  shape = (2, 4, 4, 3)
  shared = (jax.random.normal(keys[0], shape),)
  branches = tuple((jax.random.normal(keys[2 * b + 1], shape),
                    jax.random.normal(keys[2 * b + 2], shape)) for b in range(num_branches))
  if fau:
    weights = jax.nn.softmax(jax.random.normal(keys[7], (2, num_branches, 3)), axis=1)
    ensemble = sum(weights[:, b][:, None, None, :] * branches[b][-1]
                   for b in range(num_branches))
  else:
    weights, ensemble = None, branches[0][-1]
  return PoseOutputs(shared=shared, branches=branches, fau_weights=weights, ensemble=ensemble)


def _np_mse(pred, target, weight):
  w = np.asarray(weight)[:, None, None, :]
  return 0.5 * np.mean(((np.asarray(pred) - np.asarray(target)) * w)**2)


def _np_kl(pred, teacher, weight):
  b, h, w, j = pred.shape
  weight = np.asarray(weight, np.float64)[:, None, :]
  p = np.asarray(pred, np.float64).reshape(b, h * w, j) * weight
  t = np.asarray(teacher, np.float64).reshape(b, h * w, j) * weight
  log_q = p - np.log(np.exp(p).sum(1, keepdims=True))
  log_p = t - np.log(np.exp(t).sum(1, keepdims=True))
  return np.sum(np.exp(log_p) * (log_p - log_q)) / (b * h * w)


def test_okdhp_total_matches_formula():
  outputs = _outputs(jax.random.key(2), num_branches=3, fau=True)
  target = jax.random.uniform(jax.random.key(3), (2, 4, 4, 3))
  weight = jnp.array([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
  total, metrics = okdhp.okdhp_loss(outputs, target, weight, loss_config=loss_config(),
                                     epoch=45.0)
  stacks = outputs.all_stack_heatmaps
  assert len(stacks) == 7
  mse = sum(_np_mse(h, target, weight) for h in stacks)
  ens = _np_mse(outputs.ensemble, target, weight)
  kl = sum(_np_kl(h, outputs.ensemble, weight) for h in stacks)
  want = mse + 1.0 * ens + 2.0 * math.exp(-5 * 0.25) * kl
  np.testing.assert_allclose(total, want, rtol=1e-5)
  np.testing.assert_allclose(metrics['kl'], kl, rtol=1e-5)
  np.testing.assert_allclose(metrics['mse/branch_1'], _np_mse(outputs.branches[1][-1], target,
                                                              weight), rtol=1e-5)
  np.testing.assert_allclose(
      sum(metrics[f'fau_weight/branch_{b}'] for b in range(3)), 1.0, rtol=1e-6)


def test_baseline_has_no_teacher_terms():
  outputs = _outputs(jax.random.key(4), num_branches=1, fau=False)
  target = jnp.zeros((2, 4, 4, 3))
  weight = jnp.ones((2, 3))
  total, metrics = okdhp.okdhp_loss(outputs, target, weight, loss_config=loss_config(),
                                     epoch=100.0)
  want = sum(_np_mse(h, target, weight) for h in outputs.all_stack_heatmaps)
  np.testing.assert_allclose(total, want, rtol=1e-5)
  assert metrics['kl'] == 0 and metrics['mse_ensemble'] == 0
  assert not any(k.startswith('fau_weight') for k in metrics)


def test_kd_weight_zero_skips_kd():
  outputs = _outputs(jax.random.key(5), num_branches=2, fau=True)
  target = jnp.zeros((2, 4, 4, 3))
  _, metrics = okdhp.okdhp_loss(outputs, target, jnp.ones((2, 3)),
                                 loss_config=loss_config(kd_weight=0.0), epoch=100.0)
  assert metrics['kl'] == 0 and metrics['mse_ensemble'] > 0


@pytest.mark.parametrize('stop_gradient', [False, True])
def test_stop_gradient_teacher(stop_gradient):
  """With the switch on, the KD term sends no gradient into the teacher (the ensemble)."""
  outputs = _outputs(jax.random.key(6), num_branches=2, fau=True)
  config = loss_config(stop_gradient_teacher=stop_gradient, ensemble_weight=0.0)

  def kd_only(ensemble):
    # Zero target and zero weight on everything but KD: only KL depends on `ensemble`.
    o = outputs.replace(ensemble=ensemble)
    _, metrics = okdhp.okdhp_loss(o, jnp.zeros((2, 4, 4, 3)), jnp.ones((2, 3)),
                                   loss_config=config, epoch=90.0)
    return metrics['loss'] - metrics['mse_stacks']

  grad = jax.grad(kd_only)(outputs.ensemble)
  assert (np.abs(np.asarray(grad)).max() == 0) == stop_gradient


def test_branch_disagreement_is_the_mean_squared_difference_over_pairs():
  outputs = _outputs(jax.random.key(7), num_branches=3, fau=True)
  _, metrics = okdhp.okdhp_loss(outputs, jnp.zeros((2, 4, 4, 3)), jnp.ones((2, 3)),
                                loss_config=loss_config(), epoch=1.0)
  last = [np.asarray(h) for h in outputs.branch_heatmaps]
  want = np.mean([np.mean((last[a] - last[b]) ** 2) for a, b in ((0, 1), (0, 2), (1, 2))])
  np.testing.assert_allclose(metrics['branch_disagreement'], want, rtol=1e-6)
  same = outputs.replace(branches=(outputs.branches[0],) * 3)
  _, metrics = okdhp.okdhp_loss(same, jnp.zeros((2, 4, 4, 3)), jnp.ones((2, 3)),
                                loss_config=loss_config(), epoch=1.0)
  assert metrics['branch_disagreement'] == 0
