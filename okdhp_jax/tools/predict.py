r"""Runs an exported pose network on people in images: prints joints and scores, draws them.

  python -m okdhp_jax.tools.predict --checkpoint runs/hg4/export --image person.jpg \
      [--box x,y,w,h --box x,y,w,h ...] --out pose.png
  python -m okdhp_jax.tools.predict --checkpoint runs/coco_hg4/export \
      --detections person_detections.json --image-dir val2017 --results keypoints.json
  python -m okdhp_jax.tools.predict --checkpoint runs/hg4/export --video in.mp4 \
      [--box x,y,w,h --box x,y,w,h ... | --detections boxes.json] --out out.mp4 \
      [--results poses.json]

One image: one person per --box (default: the whole image), their skeletons drawn in the
meta's left/right colours on the full-resolution image. A COCO detections file: every person
box scoring at least --det-score-threshold, written as COCO keypoint results (HRNet's rescoring
and OKS-NMS) that tools/eval_coco scores.

A video: each --box (on the first frame; default: the whole frame) is a person followed from
frame to frame, their next box the bounding box of the joints scoring at least 0.3, grown 1.25x
and cut to the frame, or kept where it was when fewer than half the joints score that
(okdhp_jax/inference/video.py). With --detections, a json of boxes per frame replaces
following: {"frames": [[[x, y, w, h, score], ...], ...]}, one list per frame in frame order
(score optional; frames past the end of the list have no people; boxes scoring below
--det-score-threshold skipped). Every frame is drawn to --out (mp4, 'mp4v', the input's frame
rate); --results writes {"frames": [{"frame", "boxes" [N, 4], "keypoints" [N, J, 3] (x, y,
score)}, ...]} plus the video's size, rate and joint names. A progress line shows frames done,
rate and ETA; the frames/s at the end exclude compiling and the first frame. A video that
OpenCV cannot open (a missing file, an image, no frames), a box outside the first frame and a
malformed detections entry are refused with one line naming them (exit status 1).

The crop, flip test and decoding are the evaluation's
(okdhp_jax/inference: the tf.data crop op, the flip-test predict step, the heatmap codec).
Compiled steps are kept in JAX's persistent cache (okdhp_jax/compile_cache.py), so a second
run of the same export and batch size starts without compiling.

Images are read as the converters read them (okdhp_jax/data/image_files.py): 16-bit grey
scaled to 8 bits by its type's range, EXIF orientation not applied, and an image over
89,478,485 pixels ($OKDHP_MAX_IMAGE_PIXELS raises it), a truncated JPEG or any unreadable file
refused with one line naming it (exit status 1).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np


def parse_box(text: str) -> tuple[float, float, float, float]:
  try:
    x, y, w, h = (float(v) for v in text.split(','))
  except ValueError:
    raise ValueError(f'--box {text!r} must be four numbers x,y,w,h') from None
  if not np.all(np.isfinite([x, y, w, h])):
    raise ValueError(f'--box {text!r} must be finite numbers')
  if w <= 0 or h <= 0:
    raise ValueError(f'--box {text!r} needs a positive width and height')
  return x, y, w, h


def read_jpeg(path: str) -> tuple[bytes, np.ndarray]:
  """The JPEG bytes the crop op decodes (other formats re-encoded at quality 95) and the
  full-resolution RGB pixels."""
  from okdhp_jax.inference import images
  return images.open_image(path).read_jpeg(), images.load_rgb(path)


def print_people(result, meta) -> None:
  for person, box in enumerate(result.boxes):
    print(f'person {person}: box x,y,w,h = {",".join(f"{v:g}" for v in box)}')
    print(f'  {"joint":<16}{"x":>9}{"y":>9}{"score":>8}')
    for name, (x, y), score in zip(meta.joint_names, result.keypoints[person],
                                   result.scores[person]):
      print(f'  {name:<16}{x:9.1f}{y:9.1f}{score:8.3f}')


def draw(pixels: np.ndarray, result, meta, score_threshold: float) -> np.ndarray:
  """Every person's box (thin, grey) and skeleton on the full-resolution image."""
  from okdhp_jax.inference import video
  return video.draw_people(pixels, result, meta, score_threshold)


def run_image(predictor, args, boxes) -> None:
  from okdhp_jax.evaluation import visualize
  from okdhp_jax.inference import images
  if len(boxes):  # checked here, to name them as the user wrote them
    labels = ['--box'] if len(boxes) == 1 else [f'--box #{i + 1}' for i in range(len(boxes))]
    boxes = images.check_boxes(boxes, images.open_image(args.image), labels)
  result = predictor.predict(args.image, boxes if len(boxes) else None)
  print_people(result, predictor.meta)
  if args.out:
    drawn = draw(images.load_rgb(args.image), result, predictor.meta, args.score_threshold)
    visualize.save_png(args.out, drawn)
    print(f'Skeletons drawn to {args.out}')


def run_detections(predictor, args) -> None:
  from okdhp_jax import paths
  results = predictor.predict_detections(args.detections, args.image_dir,
                                         score_threshold=args.det_score_threshold)
  target = paths.resolve(args.results)
  target.parent.mkdir(parents=True, exist_ok=True)
  target.write_text(json.dumps(results))
  images = len({r['image_id'] for r in results})
  print(f'{len(results)} people on {images} images written to {args.results} (COCO keypoint '
        'results)')


def open_video(args, boxes):
  """The video, its checked --box list (None: the whole frame) and its detections (None:
  following), checked before the network loads."""
  from okdhp_jax.inference import images, video
  reader = video.VideoReader(args.video)
  if args.out and os.path.abspath(args.out) == os.path.abspath(args.video):
    raise ValueError(f'--out {args.out} is the video being read: write the drawn one elsewhere')
  if args.detections:
    return reader, None, video.read_detections(args.detections, reader, args.det_score_threshold)
  if not boxes:
    return reader, None, None
  labels = ['--box'] if len(boxes) == 1 else [f'--box #{i + 1}' for i in range(len(boxes))]
  return reader, images.check_boxes(boxes, reader.first_frame(), labels), None


def run_video(predictor, args, reader, boxes, detections) -> None:
  from okdhp_jax.inference import video
  summary = video.predict_video(
      predictor, reader, args.out, boxes=boxes, detections=detections, results=args.results,
      score_threshold=args.score_threshold, report=lambda line: print(line, flush=True))
  print(f'{summary.frames} frames, {summary.people} people: {summary.frames_per_second:.1f} '
        f'frames/s ({summary.seconds:.1f} s; compiling {summary.compile_seconds:.1f} s '
        'before)')
  if detections is not None and len(detections) != summary.frames:
    print(f'note: {args.detections} lists {len(detections)} frames, the video has '
          f'{summary.frames}')
  for flag, path in (('Skeletons drawn', args.out), ('Joints written', args.results)):
    if path:
      print(f'{flag} to {path}')


def video_batch_size(boxes, detections) -> int:
  """People per device call: the most any frame holds (at most 32), so that one compile
  serves the video and a lone person is not padded to 32."""
  if detections is None:
    return 1 if boxes is None else len(boxes)
  return min(32, max([1, *(len(frame) for frame in detections)]))


def parse_args(argv):
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--checkpoint', required=True, help='export folder (model.json + variables)')
  parser.add_argument('--image', default=None, help='one image (jpg, png, ...)')
  parser.add_argument('--video', default=None,
                      help='a video (mp4, avi, ...): people followed from their --box on the '
                           'first frame, or boxed per frame by --detections')
  parser.add_argument('--box', action='append', default=None,
                      help='person box x,y,w,h in pixels; repeat for several people '
                           '(default: the whole image); with --video, on its first frame')
  parser.add_argument('--out', default=None, help='PNG (or with --video, mp4) with the '
                      'predicted skeletons drawn')
  parser.add_argument('--score-threshold', '--score_threshold', type=float, default=0.2,
                      help='joints scoring below this are not drawn')
  parser.add_argument('--detections', default=None,
                      help='COCO person detections json (image_id, bbox, score per box); with '
                           '--video, {"frames": [[[x, y, w, h, score], ...], ...]}')
  parser.add_argument('--image-dir', '--image_dir', default=None,
                      help='with --detections: the images, named by id (000000000785.jpg)')
  parser.add_argument('--results', default=None,
                      help='with --detections: COCO keypoint results json to write; with '
                           '--video: per-frame boxes and joints')
  parser.add_argument('--det-score-threshold', '--det_score_threshold', type=float,
                      default=0.0, help='with --detections: skip boxes scoring below this')
  parser.add_argument('--batch-size', '--batch_size', type=int, default=None,
                      help='people per device call (default: 32 with --detections, else the '
                           'number of boxes)')
  parser.add_argument('--no-flip-test', '--no_flip_test', dest='flip_test',
                      action='store_false', help='one pass per person, without the mirror')
  parser.add_argument('--no-compile-cache', '--no_compile_cache', dest='compile_cache',
                      action='store_false', help="do not use JAX's persistent compile cache")
  args = parser.parse_args(argv)
  if args.video:
    check_video_args(parser, args)
    return args
  if (args.image is None) == (args.detections is None):
    parser.error('give either --image (with --box and --out), --detections (with '
                 '--image-dir and --results) or --video (with --box or --detections, and '
                 '--out or --results)')
  if args.detections and not (args.image_dir and args.results):
    parser.error('--detections needs --image-dir (the images) and --results (the json to '
                 'write)')
  if args.detections and (args.box or args.out):
    parser.error('--box and --out go with --image; --detections writes --results')
  if args.image and (args.image_dir or args.results):
    parser.error('--image-dir and --results go with --detections')
  return args


def check_video_args(parser, args) -> None:
  if args.image or args.image_dir:
    parser.error('--video goes without --image and --image-dir')
  if args.box and args.detections:
    parser.error('with --video, give --box (people to follow) or --detections (boxes per '
                 'frame), not both')
  if not (args.out or args.results):
    parser.error('--video needs --out (the drawn mp4) or --results (the joints json)')


def main(argv=None) -> int:
  args = parse_args(argv)
  try:
    boxes = [parse_box(text) for text in args.box or []]  # before seconds of loading.
    if args.video:
      reader, boxes, detections = open_video(args, boxes)
    import ml_collections

    from okdhp_jax import compile_cache
    from okdhp_jax.inference import PosePredictor
    compile_cache.enable(ml_collections.ConfigDict({'enabled': args.compile_cache, 'dir': ''}))
    # One image: as many as its boxes, so that one person is not padded to 32.
    batch_size = args.batch_size or (
        video_batch_size(boxes, detections) if args.video
        else 32 if args.detections else max(1, len(boxes)))
    predictor = PosePredictor.from_export(args.checkpoint, flip_test=args.flip_test,
                                          batch_size=batch_size)
    if args.video:
      run_video(predictor, args, reader, boxes, detections)
    elif args.detections:
      run_detections(predictor, args)
    else:
      run_image(predictor, args, boxes)
  except (FileNotFoundError, ValueError) as error:
    print(f'predict: error: {error}', file=sys.stderr)
    return 1
  return 0


if __name__ == '__main__':
  sys.exit(main())
