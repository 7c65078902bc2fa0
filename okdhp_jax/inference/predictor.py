"""PosePredictor: an exported network that predicts the joints of many people at once.

  predictor = PosePredictor.from_export('runs/hg4/export', batch_size=32)
  result = predictor.predict('person.jpg', boxes=[[10, 20, 200, 400]])
  result.keypoints  # [people, joints, 2] image pixels; result.scores [people, joints]

The export is loaded and placed on the devices once. People from all the images of a call are
cropped (images.py), gathered into batches of exactly `batch_size` (the last one padded with
black crops) and run through the evaluation's flip-test predict step, compiled ahead of time
for that one shape: a predictor compiles once, whatever the number of people per call, and a
batch of another shape fails loudly rather than compiling again. The next batch is cropped on
the host while the device runs the previous one. Heatmaps are decoded to crop pixels by the
heatmap codec (argmax, quarter-pixel step) and taken back to image pixels through the crop's
inverse affine, as the evaluation does.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any, Iterator, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from okdhp_jax import sharding
from okdhp_jax.data import crop as crop_lib
from okdhp_jax.data import geometry
from okdhp_jax.data import meta as meta_lib
from okdhp_jax.evaluation import evaluator
from okdhp_jax.evaluation import predict_step as predict_step_lib
from okdhp_jax.inference import detections as detections_lib
from okdhp_jax.inference import images as images_lib
from okdhp_jax.inference import video as video_lib


@dataclasses.dataclass(frozen=True)
class PoseResult:
  """The people predicted on one image.

  Attributes:
    keypoints: float64 [people, joints, 2] (x, y) in the image's pixels (0-based, pixel
      centres at integers).
    scores: float32 [people, joints], the maximum of each joint's heatmap.
    boxes: float64 [people, 4] (x, y, w, h), the person boxes the people were cropped from.
  """

  keypoints: np.ndarray
  scores: np.ndarray
  boxes: np.ndarray

  def __len__(self) -> int:
    return len(self.boxes)


@dataclasses.dataclass
class _People:
  """Rows of people on their way through the network, in call order."""

  crops: np.ndarray    # uint8 [n, H, W, 3]
  centers: np.ndarray  # [n, 2]
  scales: np.ndarray   # [n, 2]


class PosePredictor:
  """Predicts joints of people given by boxes on images, `batch_size` people per device call.

  Attributes:
    meta: the dataset layout of the joints (names, skeleton, flip pairs).
    input_size: (height, width) of the network input.
    batch_size: people per device call, the one shape compiled.
    description: the export's model.json ({} when built from a model directly).
  """

  def __init__(self, model, variables: dict[str, Any], meta: meta_lib.DatasetMeta,
               input_size: tuple[int, int], *, flip_test: bool = True,
               batch_size: int = 32, mesh: jax.sharding.Mesh | None = None,
               box_padding: float = 1.25, description: dict[str, Any] | None = None,
               max_decode_reduction: int = crop_lib.DECODE_REDUCTIONS[-1]):
    """Wraps a pose network (`model.apply(variables, images, train=False) -> PoseOutputs`).

    Args:
      flip_test: average with the flipped-back prediction on the mirrored crop (HRNet's).
      batch_size: people per device call; must divide by the mesh's devices.
      mesh: a mesh with a `data` axis (sharding.make_mesh); one device by default.
      box_padding: a box grows by this factor around its centre before cropping (COCO's 1.25).
      max_decode_reduction: the largest JPEG decode reduction of the crop (the training run's
        config.data.max_decode_reduction; okdhp_jax/data/crop.py).
    """
    if batch_size < 1:
      raise ValueError(f'batch_size must be >= 1, got {batch_size}')
    self.meta = meta
    self.input_size = tuple(int(s) for s in input_size)
    self.batch_size = int(batch_size)
    self.box_padding = float(box_padding)
    self.max_decode_reduction = crop_lib.check_max_reduction(max_decode_reduction,
                                                             'max_decode_reduction')
    self.description = dict(description or {})
    self._mesh = mesh if mesh is not None else sharding.make_mesh(1)
    sharding.check_batch_divisible(self.batch_size, self._mesh, 'batch_size')
    eval_config = ml_collections.ConfigDict(
        {'eval': {'flip_test': bool(flip_test), 'shift_heatmap': True}})
    self._step = predict_step_lib.make_predict_step(eval_config, model, mesh=self._mesh,
                                                    flip_perm=meta.flip_permutation())
    self._variables = jax.device_put(variables, sharding.replicated(self._mesh))
    self._executable = None
    self.compile_count = 0

  @classmethod
  def from_export(cls, directory: str, *, flip_test: bool = True, batch_size: int = 32,
                  num_devices: int = 1) -> 'PosePredictor':
    """Loads an export folder (model.json + variables, export/store.py) once.

    Hourglasses and MobilePose networks alike: the model comes from model.json's 'model'
    through build_model. `num_devices` splits each batch over that many devices.
    """
    from okdhp_jax.export import store  # pylint: disable=g-import-not-at-top
    from okdhp_jax.models import build_model  # pylint: disable=g-import-not-at-top
    variables, description = store.load_exported(directory)
    meta = meta_lib.get_meta(description.get('dataset', 'mpii'))
    if int(description['num_joints']) != meta.num_joints:
      raise ValueError(f'{directory}: model.json says num_joints={description["num_joints"]}, '
                       f'but its dataset {meta.name!r} has {meta.num_joints} joints')
    input_size = tuple(description.get('input_size', (256, 256)))
    model = build_model(ml_collections.ConfigDict(description['model']), meta.num_joints,
                        input_size)
    _check_variables_fit(directory, model, variables, input_size)
    # A converted PyTorch network (tools/convert_torch.py) names no cap: the evaluation's default.
    reduction = crop_lib.check_max_reduction(
        description.get('max_decode_reduction', crop_lib.DECODE_REDUCTIONS[-1]),
        f"{directory}: model.json's max_decode_reduction")
    return cls(model, variables, meta, input_size, flip_test=flip_test, batch_size=batch_size,
               mesh=sharding.make_mesh(num_devices), description=description,
               max_decode_reduction=reduction)

  # ---------------------------------------------------------------- the device step

  def compile(self) -> float:
    """Compiles the step for [batch_size, *input_size, 3] if not done yet; returns seconds."""
    if self._executable is not None:
      return 0.0
    start = time.perf_counter()
    crops = jax.ShapeDtypeStruct((self.batch_size, *self.input_size, 3), jnp.uint8,
                                 sharding=sharding.data_sharded(self._mesh))
    self._executable = self._step.lower(self._variables, crops).compile()
    self.compile_count += 1
    return time.perf_counter() - start

  def heatmaps(self, crops: np.ndarray) -> jax.Array:
    """Ensemble heatmaps [batch_size, h, w, J] of exactly `batch_size` uint8 crops.

    Returns as soon as the work is queued (JAX's asynchronous dispatch).
    """
    self.compile()
    expected = (self.batch_size, *self.input_size, 3)
    if crops.shape != expected or crops.dtype != np.uint8:
      raise ValueError(f'crops must be uint8 {list(expected)}; got {crops.dtype} '
                       f'{list(crops.shape)}')
    crops = jax.device_put(crops, sharding.data_sharded(self._mesh))
    return self._executable(self._variables, crops)['ensemble']

  # ---------------------------------------------------------------- people in, poses out

  def predict(self, image, boxes=None) -> PoseResult:
    """The people of one image.

    Args:
      image: a path, image-file bytes or uint8 RGB pixels [H, W, 3] (images.open_image).
      boxes: [N, 4] or [4] person boxes (x, y, w, h) in image pixels; None: the whole image.
    """
    return self.predict_many([image], None if boxes is None else [boxes])[0]

  def predict_many(self, images: Sequence, boxes: Sequence | None = None, *,
                   names: Sequence[str] | None = None) -> list[PoseResult]:
    """The people of several images, batched across images; one PoseResult per image.

    Every image and box is checked before the network runs (a missing file, a box that lies
    outside its image), and the message names it.

    Args:
      images: paths, image-file bytes or uint8 RGB arrays.
      boxes: per image, [N_i, 4] person boxes (N_i may be 0), or None for the whole image;
        None: every image is one person.
      names: what messages call the images (default: the path, or 'images[i]').
    """
    if boxes is not None and len(boxes) != len(images):
      raise ValueError(f'boxes has {len(boxes)} entries for {len(images)} images')

    def name(i, image):
      if names is not None:
        return names[i]
      return None if isinstance(image, (str, os.PathLike)) else f'images[{i}]'

    sources = [images_lib.open_image(image, name(i, image)) for i, image in enumerate(images)]
    people = []
    for i, source in enumerate(sources):
      image_boxes = None if boxes is None else boxes[i]
      if image_boxes is None:
        image_boxes = [[0.0, 0.0, source.width, source.height]]
      people.append(np.zeros((0, 4)) if len(image_boxes) == 0 else
                    images_lib.check_boxes(image_boxes, source))
    return self.predict_sources(sources, people)

  def predict_sources(self, sources: Sequence[images_lib.ImageSource],
                      boxes: Sequence[np.ndarray]) -> list[PoseResult]:
    """predict_many for opened images and checked boxes ([N_i, 4] float each)."""
    keypoints, scores = self._run(sources, boxes)
    results, start = [], 0
    for image_boxes in boxes:
      stop = start + len(image_boxes)
      results.append(PoseResult(keypoints[start:stop], scores[start:stop],
                                np.asarray(image_boxes, np.float64).reshape(-1, 4)))
      start = stop
    return results

  def predict_detections(self, detections, image_dir: str, *, score_threshold: float = 0.0,
                         **kwargs) -> list[dict[str, Any]]:
    """COCO keypoint results for a COCO person-detections file; see detections.py."""
    return detections_lib.predict_detections(self, detections, image_dir,
                                             score_threshold=score_threshold, **kwargs)

  def predict_video(self, video, out: str | None = None, **kwargs) -> video_lib.VideoSummary:
    """Follows people given by boxes on the first frame (or detected per frame) through a
    video, drawing their skeletons to `out`; see video.py."""
    return video_lib.predict_video(self, video, out, **kwargs)

  def _run(self, sources, boxes) -> tuple[np.ndarray, np.ndarray]:
    """All people, in order: keypoints [N, J, 2] image pixels and scores [N, J]."""
    keypoints = [np.zeros((0, self.meta.num_joints, 2))]
    scores = [np.zeros((0, self.meta.num_joints), np.float32)]
    queued = None  # the batch on the device while the next one is cropped.
    for batch in self._batches(sources, boxes):
      padded = np.zeros((self.batch_size, *self.input_size, 3), np.uint8)
      padded[:len(batch.crops)] = batch.crops
      running = (self.heatmaps(padded), batch)
      if queued is not None:
        self._decode(*queued, keypoints, scores)
      queued = running
    if queued is not None:
      self._decode(*queued, keypoints, scores)
    return np.concatenate(keypoints), np.concatenate(scores)

  def _decode(self, heatmaps, batch: _People, keypoints: list, scores: list) -> None:
    """Appends the batch's joints [n, J, 2] in image pixels and scores [n, J]."""
    count = len(batch.crops)
    coords, joint_scores = evaluator.image_joints(np.asarray(heatmaps)[:count], batch.centers,
                                                  batch.scales, self.input_size)
    keypoints.append(coords)
    scores.append(joint_scores)

  def _batches(self, sources, boxes) -> Iterator[_People]:
    """Crops image after image and yields batches of at most batch_size people."""
    aspect_ratio = self.input_size[1] / self.input_size[0]
    pending: list[_People] = []
    count = 0
    for source, image_boxes in zip(sources, boxes):
      # Cropped a batch at a time, so that pending people never exceed two batches.
      for first in range(0, len(image_boxes), self.batch_size):
        chunk = image_boxes[first:first + self.batch_size]
        centers, scales = zip(*(geometry.box_to_center_scale(box, aspect_ratio,
                                                             self.box_padding)
                                for box in chunk))
        centers, scales = np.stack(centers), np.stack(scales)
        crops = images_lib.crop_people(source, centers, scales, self.input_size,
                                       self.max_decode_reduction)
        pending.append(_People(crops, centers, scales))
        count += len(crops)
        if count >= self.batch_size:
          batch, pending = _split(pending, self.batch_size)
          count -= self.batch_size
          yield batch
    if count:
      yield _split(pending, count)[0]


def _check_variables_fit(directory: str, model, variables: dict[str, Any],
                         input_size: tuple[int, int]) -> None:
  """ValueError naming the first variable whose presence or shape differs from what
  model.json's network expects (an export whose files were mixed or edited)."""
  import flax  # pylint: disable=g-import-not-at-top
  expected = jax.eval_shape(lambda: model.init(
      jax.random.key(0), jnp.zeros((1, *input_size, 3), jnp.float32), train=False))
  want = {'/'.join(k): tuple(v.shape) for k, v in flax.traverse_util.flatten_dict(
      {c: expected[c] for c in ('params', 'batch_stats') if c in expected}).items()}
  got = {'/'.join(k): tuple(np.shape(v)) for k, v in flax.traverse_util.flatten_dict(
      {c: variables[c] for c in ('params', 'batch_stats') if c in variables}).items()}
  missing, unexpected = sorted(set(want) - set(got)), sorted(set(got) - set(want))
  if missing or unexpected:
    raise ValueError(f'{directory}: the variables do not match the network model.json '
                     f'describes: missing {missing[:5]}, unexpected {unexpected[:5]}')
  for name, shape in want.items():
    if got[name] != shape:
      raise ValueError(f'{directory}: the variables do not match the network model.json '
                       f'describes: {name} is {got[name]} in the file, {shape} for the network')


def _split(pending: list[_People], size: int) -> tuple[_People, list[_People]]:
  """The first `size` rows of the pending people as one batch, and the rest."""
  joined = _People(*(np.concatenate([getattr(p, f.name) for p in pending])
                     for f in dataclasses.fields(_People)))
  head = _People(*(getattr(joined, f.name)[:size] for f in dataclasses.fields(_People)))
  tail = _People(*(getattr(joined, f.name)[size:] for f in dataclasses.fields(_People)))
  return head, ([tail] if len(tail.crops) else [])
