"""What every converter shares: image checks, sharded writing, the progress line, the summary.

A converter turns its annotation format into a list of `Candidate`s (one per person, with a
`build` callable that may raise `BadInput`) and hands them to `write_records`, which loads and
checks images, skips bad people with a message naming file and record (or stops with
`--strict`), writes shards under a temporary folder and moves them into place only when the
whole split is complete. `dataset_info.json` is written last, so its presence marks a finished
conversion and a re-run (after a crash or not) simply redoes the work.

What is refused rather than skipped: an image path that leaves the images folder (skipped
without being opened), and an output folder that holds records of another dataset, converter
files no finished conversion lists, or files no converter writes
(data_prep/records_folder.py).
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import glob
import json
import os
import re
import shutil
import sys
import time
from typing import Callable, Iterable

import numpy as np

from data_prep import jpeg_baseline
from data_prep import records_folder
from okdhp_jax.data import image_files
from okdhp_jax.data import jpeg_window
from okdhp_jax.data import records
from okdhp_jax.data.tf_host import tf


class BadInput(Exception):
  """A person that cannot be converted; `reason` is the summary bucket."""

  def __init__(self, reason: str, detail: str = ''):
    super().__init__(f'{reason}: {detail}' if detail else reason)
    self.reason = reason
    self.detail = detail


class ConversionError(RuntimeError):
  """Raised in --strict mode on the first bad input."""



@dataclasses.dataclass
class Candidate:
  """One person to convert. `build(image)` -> PersonExample fields, may raise BadInput."""

  where: str                  # e.g. 'train.json[17]' for messages
  image_path: str
  image_filename: str
  build: Callable[['LoadedImage'], records.PersonExample]
  require_visible: bool = True  # False for detection boxes, which carry no joints.

  @classmethod
  def failed(cls, where: str, error: BadInput) -> 'Candidate':
    """A candidate whose annotation was already found bad: skipped without reading images."""
    def build(image):
      del image
      raise error
    return cls(where, '', '', build)


@dataclasses.dataclass
class LoadedImage:
  jpeg_bytes: bytes
  height: int
  width: int
  baseline_rewrite: bool = False  # a progressive JPEG stored as baseline (jpeg_baseline.py)
  restart_markers: bool = False  # stored with restart markers (data_prep/jpeg_restart.py)


class Progress:
  """A one-line progress report with rate and ETA, redrawn at most every 0.5 s."""

  def __init__(self, total: int, label: str, stream=None):
    self.total, self.label = total, label
    self.stream = stream or sys.stderr
    self.start = time.perf_counter()
    self.last = 0.0
    self.done = 0

  def update(self, n: int = 1):
    self.done += n
    now = time.perf_counter()
    if now - self.last >= 0.5 or self.done == self.total:
      self.last = now
      elapsed = max(now - self.start, 1e-9)
      rate = self.done / elapsed
      eta = (self.total - self.done) / rate if rate > 0 else float('inf')
      self.stream.write(
          f'\r{self.label}: {self.done}/{self.total} ({rate:.1f}/s, ETA {eta:.0f}s)   ')
      self.stream.flush()

  def close(self):
    self.stream.write('\n')
    self.stream.flush()


class Report:
  """Counts written and skipped examples per split, with one message per skip."""

  def __init__(self, strict: bool = False, stream=None):
    self.strict = strict
    self.stream = stream or sys.stderr
    self.written = collections.Counter()
    self.skipped: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    self.baseline_rewrites = collections.Counter()  # split -> progressive JPEGs made baseline
    self.restart_markers = collections.Counter()  # split -> photos stored with restart markers
    self.messages: list[str] = []

  def skip(self, split: str, where: str, error: BadInput):
    message = f'skipped: {error}' if where in str(error) else f'skipped {where}: {error}'
    if self.strict:
      raise ConversionError(f'{message} (--strict stops at the first bad input)')
    self.messages.append(message)
    self.skipped[split][error.reason] += 1
    self.stream.write(f'\n{message}\n')

  def summary(self) -> str:
    lines = ['conversion summary:']
    for split in sorted(set(self.written) | set(self.skipped)):
      skipped = self.skipped.get(split, {})
      lines.append(f'  {split}: written {self.written[split]}, skipped {sum(skipped.values())}')
      if self.baseline_rewrites[split]:
        lines.append(f'    {self.baseline_rewrites[split]} progressive JPEGs stored as baseline '
                     '(the same pixels, faster to decode)')
      if self.restart_markers[split]:
        lines.append(f'    {self.restart_markers[split]} photos stored with restart markers '
                     '(the same pixels; a crop decodes only its region)')
      for reason, count in sorted(skipped.items()):
        lines.append(f'    {count:6d}  {reason}')
    return '\n'.join(lines)


def default_workers() -> int:
  """Image-loading threads: one per core this process may use, at most 16."""
  cores = (len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity')  # not on macOS
           else os.cpu_count() or 1)
  return max(1, min(cores, 16))


def add_restart_markers_flag(parser) -> None:
  """The converters' --no-restart-markers flag."""
  parser.add_argument(
      '--no-restart-markers', '--no_restart_markers', dest='restart_markers',
      action='store_false',
      help='store JPEGs as they are (progressive ones as baseline) instead of rewriting each with '
           'restart markers: conversion about 15x faster, COCO training crops about 20%% slower '
           '(data_prep/README.md)')


def add_workers_flag(parser) -> None:
  """The converters' --workers flag (image-loading threads)."""
  def positive(text):
    value = int(text)
    if value < 1:
      raise ValueError(text)
    return value
  positive.__name__ = 'positive integer'  # argparse's message: "invalid positive integer value"
  parser.add_argument('--workers', type=positive, default=None,
                      help=f'threads loading images (default: one per core, at most 16; here '
                           f'{default_workers()})')


class ImageCache:
  """Loads, checks and (if needed) rewrites each image once for all its people, on threads.

  The converters' time is spent here: a full decode per image (about 4 ms for a 1280x720
  photo) and, for a progressive JPEG, its baseline rewrite (about 40 ms, of which jpeglib's
  20 ms run one photo at a time: jpeg_baseline.py). Pillow's and TensorFlow's decoders and
  jpeglib's ctypes calls release the GIL, so threads load the next images in the converter's
  order while the main thread writes records; results are identical to loading in turn.

  Keeps the last `size` images (bytes, not pixels), so people of one image need not be
  adjacent in the annotations; at most `workers * 4` images are loaded ahead.
  """

  def __init__(self, paths: Iterable[str] = (), *, workers: int = 1, size: int = 64,
               scratch_dir: str | None = None, restart_markers: bool = True):
    self._order = list(dict.fromkeys(p for p in paths if p))  # first appearance, no repeats
    self._position = {path: i for i, path in enumerate(self._order)}
    self._ahead = 4 * workers
    self._submitted = 0  # self._order[:self._submitted] have been submitted or loaded
    self._pool = (concurrent.futures.ThreadPoolExecutor(workers, 'load_image')
                  if workers > 1 and len(self._order) > 1 else None)
    self._futures: dict[str, concurrent.futures.Future] = {}
    self._size = size
    self._images: collections.OrderedDict[str, LoadedImage | BadInput] = (
        collections.OrderedDict())
    self._scratch_dir = scratch_dir
    self._restart_markers = restart_markers
    self._load_ahead(0)

  def load(self, path: str) -> LoadedImage:
    value = self._images.get(path)
    if value is not None:
      self._images.move_to_end(path)
    else:
      future = self._futures.pop(path, None)
      value = future.result() if future else self._load_or_error(path)
      self._images[path] = value
      if len(self._images) > self._size:
        self._images.popitem(last=False)
    self._load_ahead(self._position.get(path, -1) + 1)
    if isinstance(value, BadInput):
      raise value
    return value

  def _load_ahead(self, start: int) -> None:
    if self._pool is None:
      return
    self._submitted = max(self._submitted, start)
    while self._submitted < min(start + self._ahead, len(self._order)):
      path = self._order[self._submitted]
      if path not in self._images and path not in self._futures:
        self._futures[path] = self._pool.submit(self._load_or_error, path)
      self._submitted += 1

  def _load_or_error(self, path: str) -> LoadedImage | BadInput:
    try:
      return load_image(path, self._scratch_dir, self._restart_markers)
    except BadInput as e:
      return e

  def close(self) -> None:
    if self._pool is not None:
      self._pool.shutdown(wait=True, cancel_futures=True)


def load_image(path: str, scratch_dir: str | None = None,
               restart_markers: bool = True) -> LoadedImage:
  """Reads and fully decodes an image; returns JPEG bytes with the image's pixels.

  The image is read as the inference API reads it (okdhp_jax/data/image_files.py: 16-bit
  images scaled to 8 bits, EXIF orientation not applied, truncated files and images over the
  pixel limit refused). A JPEG is rewritten losslessly as one baseline scan with restart markers
  (jpeg_baseline.restart_copy: a training crop then decodes only its region); where that fails
  or `restart_markers` is off, a progressive JPEG is rewritten as plain baseline and a baseline
  one kept as it is. Other formats are encoded as quality-95 JPEGs. jpeglib's temporary files go
  to `scratch_dir`.
  """
  if not os.path.exists(path):
    raise BadInput('missing image', path)
  with open(path, 'rb') as f:
    data = f.read()
  try:
    header = image_files.read_header(data, path)
    if header.is_plain_jpeg:  # stored as it is: TensorFlow decodes it for training.
      image_files.check_decodes(data, path)
    else:
      data = image_files.reencode(data, path)
  except image_files.ImageError as e:
    raise BadInput(e.reason, str(e)) from None
  progressive = header.is_plain_jpeg and header.progressive
  rewritten = (jpeg_baseline.restart_copy(path, data, scratch_dir)
               if header.is_plain_jpeg and restart_markers else None)
  if rewritten is None and progressive:
    rewritten = jpeg_baseline.baseline_copy(path, data, scratch_dir)
  if rewritten is not None:
    data = rewritten
  return LoadedImage(data, header.height, header.width,
                     baseline_rewrite=progressive and rewritten is not None,
                     restart_markers=jpeg_window.restart_index(data) is not None)


def check_finite(where: str, **arrays):
  for name, value in arrays.items():
    value = np.asarray(value, np.float64)
    if not np.all(np.isfinite(value)):
      raise BadInput('malformed annotation', f'{where}: {name} is not finite: {value.tolist()}')


def image_inside(images_dir: str, name, where: str) -> str:
  """images_dir/name, or BadInput when the name leads outside images_dir.

  Absolute names, '..' components and symbolic links whose target lies outside images_dir are
  refused before anything is opened, so an annotation cannot make a converter read (and embed
  in the records) a file elsewhere.
  """
  if not isinstance(name, str) or not name:
    raise BadInput('malformed annotation', f'{where}: image name {name!r}')
  if os.path.isabs(name) or name.startswith(('/', '\\')) or '..' in re.split(r'[\\/]', name):
    raise BadInput('image path outside --images',
                   f'{where}: {name!r} is not a plain path inside {images_dir} (not opened)')
  path = os.path.join(images_dir, name)
  root, real = os.path.realpath(images_dir), os.path.realpath(path)
  if os.path.commonpath([root, real]) != root:
    raise BadInput('image path outside --images',
                   f'{where}: {name!r} is a link to {real}, outside {root} (not opened)')
  return path


def load_json(path: str, what: str):
  """Parses a json file; FileNotFoundError / ValueError with one line naming it."""
  if not os.path.exists(path):
    raise FileNotFoundError(f'{what} {path!r} not found')
  if os.path.isdir(path):
    raise ValueError(f'{what} {path!r} is a folder, not a json file')
  with open(path, 'rb') as f:
    try:
      return json.load(f)
    except ValueError as e:  # JSONDecodeError, or bytes that are not text at all
      raise ValueError(f'{path} is not valid json: {e}') from None


class ShardWriter:
  """Writes one split as shards of at most `examples_per_shard` under a temporary folder."""

  def __init__(self, tmp_dir: str, split: str, examples_per_shard: int):
    self.tmp_dir, self.split, self.per_shard = tmp_dir, split, examples_per_shard
    self.lengths: list[int] = []
    self._writer = None

  def write(self, example: records.PersonExample):
    if self._writer is None or self.lengths[-1] >= self.per_shard:
      self._close_current()
      path = os.path.join(self.tmp_dir, f'{self.split}-part{len(self.lengths):05d}')
      self._writer = tf.io.TFRecordWriter(path)
      self.lengths.append(0)
    self._writer.write(records.serialize(example))
    self.lengths[-1] += 1

  def _close_current(self):
    if self._writer is not None:
      self._writer.close()
      self._writer = None

  def finish(self) -> list[tuple[str, str]]:
    """Closes the last shard; returns (temporary path, final name) pairs."""
    self._close_current()
    if not self.lengths:  # an empty split is still one (empty) shard, so readers find it.
      path = os.path.join(self.tmp_dir, f'{self.split}-part00000')
      tf.io.TFRecordWriter(path).close()
      self.lengths.append(0)
    n = len(self.lengths)
    return [(os.path.join(self.tmp_dir, f'{self.split}-part{i:05d}'),
             records.shard_name(self.split, i, n)) for i in range(n)]


def write_records(
    out_dir: str,
    splits: dict[str, Iterable[Candidate]],
    info: dict,
    *,
    report: Report,
    examples_per_shard: int = 1024,
    extra_files: dict[str, str] | None = None,
    show_progress: bool = True,
    overwrite: bool = False,
    workers: int | None = None,
    restart_markers: bool = True,
) -> dict:
  """Converts every split's candidates and installs the result atomically.

  Args:
    out_dir: records folder; created if needed. Shards of the converted splits are replaced.
    splits: split name -> candidates (sorted by image, so each image is decoded once).
    info: dataset_info.json content without 'splits' / 'shard_lengths' (added here).
    report: collects counts and skip messages (raises in strict mode).
    examples_per_shard: people per shard file.
    extra_files: destination name in out_dir -> source path, copied before the info file.
    show_progress: draw the progress line on stderr.
    overwrite: replace every converter file in out_dir (see check_out_dir), once the new
      records are complete; without it, other splits of the same dataset are kept.
    workers: threads loading images ahead (ImageCache); default one per core, at most 16.
    restart_markers: store JPEGs with restart markers (load_image).

  Returns:
    The dataset_info dict as written.

  Raises:
    ValueError: out_dir holds files the new records must not be mixed with (check_out_dir).
  """
  os.makedirs(out_dir, exist_ok=True)
  workers = default_workers() if workers is None else int(workers)
  splits = dict(splits)
  extra_files = dict(extra_files or {})
  # Checked before the (long) conversion, so a refusal comes at once.
  replaced = records_folder.check_out_dir(out_dir, info, splits, extra_files,
                                            overwrite=overwrite)
  records_folder.remove_dead_tmp_dirs(out_dir)
  tmp_dir = os.path.join(out_dir, f'{records_folder.TMP_PREFIX}{os.getpid()}')
  shutil.rmtree(tmp_dir, ignore_errors=True)
  os.makedirs(tmp_dir)
  caches = []
  try:
    installs, lengths = [], {}
    for split, candidates in splits.items():
      candidates = list(candidates)
      writer = ShardWriter(tmp_dir, split, examples_per_shard)
      cache = ImageCache([c.image_path for c in candidates], workers=workers,
                         scratch_dir=tmp_dir, restart_markers=restart_markers)
      caches.append(cache)
      rewritten = set()  # photos of written records that are baseline rewrites
      indexed = set()  # ... that carry restart markers
      progress = Progress(len(candidates), f'{info.get("dataset", "")} {split}') \
          if show_progress else None
      for candidate in candidates:
        try:
          image = cache.load(candidate.image_path) if candidate.image_path else None
          example = candidate.build(image)
          if candidate.require_visible and float(np.sum(example.joints_vis)) <= 0:
            raise BadInput('no visible joints', f'in {candidate.image_path}')
        except BadInput as e:
          report.skip(split, candidate.where, e)
        else:
          writer.write(example)
          report.written[split] += 1
          if image is not None and image.baseline_rewrite:
            rewritten.add(candidate.image_path)
          if image is not None and image.restart_markers:
            indexed.add(candidate.image_path)
        if progress:
          progress.update()
      if progress:
        progress.close()
      cache.close()
      installs += writer.finish()
      lengths[split] = writer.lengths
      report.baseline_rewrites[split] = len(rewritten)
      report.restart_markers[split] = len(indexed)
    for name, source in extra_files.items():
      shutil.copyfile(source, os.path.join(tmp_dir, name))
      installs.append((os.path.join(tmp_dir, name), name))

    # Install: the info file goes first (out) and last (in), so it marks completeness; a
    # folder caught in between has none and the pipeline refuses it.
    info_path = os.path.join(out_dir, records.DATASET_INFO)
    old_info = {} if overwrite else (records_folder.read_old_info(out_dir) or {})  # checked above
    if os.path.exists(info_path):
      os.remove(info_path)
    if overwrite:
      for name in replaced:
        path = os.path.join(out_dir, name)
        if os.path.lexists(path):  # the old info file is gone already
          os.remove(path)
    for split in lengths:
      for stale in glob.glob(os.path.join(out_dir, f'{split}-*-of-*.tfrecord')):
        os.remove(stale)
    for source, name in installs:
      os.replace(source, os.path.join(out_dir, name))
    info = dict(info)
    info['splits'] = {**old_info.get('splits', {}), **{s: sum(l) for s, l in lengths.items()}}
    info['shard_lengths'] = {**old_info.get('shard_lengths', {}), **lengths}
    info[records.BASELINE_REWRITES] = {**old_info.get(records.BASELINE_REWRITES, {}),
                                       **{s: report.baseline_rewrites[s] for s in lengths}}
    info[records.RESTART_MARKERS] = {**old_info.get(records.RESTART_MARKERS, {}),
                                     **{s: report.restart_markers[s] for s in lengths}}
    kept = old_info.get(records_folder.EXTRA_FILES, [])
    present = {n for n in kept if os.path.exists(os.path.join(out_dir, n))}
    info[records_folder.EXTRA_FILES] = sorted(present | set(extra_files))
    with open(info_path + '.tmp', 'w') as f:
      json.dump(info, f, indent=2)
    os.replace(info_path + '.tmp', info_path)
    return info
  finally:
    for cache in caches:
      cache.close()
    shutil.rmtree(tmp_dir, ignore_errors=True)


def finish(report: Report, out_dir: str) -> None:
  print(report.summary())
  print(f'records in {out_dir}')
