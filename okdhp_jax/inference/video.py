r"""Poses on video: people followed from frame to frame, or given per frame by a detector.

  python -m okdhp_jax.tools.predict --checkpoint runs/hg4/export --video in.mp4 \
      --box x,y,w,h [--box ...] --out out.mp4 [--results poses.json]
  summary = predictor.predict_video('in.mp4', boxes=[[10, 20, 200, 400]], out='out.mp4')

Following (the top-down demos' rule; the growth and the half-the-joints minimum are mmdeploy
PoseTracker's defaults): each person starts at their box on the first frame; the next frame's
box is the bounding box of the joints predicted with a score of at least 0.3 (between HRNet's
0.2 for a visible joint and mmdeploy's 0.5), grown 1.25x around its centre and cut to the frame.
With fewer than half the joints that confident (the person is occluded or lost), the box stays
where it was.
A detections file gives every frame its own boxes instead (read_detections), and nothing is
carried from one frame to the next.

Frames are read one at a time with OpenCV (BGR turned RGB); the people of a frame go to the
device together (PosePredictor: `batch_size` people per call, compiled once); skeletons are
drawn on the frame, which is written to an mp4 ('mp4v') at the input's frame rate. No more than
one frame is held at a time, and the results json is written frame by frame.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import time
from typing import Any, Callable, Iterator, Sequence

import cv2
import numpy as np
from PIL import Image, ImageDraw, UnidentifiedImageError

from okdhp_jax import progress as progress_lib
from okdhp_jax.evaluation import visualize
from okdhp_jax.inference import images as images_lib

# Written when a container names no frame rate (a raw stream).
DEFAULT_FPS = 25.0


@dataclasses.dataclass(frozen=True)
class FollowRule:
  """How a person's box follows their joints to the next frame.

  Attributes:
    score_threshold: joints scoring at least this count as seen (heatmap maxima).
    min_joints: fewer seen joints keep the previous box; None: half the joints, rounded up.
    padding: the seen joints' bounding box grows by this factor around its centre.
  """

  score_threshold: float = 0.3
  min_joints: int | None = None
  padding: float = 1.25


def next_box(box, keypoints, scores, frame_size: tuple[int, int],
             rule: FollowRule = FollowRule()) -> np.ndarray:
  """A person's box (x, y, w, h) float64 [4] in the next frame.

  Args:
    box: [4] the box the person was cropped from in this frame.
    keypoints: [J, 2] their joints in this frame's pixels; scores: [J].
    frame_size: (width, height) of the frames.
  """
  keypoints = np.asarray(keypoints, np.float64)
  seen = np.isfinite(keypoints).all(-1) & (np.asarray(scores, np.float64) >= rule.score_threshold)
  needed = rule.min_joints if rule.min_joints is not None else math.ceil(len(keypoints) / 2)
  previous = np.asarray(box, np.float64).reshape(4)
  if seen.sum() < max(needed, 1):
    return previous
  low, high = keypoints[seen].min(0), keypoints[seen].max(0)
  centre, half = (low + high) / 2, (high - low) * rule.padding / 2
  low = np.maximum(centre - half, 0.0)
  high = np.minimum(centre + half, np.asarray(frame_size, np.float64))
  # Joints in a line or a point, or all off the frame: nothing to crop around.
  if np.any(high - low < 1.0):
    return previous
  return np.concatenate([low, high - low])


class VideoReader:
  """A video file opened with OpenCV and checked; its frames are read once, in order.

  Attributes:
    path: the file.
    width, height: of the frames, in pixels.
    fps: frames per second (DEFAULT_FPS when the container names none).
    frame_count: the container's count, 0 when unknown (some containers only estimate it).
  """

  def __init__(self, path: str | os.PathLike):
    self.path = os.fspath(path)
    if not os.path.exists(self.path):
      raise FileNotFoundError(f'video file {self.path} does not exist')
    if os.path.isdir(self.path):
      raise ValueError(f'{self.path} is a folder, not a video')
    _refuse_images(self.path)
    with _quiet_opencv():
      self._capture = cv2.VideoCapture(self.path)
      ok, first = self._capture.read() if self._capture.isOpened() else (False, None)
    if not self._capture.isOpened():
      raise ValueError(f'{self.path} is not a video OpenCV can read')
    if not ok or first is None:
      self._capture.release()
      raise ValueError(f'{self.path} holds no frames OpenCV can read')
    self._first = cv2.cvtColor(first, cv2.COLOR_BGR2RGB)
    self.height, self.width = self._first.shape[:2]
    fps = self._capture.get(cv2.CAP_PROP_FPS)
    self.fps = float(fps) if np.isfinite(fps) and fps > 0 else DEFAULT_FPS
    count = self._capture.get(cv2.CAP_PROP_FRAME_COUNT)
    self.frame_count = int(count) if np.isfinite(count) and count > 0 else 0

  def first_frame(self) -> images_lib.ImageSource:
    """The first frame, as the predictor opens images (for checking boxes against it)."""
    self._check_unread()
    return images_lib.open_image(self._first, self.frame_name(0))

  def frame_name(self, index: int) -> str:
    return f'frame {index} of {self.path}'

  def __iter__(self) -> Iterator[np.ndarray]:
    """uint8 RGB frames [height, width, 3], one at a time; the file is closed at the end."""
    self._check_unread()
    frame, self._first = self._first, None
    try:
      while frame is not None:
        yield frame
        ok, frame = self._capture.read()
        frame = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB) if ok and frame is not None else None
    finally:
      self.close()

  def close(self) -> None:
    self._capture.release()

  def _check_unread(self) -> None:
    if self._first is None:
      raise ValueError(f'{self.path} has been read already: open it again')


def _refuse_images(path: str) -> None:
  """OpenCV reads a JPEG or PNG as a one-frame video; a still image is refused by name (an
  animated GIF or WebP is left to OpenCV)."""
  try:
    with Image.open(path) as image:
      kind, frames = image.format, getattr(image, 'n_frames', 1)
  except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
    return
  if frames == 1:
    raise ValueError(f'{path} is an image ({kind}), not a video')


@contextlib.contextmanager
def _quiet_opencv():
  """OpenCV's and FFmpeg's own warnings off while a file is probed: the refusal says it in
  one line. FFmpeg reads its level once, when OpenCV first starts it; errors only (8 is
  AV_LOG_FATAL) unless the user set OPENCV_FFMPEG_LOGLEVEL."""
  os.environ.setdefault('OPENCV_FFMPEG_LOGLEVEL', '8')
  level = cv2.utils.logging.getLogLevel()
  cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
  try:
    yield
  finally:
    cv2.utils.logging.setLogLevel(level)


class VideoWriter:
  """An mp4 ('mp4v') written frame by frame from uint8 RGB frames [height, width, 3]."""

  def __init__(self, path: str | os.PathLike, fps: float, width: int, height: int):
    self.path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(self.path))
    os.makedirs(folder, exist_ok=True)
    with _quiet_opencv():
      self._writer = cv2.VideoWriter(self.path, cv2.VideoWriter_fourcc(*'mp4v'), float(fps),
                                     (int(width), int(height)))
    if not self._writer.isOpened():
      raise ValueError(f"cannot write video {self.path}: OpenCV's mp4v writer refused it "
                       '(name it .mp4, in a folder you can write)')

  def write(self, frame: np.ndarray) -> None:
    self._writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))

  def close(self) -> None:
    self._writer.release()


def read_detections(path: str, video: VideoReader, score_threshold: float = 0.0,
                    ) -> list[np.ndarray]:
  """Per frame, the person boxes [N_i, 4] (x, y, w, h) scoring >= score_threshold.

  The file: {"frames": [[[x, y, w, h, score], ...], ...]}, one list of boxes per frame in
  frame order (the score is optional, 1 by default; a frame past the end of the list has no
  people). Every box is checked against the frame size; an entry that is not 4 or 5 finite
  numbers, has no positive width and height or lies wholly outside the frame is refused by
  name (`frames[3][1]`).
  """
  if not os.path.exists(path):
    raise FileNotFoundError(f'detections file {path} does not exist')
  try:
    with open(path, encoding='utf-8') as f:
      data = json.load(f)
  except (json.JSONDecodeError, UnicodeDecodeError) as error:
    raise ValueError(f'detections file {path} is not valid json ({error})') from None
  what = f'detections file {path} is not a video detections file'
  if not isinstance(data, dict) or not isinstance(data.get('frames'), list):
    raise ValueError(f'{what}: it must be {{"frames": [[[x, y, w, h, score], ...], ...]}}')
  # Every frame has the first one's size.
  frame = dataclasses.replace(video.first_frame(), name=f'the frames of {video.path}')
  boxes = []
  for index, entries in enumerate(data['frames']):
    if not isinstance(entries, list):
      raise ValueError(f'{what}: frames[{index}] must be a list of boxes; got {entries!r:.100}')
    kept, labels = [], []
    for number, entry in enumerate(entries):
      label = f'{path} frames[{index}][{number}]'
      try:
        values = np.asarray(entry, np.float64)
      except (TypeError, ValueError):
        values = np.zeros(0)
      if values.shape not in ((4,), (5,)) or not np.isfinite(values).all():
        raise ValueError(f'{label} must be [x, y, w, h] or [x, y, w, h, score] (finite '
                         f'numbers); got {entry!r:.100}')
      if len(values) == 4 or values[4] >= score_threshold:
        kept.append(values[:4])
        labels.append(label)
    boxes.append(images_lib.check_boxes(np.reshape(kept, (-1, 4)), frame, labels) if kept
                 else np.zeros((0, 4)))
  return boxes


def predict_frames(predictor, video: VideoReader, *, boxes=None,
                   detections: Sequence[np.ndarray] | None = None,
                   follow: FollowRule = FollowRule()) -> Iterator[tuple[np.ndarray, Any]]:
  """(frame uint8 [H, W, 3], PoseResult) frame after frame; the boxes are checked now.

  Args:
    predictor: a PosePredictor.
    boxes: [N, 4] the people to follow, on the first frame; None (and no detections): the
      whole frame is one person.
    detections: per frame [N_i, 4] boxes (read_detections) instead of following.
    follow: how boxes follow the joints (next_box).
  """
  if boxes is not None and detections is not None:
    raise ValueError('give boxes to follow or detections per frame, not both')
  if detections is None:
    boxes = [[0.0, 0.0, video.width, video.height]] if boxes is None else boxes
    boxes = images_lib.check_boxes(boxes, video.first_frame())
  return _frames(predictor, video, boxes, detections, follow)


def _frames(predictor, video: VideoReader, boxes, detections, follow: FollowRule):
  frame_size = (video.width, video.height)
  for index, frame in enumerate(video):
    if detections is not None:
      boxes = detections[index] if index < len(detections) else np.zeros((0, 4))
    source = images_lib.open_image(frame, video.frame_name(index))
    result = predictor.predict_sources([source], [boxes])[0]
    yield frame, result
    if detections is None:
      boxes = np.stack([next_box(*person, frame_size, follow)
                        for person in zip(result.boxes, result.keypoints, result.scores)])


def draw_people(pixels: np.ndarray, result, meta, score_threshold: float) -> np.ndarray:
  """Every person's box (thin, grey) and skeleton on the full-resolution image."""
  # Lines grow with the image, so that a skeleton on a 4000 px photo is still visible.
  size = max(1, round(min(pixels.shape[:2]) / 250))
  canvas = Image.fromarray(pixels)
  outline = ImageDraw.Draw(canvas)
  for x, y, w, h in result.boxes:
    outline.rectangle([x, y, x + w, y + h], outline=(200, 200, 200), width=max(1, size // 2))
  drawn = np.asarray(canvas)
  for keypoints, scores in zip(result.keypoints, result.scores):
    drawn = visualize.draw_pose(drawn, keypoints, meta, scores=scores,
                                score_threshold=score_threshold, radius=2 + 2 * size,
                                width=1 + 2 * size)
  return drawn


@dataclasses.dataclass(frozen=True)
class VideoSummary:
  """What predict_video did.

  Attributes:
    frames: frames read, predicted and written.
    people: people predicted over all frames.
    seconds: wall time of all frames (compiling excluded).
    frames_per_second: from the second frame on (the first one also builds the crop op).
    compile_seconds: compiling the predict step (0 when compiled already).
  """

  frames: int
  people: int
  seconds: float
  frames_per_second: float
  compile_seconds: float


def _results_header(predictor, video: VideoReader) -> dict[str, Any]:
  return {'video': video.path, 'fps': video.fps, 'width': video.width, 'height': video.height,
          'dataset': predictor.meta.name, 'joint_names': list(predictor.meta.joint_names)}


class _ResultsFile:
  """The results json, written frame by frame: a header, then {"frames": [...]}."""

  def __init__(self, path: str, header: dict[str, Any]):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    self._file = open(path, 'w', encoding='utf-8')
    self._file.write(json.dumps(header)[:-1] + ', "frames": [\n')
    self._count = 0

  def add(self, result) -> None:
    keypoints = np.concatenate([result.keypoints, result.scores[..., None]], axis=-1)
    frame = {'frame': self._count, 'boxes': np.round(result.boxes, 3).tolist(),
             'keypoints': np.round(keypoints, 3).tolist()}
    self._file.write((',\n' if self._count else '') + json.dumps(frame))
    self._count += 1

  def close(self) -> None:
    self._file.write('\n]}\n')
    self._file.close()


def predict_video(predictor, video, out: str | None = None, *, boxes=None,
                  detections: Sequence[np.ndarray] | None = None, results: str | None = None,
                  score_threshold: float = 0.2, follow: FollowRule = FollowRule(),
                  report: Callable[[str], None] | None = None,
                  report_every_s: float = 2.0) -> VideoSummary:
  """Predicts every frame of a video, draws the skeletons to `out` and the joints to `results`.

  Args:
    predictor: a PosePredictor.
    video: a path or a VideoReader not read yet.
    out: the mp4 to write, the input's frames with boxes and skeletons drawn.
    boxes, detections, follow: as predict_frames.
    results: a json file: {"video", "fps", "width", "height", "dataset", "joint_names",
      "frames": [{"frame": i, "boxes": [N, 4], "keypoints": [N, J, 3] (x, y, score)}, ...]};
      following, person k of every frame is the k-th of `boxes`.
    score_threshold: joints below it are not drawn.
    report: called with a progress line (ProgressLine: count, rate, ETA) every
      report_every_s seconds and after the last frame.
  """
  video = video if isinstance(video, VideoReader) else VideoReader(video)
  if out and os.path.abspath(out) == os.path.abspath(video.path):
    raise ValueError(f'{out} is the video being read: write the drawn one elsewhere')
  poses = predict_frames(predictor, video, boxes=boxes, detections=detections, follow=follow)
  line = progress_lib.ProgressLine(video.frame_count, images_per_unit=1, label='frame',
                                   rate_unit='frames/s')
  frames = people = 0
  with contextlib.ExitStack() as files:
    files.callback(video.close)
    compile_seconds = predictor.compile()
    writer = out and files.enter_context(contextlib.closing(
        VideoWriter(out, video.fps, video.width, video.height)))
    results_file = results and files.enter_context(contextlib.closing(
        _ResultsFile(results, _results_header(predictor, video))))
    start = last_report = time.time()
    for frame, result in poses:
      if writer:
        writer.write(draw_people(frame, result, predictor.meta, score_threshold))
      if results_file:
        results_file.add(result)
      frames, people = frames + 1, people + len(result)
      line.total = max(line.total, frames)  # the container's count may fall short.
      if frames == 1:
        line.restart(1)  # rates from the second frame: the first also builds the crop op.
      if report and frames > 1 and time.time() - last_report >= report_every_s:
        report(line(frames))
        last_report = time.time()
  seconds = time.time() - start
  if report:
    report(line(frames))
  rate = line.images_per_second(frames) if frames > 1 else frames / max(seconds, 1e-6)
  return VideoSummary(frames, people, seconds, rate, compile_seconds)
