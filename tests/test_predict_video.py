"""Pose prediction on video: boxes follow the joints, every frame drawn and written, clear refusals.

The clip is made here: a synthetic figure (data_prep/synthetic.py) walking right across a plain
frame, 10 frames of 128x80 written with OpenCV's mp4v. One tiny MPII hourglass export (1 stack,
16 channels, 64 px input, random weights) serves the module; its predictions are noise, so the
following rule is tested on known joints and the pipeline on its wiring (each box is the rule
applied to the previous frame's joints).
"""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from data_prep import synthetic
from okdhp_jax.inference import PosePredictor, video
from okdhp_jax.models import plain_hourglass_config
from okdhp_jax.tools import predict as predict_tool
from test_inference import save_export

FRAMES, WIDTH, HEIGHT = 10, 128, 80
BOXES = ('2,8,64,64', '60,20,40,50')  # the figure's tile on frame 0, and a second person


@pytest.fixture(scope='module')
def export(tmp_path_factory):
  config = plain_hourglass_config(1, features=16, depth=2)
  return save_export(str(tmp_path_factory.mktemp('export')), config, dataset='mpii')


@pytest.fixture(scope='module')
def clip(tmp_path_factory):
  """A figure whose 64 px tile moves 4 px right per frame."""
  path = str(tmp_path_factory.mktemp('clip') / 'walk.mp4')
  tile, _, _, _ = synthetic.render(np.random.default_rng(3), 64, clutter=False)
  writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*'mp4v'), 10, (WIDTH, HEIGHT))
  for i in range(FRAMES):
    frame = np.broadcast_to(tile[0, 0], (HEIGHT, WIDTH, 3)).copy()
    frame[8:72, 2 + 4 * i:66 + 4 * i] = tile
    writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
  writer.release()
  return path


def read_video(path):
  capture = cv2.VideoCapture(path)
  frames = []
  while True:
    ok, frame = capture.read()
    if not ok:
      break
    frames.append(frame)
  capture.release()
  return np.stack(frames)


def test_the_box_follows_the_confident_joints():
  rng = np.random.default_rng(0)
  keypoints = rng.uniform([20, 10], [40, 50], (16, 2))
  keypoints[:2] = [[20, 10], [40, 50]]  # the corners of the joints' box
  scores = np.ones(16)
  frame = (128, 80)
  box = video.next_box([0, 0, 10, 10], keypoints, scores, frame)
  np.testing.assert_allclose(box, [17.5, 5, 25, 50])  # grown 1.25x around (30, 30)
  moved = video.next_box(box, keypoints + [15, 5], scores, frame)
  np.testing.assert_allclose(moved, box + [15, 5, 0, 0])

  # Half the joints (8 of 16) are enough and alone make the box; 7 keep the previous box.
  scores[8:] = 0.29
  keypoints[8:] += 30
  np.testing.assert_allclose(video.next_box(box, keypoints, scores, frame), [17.5, 5, 25, 50])
  scores[7] = 0.1
  np.testing.assert_array_equal(video.next_box(box, keypoints, scores, frame), box)
  keypoints[:9] = np.nan  # not finite: not seen, whatever the score (7 joints left)
  np.testing.assert_array_equal(video.next_box(box, keypoints, np.ones(16), frame), box)

  # Cut to the frame; joints wholly off it keep the previous box.
  edge = rng.uniform([0, 60], [20, 79], (16, 2))
  edge[:2] = [[0, 60], [20, 79]]
  np.testing.assert_allclose(video.next_box(box, edge, np.ones(16), frame),
                             [0, 57.625, 22.5, 22.375])  # [-2.5, 57.6] to [22.5, 81.4], cut
  np.testing.assert_array_equal(video.next_box(box, edge - [60, 0], np.ones(16), frame), box)
  rule = video.FollowRule(score_threshold=0.5, min_joints=2, padding=1.0)
  two = np.zeros(16)
  two[:2] = 1
  edge[:2] = [[30, 20], [50, 60]]
  np.testing.assert_allclose(video.next_box(box, edge, two, frame, rule), [30, 20, 20, 40])


def test_each_box_is_the_previous_frames_joints_followed(export, clip):
  """The pipeline's wiring: frame t's boxes are next_box of frame t-1's results."""
  predictor = PosePredictor.from_export(export, batch_size=2)
  rule = video.FollowRule(score_threshold=-np.inf)  # every joint seen: random weights move it
  start = [[2, 8, 64, 64], [60, 20, 40, 50]]
  results = [r for _, r in video.predict_frames(predictor, video.VideoReader(clip),
                                                boxes=start, follow=rule)]
  assert len(results) == FRAMES and predictor.compile_count == 1
  np.testing.assert_array_equal(results[0].boxes, start)
  for before, after in zip(results, results[1:]):
    expected = [video.next_box(*person, (WIDTH, HEIGHT), rule)
                for person in zip(before.boxes, before.keypoints, before.scores)]
    np.testing.assert_array_equal(after.boxes, expected)
  assert not np.array_equal(results[1].boxes, results[0].boxes)


def test_the_tool_draws_every_frame_and_writes_the_joints(export, clip, tmp_path, capsys):
  out, poses = tmp_path / 'out' / 'drawn.mp4', tmp_path / 'poses.json'
  code = predict_tool.main(['--checkpoint', export, '--video', clip, '--box', BOXES[0],
                            '--box', BOXES[1], '--out', str(out), '--results', str(poses)])
  printed = capsys.readouterr()
  assert code == 0, printed.err
  assert f'frame {FRAMES}/{FRAMES} (100.0%)' in printed.out and 'ETA' in printed.out
  assert f'{FRAMES} frames, {2 * FRAMES} people: ' in printed.out and 'frames/s' in printed.out
  drawn = read_video(str(out))
  assert drawn.shape == (FRAMES, HEIGHT, WIDTH, 3)
  assert np.abs(drawn.astype(int) - read_video(clip)).mean() > 0.5  # boxes, skeletons

  written = json.loads(poses.read_text())
  assert (written['width'], written['height'], written['fps']) == (WIDTH, HEIGHT, 10.0)
  assert len(written['joint_names']) == 16 and len(written['frames']) == FRAMES
  boxes = np.array([frame['boxes'] for frame in written['frames']])
  keypoints = np.array([frame['keypoints'] for frame in written['frames']])
  assert boxes.shape == (FRAMES, 2, 4) and keypoints.shape == (FRAMES, 2, 16, 3)
  assert [frame['frame'] for frame in written['frames']] == list(range(FRAMES))
  np.testing.assert_array_equal(boxes[0], [[2, 8, 64, 64], [60, 20, 40, 50]])
  assert (boxes[..., :2] >= 0).all() and (boxes[..., 0] + boxes[..., 2] <= WIDTH).all()
  assert (boxes[..., 1] + boxes[..., 3] <= HEIGHT).all()


def test_a_detections_file_gives_each_frame_its_people(export, clip, tmp_path, capsys):
  detections = tmp_path / 'boxes.json'
  detections.write_text(json.dumps({'frames': [
      [[2, 8, 64, 64, 0.9], [60, 20, 40, 50]], [], [[10, 8, 64, 64, 0.2]],
      [[14, 8, 64, 64, 0.7]]]}))
  poses = tmp_path / 'poses.json'
  code = predict_tool.main(['--checkpoint', export, '--video', clip, '--detections',
                            str(detections), '--det-score-threshold', '0.5', '--results',
                            str(poses)])
  printed = capsys.readouterr()
  assert code == 0, printed.err
  assert f'lists 4 frames, the video has {FRAMES}' in printed.out
  frames = json.loads(poses.read_text())['frames']
  assert [len(frame['boxes']) for frame in frames] == [2, 0, 0, 1] + [0] * (FRAMES - 4)
  assert frames[3]['boxes'] == [[14, 8, 64, 64]]
  assert np.shape(frames[0]['keypoints']) == (2, 16, 3)

  malformed = {'[1, 2, 3]': 'frames[1][0] must be [x, y, w, h] or [x, y, w, h, score]',
               '[200, 8, 20, 20]': 'frames[1][0] (x, y, w, h = 200, 8, 20, 20) lies entirely '
                                   'outside the frames of',
               '[5, 8, 0, 20]': 'frames[1][0] (x, y, w, h = 5, 8, 0, 20) on the frames of'}
  for entry, message in malformed.items():
    detections.write_text(f'{{"frames": [[], [{entry}]]}}')
    code = predict_tool.main(['--checkpoint', export, '--video', clip, '--detections',
                              str(detections), '--results', str(poses)])
    error = capsys.readouterr().err.strip()
    assert code == 1 and len(error.splitlines()) == 1 and message in error, error
  detections.write_text('[[2, 8, 64, 64]]')
  assert predict_tool.main(['--checkpoint', export, '--video', clip, '--detections',
                            str(detections), '--results', str(poses)]) == 1
  assert 'is not a video detections file' in capsys.readouterr().err


def test_unreadable_videos_and_bad_boxes_are_one_line_naming_them(clip, tmp_path, capsys):
  """Refused before the export loads (it does not exist here)."""
  (tmp_path / 'notes.mp4').write_text('not a video')
  writer = cv2.VideoWriter(str(tmp_path / 'empty.avi'), cv2.VideoWriter_fourcc(*'MJPG'), 10,
                           (WIDTH, HEIGHT))
  writer.release()
  png = tmp_path / 'still.png'
  cv2.imwrite(str(png), np.zeros((HEIGHT, WIDTH, 3), np.uint8))
  cases = {
      (str(tmp_path / 'missing.mp4'),): 'video file {} does not exist',
      (str(tmp_path / 'notes.mp4'),): '{} is not a video OpenCV can read',
      (str(tmp_path / 'empty.avi'),): '{} holds no frames OpenCV can read',
      (str(png),): '{} is an image (PNG), not a video',
      (clip, '--box', '130,10,20,20'): ('--box (x, y, w, h = 130, 10, 20, 20) lies entirely '
                                        'outside frame 0 of {} (128x80 pixels)'),
      (clip, '--box', '2,8,64,64', '--box', '10,-90,20,20'): '--box #2 (x, y, w, h = 10, -90',
      (clip, '--box', '2,8,0,64'): "--box '2,8,0,64' needs a positive width and height",
      (clip, '--box', '2,8,64,64', '--out', clip): '--out {} is the video being read',
  }
  for (path, *more), message in cases.items():
    out = [] if '--out' in more else ['--out', str(tmp_path / 'drawn.mp4')]
    code = predict_tool.main(['--checkpoint', str(tmp_path / 'no_export'), '--video', path,
                              *more, *out])
    error = capsys.readouterr().err.strip()
    assert code == 1 and len(error.splitlines()) == 1, error
    assert error.startswith(f'predict: error: {message.format(path)}'), error
  with pytest.raises(SystemExit):
    predict_tool.main(['--checkpoint', 'x', '--video', clip])  # neither --out nor --results
