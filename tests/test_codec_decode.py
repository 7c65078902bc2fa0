"""Heatmap decoding: argmax, quarter-pixel rule at borders, back-projection (hand-computed)."""

from __future__ import annotations

import numpy as np
import pytest

from okdhp_jax.data import geometry
from okdhp_jax.codecs import heatmap as heatmap_codec


def _one_map(height, width, peak, neighbours=None, value=1.0):
  """[1, H, W, 1] zeros with `value` at peak=(x, y) and {(dx, dy): v} around it."""
  hm = np.zeros((1, height, width, 1), np.float32)
  x, y = peak
  hm[0, y, x, 0] = value
  for (dx, dy), v in (neighbours or {}).items():
    hm[0, y + dy, x + dx, 0] = v
  return hm


def test_quarter_pixel_moves_toward_higher_neighbour():
  hm = _one_map(8, 12, (6, 3), {(1, 0): 0.5, (-1, 0): 0.2, (0, 1): 0.1, (0, -1): 0.3})
  coords, scores = heatmap_codec.decode_heatmaps(hm)
  np.testing.assert_allclose(coords[0, 0], [6.25, 2.75])
  np.testing.assert_allclose(scores[0, 0], 1.0)


def test_symmetric_neighbours_do_not_move():
  hm = _one_map(8, 12, (4, 5), {(1, 0): 0.5, (-1, 0): 0.5, (0, 1): 0.5, (0, -1): 0.5})
  coords, _ = heatmap_codec.decode_heatmaps(hm)
  np.testing.assert_allclose(coords[0, 0], [4.0, 5.0])


def test_gaussian_at_subpixel_location():
  height, width = 16, 20
  ys, xs = np.mgrid[:height, :width]
  g = np.exp(-((xs - 5.4) ** 2 + (ys - 7.8) ** 2) / (2 * 2.0 ** 2))
  coords, scores = heatmap_codec.decode_heatmaps(g[None, :, :, None])
  # argmax (5, 8); right neighbour (6) is nearer 5.4 than 4, upper (7) nearer 7.8 than 9.
  np.testing.assert_allclose(coords[0, 0], [5.25, 7.75])
  np.testing.assert_allclose(scores[0, 0], g[8, 5], rtol=1e-6)


@pytest.mark.parametrize('peak, expected', [
    ((0, 4), (0.0, 4.0)),     # left border
    ((1, 4), (1.0, 4.0)),     # x == 1: HRNet's strict 1 < px leaves both axes alone
    ((10, 4), (10.25, 3.75)),  # x == W - 2 is interior
    ((11, 4), (11.0, 4.0)),   # right border
    ((5, 1), (5.0, 1.0)),     # y == 1
    ((5, 6), (5.25, 5.75)),   # y == H - 2 is interior
    ((5, 7), (5.0, 7.0)),     # bottom border
    ((11, 7), (11.0, 7.0)),   # corner
])
def test_borders(peak, expected):
  height, width = 8, 12
  hm = np.zeros((1, height, width, 1), np.float32)
  x, y = peak
  hm[0, y, x, 0] = 1.0
  # Raise the right and upper neighbours where they exist, so an interior peak would move.
  if x + 1 < width:
    hm[0, y, x + 1, 0] = 0.5
  if y - 1 >= 0:
    hm[0, y - 1, x, 0] = 0.5
  coords, _ = heatmap_codec.decode_heatmaps(hm)
  np.testing.assert_allclose(coords[0, 0], expected)


def test_nhwc_batch_and_joint_layout():
  hm = np.zeros((2, 8, 12, 3), np.float32)
  hm[1, 2, 9, 2] = 0.7  # batch 1, joint 2, (x=9, y=2)
  hm[0, 6, 3, 0] = 0.4
  coords, scores = heatmap_codec.decode_heatmaps(hm)
  assert coords.shape == (2, 3, 2) and scores.shape == (2, 3)
  np.testing.assert_allclose(coords[1, 2], [9.0, 2.0])
  np.testing.assert_allclose(coords[0, 0], [3.0, 6.0])
  np.testing.assert_allclose(scores[1, 2], 0.7)
  # All-zero maps score 0 and decode to (0, 0).
  np.testing.assert_allclose(coords[0, 1], [0.0, 0.0])
  assert scores[0, 1] == 0.0


def test_negative_maximum_decodes_to_origin():
  hm = np.full((1, 8, 8, 1), -1.0, np.float32)
  hm[0, 4, 5, 0] = -0.5
  coords, scores = heatmap_codec.decode_heatmaps(hm)
  np.testing.assert_allclose(coords[0, 0], [0.0, 0.0])
  np.testing.assert_allclose(scores[0, 0], -0.5)


def image_coords(heatmaps, center, scale, input_size):
  """The evaluation's and the predictor's path: decode to input pixels, back through the crop."""
  xy, scores = heatmap_codec.heatmaps_to_input_coords(heatmaps, input_size)
  return geometry.input_to_image(xy, center, scale, input_size), scores


def test_back_projection_hand_computed():
  # Box of 200 px centred at (100, 200) in a 256x256 crop with 64x64 maps: 0.32 map px per
  # image px, map centre (32, 32) is the box centre. Map (40, 20) -> (100 + 8 / 0.32,
  # 200 - 12 / 0.32).
  hm = np.zeros((1, 64, 64, 1), np.float32)
  hm[0, 20, 40, 0] = 1.0
  coords, scores = image_coords(hm, [[100.0, 200.0]], [[1.0, 1.0]], (256, 256))
  np.testing.assert_allclose(coords[0, 0], [125.0, 162.5], atol=1e-9)
  assert scores[0, 0] == 1.0


def test_back_projection_round_trip_non_square():
  center, scale = np.array([[320.0, 240.0]]), np.array([[1.5, 2.0]])  # 48x64 map, 256x192 box
  image_points = np.array([[[300.0, 200.0], [350.0, 310.0]]])
  forward = geometry.affine_matrix(center[0], scale[0], 0.0, (64, 48))
  map_points = geometry.apply_affine(image_points[0], forward)
  hm = np.zeros((1, 64, 48, 2), np.float32)
  for j, (x, y) in enumerate(np.round(map_points).astype(int)):
    hm[0, y, x, j] = 1.0
  coords, _ = image_coords(hm, center, scale, (256, 192))
  # Integer rounding in map pixels is at most 0.5 map px = 0.5 * 300 / 48 image px.
  np.testing.assert_allclose(coords, image_points, atol=0.5 * 300 / 48 * np.sqrt(2))


@pytest.mark.parametrize('input_size, heatmap_size', [((256, 256), (64, 64)),
                                                       ((256, 192), (64, 48)),
                                                       ((384, 288), (96, 72))])
def test_input_pixels_back_project_as_hrnet_does_from_heatmap_pixels(input_size, heatmap_size):
  """HRNet's transform_preds maps heatmap pixels through the heatmap-sized crop; scaling to
  input pixels first (by a power-of-two stride) and using the input-sized crop is the same
  arithmetic scaled by powers of two, so the results agree bit for bit."""
  rng = np.random.default_rng(0)
  hm = rng.normal(size=(20, *heatmap_size, 3)).astype(np.float32)
  center = rng.uniform(0, 800, size=(20, 2)).astype(np.float32)
  scale = rng.uniform(0.2, 5, size=(20, 2)).astype(np.float32)
  coords, scores = image_coords(hm, center, scale, input_size)
  map_coords, map_scores = heatmap_codec.decode_heatmaps(hm)
  hrnet = np.stack([geometry.apply_affine(
      map_coords[i], geometry.affine_matrix(center[i], scale[i], 0.0, heatmap_size, inverse=True))
                    for i in range(len(hm))])
  np.testing.assert_array_equal(coords, hrnet)
  np.testing.assert_array_equal(scores, map_scores)


def test_bad_inputs():
  with pytest.raises(ValueError, match='batch, height, width, joints'):
    heatmap_codec.decode_heatmaps(np.zeros((8, 8, 3)))
  with pytest.raises(ValueError, match='NaN'):
    heatmap_codec.decode_heatmaps(np.full((1, 4, 4, 1), np.nan))
  with pytest.raises(ValueError, match='center'):
    geometry.input_to_image(np.zeros((2, 1, 2)), np.zeros((1, 2)), np.ones((2, 2)), (16, 16))


def test_codec_round_trip_on_heatmap_pixel_centres():
  """Joints on heatmap pixel centres encode to symmetric peaks and decode back exactly."""
  codec = heatmap_codec.HeatmapCodec(input_size=(64, 48), heatmap_size=(16, 12), sigma=1.0)
  joints = np.array([[[8.0, 12.0], [20.0, 40.0], [44.0, 60.0]]], np.float32)  # stride 4.
  heatmaps, weight = codec.encode(joints, np.ones((1, 3), np.float32))
  assert heatmaps.shape == (1, 16, 12, 3)
  np.testing.assert_array_equal(weight, np.ones((1, 3)))
  xy, scores = codec.decode(np.asarray(heatmaps))
  np.testing.assert_allclose(xy, joints)
  np.testing.assert_allclose(scores, 1.0)
  # Image pixels: centre (100, 200), scale 0.32 x 0.24 * 200 px = 64 x 48 px box, so the
  # crop is the identity up to the shift of its top-left corner to (76, 168).
  image_xy = geometry.input_to_image(xy, [[100.0, 200.0]], [[0.24, 0.32]], codec.input_size)
  np.testing.assert_allclose(image_xy, joints + np.array([76.0, 168.0]), atol=1e-9)
