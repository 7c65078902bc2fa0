"""Flip test: flip back, swap pairs, shift one pixel right, average; checked by hand."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from okdhp_jax import sharding
from okdhp_jax.codecs.heatmap import flip_back
from okdhp_jax.data import normalization
from okdhp_jax.evaluation import predict_step as predict_step_lib
from okdhp_jax.models.outputs import PoseOutputs

FLIP_PERM = np.array([1, 0, 2], np.int32)  # pair (0, 1); joint 2 maps to itself.


class EchoModel(nn.Module):
  """A parameter-free stand-in: the 'heatmaps' are the (normalised) input channels themselves.

  Two branches (x and x^2), FAU weights from per-joint means, so every output depends on the
  image and a flipped pass differs from a plain one.
  """

  @nn.compact
  def __call__(self, images, *, train):
    del train
    branches = ((images,), (jnp.square(images),))
    logits = jnp.stack([images.mean((1, 2)), -images.mean((1, 2))], axis=1)  # [b, 2, j]
    weights = jax.nn.softmax(logits, axis=1)
    ensemble = sum(weights[:, b][:, None, None, :] * branches[b][-1] for b in range(2))
    return PoseOutputs(shared=(), branches=branches, fau_weights=weights, ensemble=ensemble)


def eval_config(flip_test=True, shift=True):
  return ml_collections.ConfigDict({'eval': {'flip_test': flip_test, 'shift_heatmap': shift}})


def normalized(images):
  """uint8 pixels -> the ImageNet-normalised float64 the step feeds the network."""
  return (images / 255.0 - np.array(normalization.IMAGENET_MEAN)) / np.array(
      normalization.IMAGENET_STD)


def test_predict_refuses_float_images():
  predict = predict_step_lib.make_predict_step(eval_config(), EchoModel(),
                                               mesh=sharding.make_mesh(1), flip_perm=FLIP_PERM)
  with pytest.raises(ValueError, match='must be uint8 pixels'):
    predict({}, np.zeros((2, 8, 16, 3), np.float32))


def numpy_outputs(x):
  weights = np.exp(np.stack([x.mean((1, 2)), -x.mean((1, 2))], 1))
  weights /= weights.sum(1, keepdims=True)
  branches = np.stack([x, x**2])
  ensemble = weights[:, 0][:, None, None] * x + weights[:, 1][:, None, None] * x**2
  return branches, ensemble, weights


def numpy_flip_back(maps):
  """HRNet's flip_back + shift_heatmap, NHWC: mirror width, swap pairs, out[:, :, 1:] = ..."""
  out = maps[..., ::-1, :][..., FLIP_PERM].copy()
  out[..., 1:, :] = out[..., :-1, :].copy()
  return out


def test_flip_back_known_peak():
  heatmap = np.zeros((1, 8, 16, 3), np.float32)
  heatmap[0, 3, 5, 0] = 1.0  # joint 0 at x = 5 in the mirrored image
  back = np.asarray(flip_back(heatmap, FLIP_PERM, shift=True))
  # mirrored x = 15 - 5 = 10, becomes joint 1, shifted right by one: x = 11.
  assert back[0, 3, 11, 1] == 1.0 and back.sum() == 1.0
  no_shift = np.asarray(flip_back(heatmap, FLIP_PERM, shift=False))
  assert no_shift[0, 3, 10, 1] == 1.0 and no_shift.sum() == 1.0


def test_predict_with_flip_test_matches_hand_computation():
  images = np.random.default_rng(0).integers(0, 256, (2, 8, 16, 3), np.uint8)
  mesh = sharding.make_mesh(1)
  predict = predict_step_lib.make_predict_step(eval_config(), EchoModel(), mesh=mesh,
                                        flip_perm=FLIP_PERM)
  result = jax.device_get(predict({}, images))

  branches, ensemble, weights = numpy_outputs(normalized(images))
  m_branches, m_ensemble, m_weights = numpy_outputs(normalized(images[:, :, ::-1]))
  np.testing.assert_allclose(result['branches'],
                             0.5 * (branches + numpy_flip_back(m_branches)), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(result['ensemble'],
                             0.5 * (ensemble + numpy_flip_back(m_ensemble)), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(result['fau_weights'],
                             0.5 * (weights + m_weights[..., FLIP_PERM]), rtol=1e-5)
  assert result['branches'].shape == (2, 2, 8, 16, 3)


def test_predict_without_flip_is_plain_forward():
  images = np.random.default_rng(1).integers(0, 256, (2, 8, 16, 3), np.uint8)
  predict = predict_step_lib.make_predict_step(eval_config(flip_test=False), EchoModel(),
                                        mesh=sharding.make_mesh(1), flip_perm=FLIP_PERM)
  result = jax.device_get(predict({}, images))
  branches, ensemble, _ = numpy_outputs(normalized(images))
  np.testing.assert_allclose(result['branches'], branches, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(result['ensemble'], ensemble, rtol=1e-5, atol=1e-6)
