"""Heatmap targets on device vs a plain NumPy loop written the way HRNet writes it."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from okdhp_jax.codecs.heatmap import render_heatmaps


def numpy_reference(joints, joints_vis, input_size, heatmap_size, sigma):
  """HRNet's JointsDataset.generate_target, one person at a time (sizes are (h, w))."""
  batch, num_joints, _ = joints.shape
  heat_h, heat_w = heatmap_size
  stride = (input_size[1] / heat_w, input_size[0] / heat_h)
  target = np.zeros((batch, num_joints, heat_h, heat_w), np.float32)
  weight = np.zeros((batch, num_joints), np.float32)
  tmp_size = sigma * 3
  for b in range(batch):
    for j in range(num_joints):
      weight[b, j] = joints_vis[b, j]
      mu_x = int(float(joints[b, j, 0]) / stride[0] + 0.5)
      mu_y = int(float(joints[b, j, 1]) / stride[1] + 0.5)
      ul = [int(mu_x - tmp_size), int(mu_y - tmp_size)]
      br = [int(mu_x + tmp_size + 1), int(mu_y + tmp_size + 1)]
      if ul[0] >= heat_w or ul[1] >= heat_h or br[0] < 0 or br[1] < 0:
        weight[b, j] = 0
        continue
      size = 2 * tmp_size + 1
      x = np.arange(0, size, 1, np.float32)
      y = x[:, None]
      x0 = y0 = size // 2
      g = np.exp(-((x - x0)**2 + (y - y0)**2) / (2 * sigma**2))
      g_x = max(0, -ul[0]), min(br[0], heat_w) - ul[0]
      g_y = max(0, -ul[1]), min(br[1], heat_h) - ul[1]
      img_x = max(0, ul[0]), min(br[0], heat_w)
      img_y = max(0, ul[1]), min(br[1], heat_h)
      if weight[b, j] > 0.5:
        target[b, j, img_y[0]:img_y[1], img_x[0]:img_x[1]] = g[g_y[0]:g_y[1], g_x[0]:g_x[1]]
  return target.transpose(0, 2, 3, 1), weight


def random_case(rng, batch, num_joints, input_size):
  height, width = input_size
  # Joints anywhere from well outside the image to well inside, plus hand-picked edges.
  joints = np.zeros((batch, num_joints, 2))
  joints[..., 0] = rng.uniform(-40, width + 40, (batch, num_joints))
  joints[..., 1] = rng.uniform(-40, height + 40, (batch, num_joints))
  edges = np.array([[0, 0], [width - 1, height - 1], [-1, 5], [width, 3], [5, height + 1],
                    [-13, -13], [-14, 20], [-30, 10], [width + 30, 10], [width + 25, 30],
                    [2.0, -26.0], [width / 2, height / 2]], np.float32)
  joints[0, :len(edges)] = edges[:num_joints]
  joints = np.round(joints * 4) / 4  # quarter pixels: exact in float32, hits x.5 ties.
  joints_vis = (rng.uniform(size=(batch, num_joints)) > 0.2).astype(np.float32)
  return joints.astype(np.float32), joints_vis


@pytest.mark.parametrize('input_size,heatmap_size,sigma', [
    ((256, 256), (64, 64), 2.0),
    ((256, 192), (64, 48), 2.0),
    ((64, 64), (16, 16), 1.0),
    ((256, 256), (64, 64), 1.5),
])
def test_matches_numpy_reference(input_size, heatmap_size, sigma):
  rng = np.random.default_rng(0)
  render = jax.jit(render_heatmaps, static_argnames=('input_size', 'heatmap_size', 'sigma'))
  for _ in range(3):
    joints, joints_vis = random_case(rng, 4, 16, input_size)
    heatmaps, weight = render(joints, joints_vis, input_size=input_size,
                              heatmap_size=heatmap_size, sigma=sigma)
    want_heatmaps, want_weight = numpy_reference(joints, joints_vis, input_size, heatmap_size,
                                                 sigma)
    assert heatmaps.shape == (4, *heatmap_size, 16)
    np.testing.assert_array_equal(np.asarray(weight), want_weight)
    np.testing.assert_allclose(np.asarray(heatmaps), want_heatmaps, rtol=0, atol=1e-6)
    # The cases really cover the branches: clipped-out, invisible and drawn joints.
    assert 0 < want_weight.sum() < want_weight.size
    assert (joints_vis.astype(bool) & (want_weight == 0)).any()


def test_peak_and_window_by_hand():
  # x = 41 px, stride 4: mu = int(10.25 + 0.5) = 10; y = 22: mu = int(5.5 + 0.5) = 6.
  joints = np.array([[[41.0, 22.0]]], np.float32)
  heatmaps, weight = render_heatmaps(joints, np.ones((1, 1), np.float32),
                                     input_size=(256, 256), heatmap_size=(64, 64), sigma=2.0)
  heatmap = np.asarray(heatmaps)[0, :, :, 0]
  assert weight[0, 0] == 1.0
  assert heatmap[6, 10] == 1.0
  np.testing.assert_allclose(heatmap[6, 11], np.exp(-1 / 8), rtol=1e-6)
  np.testing.assert_allclose(heatmap[0, 4], np.exp(-(36 + 36) / 8), rtol=1e-6)  # corner
  nonzero_x = np.nonzero(heatmap[6])[0]
  assert (nonzero_x.min(), nonzero_x.max()) == (4, 16)  # 13 wide
  assert np.count_nonzero(heatmap[:, 10]) == 13  # rows 0..12 (window starts at row 0)
