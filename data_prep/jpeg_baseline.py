"""Lossless JPEG rewrites from the DCT coefficients: the same pixels, faster to decode.

* restart_copy (what the converters store): any JPEG written again as one baseline scan with
  restart markers that tile its MCU rows (data_prep/jpeg_restart.py), so that a training crop
  decodes only its region (okdhp_jax/data/jpeg_window.py).
* baseline_copy (the fallback, and with --no-restart-markers): a progressive JPEG written as a
  plain baseline one. A progressive JPEG spreads each block's coefficients over several scans,
  so a decoder must read the whole file before any pixel is final: `decode_and_crop_jpeg` on
  one person's window costs nearly a full decode. MPII's photos are progressive; as baseline
  their window decode drops from 1.8-2.2 to 1.4-1.6 ms (data_prep/README.md).

Both work on the DCT coefficients, which neither Pillow, OpenCV nor TensorFlow expose; jpeglib
(libjpeg's read_coefficients / write_coefficients) is the library on PyPI that does. Every
rewrite is checked: TensorFlow, which decodes for training, must get the very pixels of the
original from it, otherwise the original bytes are kept.

jpeglib is not thread-safe (two rewrites at once wrote each other's markers, and once crashed
the process), so its calls hold a lock; the converters' other image work runs on threads.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import tempfile
import threading

import jpeglib
import numpy as np
from PIL import Image

from data_prep import jpeg_restart
from okdhp_jax.data.tf_host import tf

_JPEGLIB_LOCK = threading.Lock()
# The system's temporary folder, read once: while a rewrite runs, tempfile.tempdir points
# elsewhere (_rewrite), and another thread must not put its own folder there.
_SYSTEM_TEMP = tempfile.gettempdir()
# jpeglib keeps the source's APPn and COM markers in a fixed table of 50 (it writes past its
# end beyond that); such files keep their original bytes.
_MAX_MARKERS = 49


def is_progressive(image: Image.Image) -> bool:
  """True for a progressive JPEG opened with Pillow."""
  return image.format == 'JPEG' and bool(image.info.get('progressive')
                                         or image.info.get('progression'))


def _header_markers(data: bytes) -> int:
  """APPn and COM segments before the first scan (SOS) of JPEG `data`."""
  count, position = 0, 2  # after SOI
  while position + 4 <= len(data) and data[position] == 0xFF:
    marker = data[position + 1]
    if marker == 0xDA:  # SOS: the scans start
      break
    if 0xE0 <= marker <= 0xEF or marker == 0xFE:
      count += 1
    position += 2 + int.from_bytes(data[position + 2:position + 4], 'big')
  return count


@contextlib.contextmanager
def _jpeglib_call(scratch: str):
  """Holds the lock around jpeglib calls, its temporary files kept in `scratch`."""
  with _JPEGLIB_LOCK:
    # jpeglib copies its input to tempfile's folder and leaves the copy behind when libjpeg
    # fails; with the lock held nothing else in the converter uses tempfile meanwhile.
    saved, tempfile.tempdir = tempfile.tempdir, scratch
    # jpeglib's C code can leave the process's stderr (fd 2) on one of its temporary files
    # (seen on a worker thread reading a bundled MPII photo), which then swallowed every
    # later message, the converter's own errors included: a copy of fd 2 is put back.
    stderr_copy = os.dup(2)
    try:
      yield
    finally:
      tempfile.tempdir = saved
      os.dup2(stderr_copy, 2)
      os.close(stderr_copy)


def _rewrite(path: str, target: str, scratch: str) -> None:
  """jpeglib's read and write of `path` as a baseline JPEG at `target`."""
  with _jpeglib_call(scratch):
    coefficients = jpeglib.read_dct(path)
    # libjpeg writes its own JFIF (APP0) and Adobe (APP14) markers; the source's copies
    # would follow them and could disagree about the colour transform.
    coefficients.markers = [
        m for m in coefficients.markers
        if not (m.content or b'').startswith((b'JFIF\0', b'Adobe'))]
    # Huffman tables fitted to this image, as `jpegtran -optimize` writes. jpeglib writes
    # sequential (baseline) scans; baseline_copy checks that it did.
    coefficients.write_dct(target, flags=['+OPTIMIZE_CODING'])


def _same_pixels(a: bytes, b: bytes) -> bool:
  """TensorFlow, which decodes for training, gets the same pixels from both JPEGs.

  Holds jpeglib's lock: a TensorFlow JPEG decode on one thread while jpeglib read a file on
  another left the process's stderr (fd 2) on a deleted temporary file for good (both link a
  libjpeg; a converter's error messages then vanished).
  """
  with _JPEGLIB_LOCK:
    return np.array_equal(tf.io.decode_jpeg(a, channels=3).numpy(),
                          tf.io.decode_jpeg(b, channels=3).numpy())


def _checked(data: bytes, scratch_dir: str | None, prefix: str, make) -> bytes | None:
  """make(scratch folder) -> rewritten bytes or None, kept only if TensorFlow decodes them to
  the pixels of `data`; any failure is None (the caller keeps the original bytes)."""
  if _header_markers(data) > _MAX_MARKERS:
    return None
  scratch = None
  try:
    scratch = tempfile.mkdtemp(prefix=prefix, dir=scratch_dir or _SYSTEM_TEMP)
    rewritten = make(scratch)
    return rewritten if rewritten is not None and _same_pixels(rewritten, data) else None
  except Exception:  # pylint: disable=broad-except  (any failure: keep the original bytes)
    return None
  finally:
    if scratch:
      shutil.rmtree(scratch, ignore_errors=True)


def baseline_copy(path: str, data: bytes, scratch_dir: str | None = None) -> bytes | None:
  """The progressive JPEG at `path` rewritten as baseline with the same coefficients, or None.

  Args:
    path: the JPEG file; data: its bytes.
    scratch_dir: where temporary files go (default: the system's temporary folder); the
      converters pass their unfinished output folder, which a later run clears after a kill.

  Returns:
    The baseline JPEG's bytes; None when the rewrite fails or TensorFlow would decode it to
    other pixels than the original.
  """
  def make(scratch):
    target = os.path.join(scratch, 'baseline.jpg')
    _rewrite(path, target, scratch)
    with open(target, 'rb') as f:
      rewritten = f.read()
    with Image.open(io.BytesIO(rewritten)) as copy:
      return None if is_progressive(copy) else rewritten
  return _checked(data, scratch_dir, 'jpeg_baseline_', make)


def restart_copy(path: str, data: bytes, scratch_dir: str | None = None) -> bytes | None:
  """The JPEG at `path` (baseline or progressive) written again from the same coefficients as
  one baseline scan with restart markers that tile its MCU rows (jpeg_restart.rewrite), or None.

  Args and the None cases as for baseline_copy; JPEGs jpeg_restart does not rewrite (12-bit,
  CMYK, arithmetic coding) are None too.
  """
  def make(scratch):
    with _jpeglib_call(scratch):
      coefficients = jpeglib.read_dct(path)
      black = coefficients.has_black
      # Copies of the coefficients, so the jpeglib object is gone before the lock is let go.
      components = [np.array(c, np.int16) for c in (
          [coefficients.Y] + ([coefficients.Cb, coefficients.Cr]
                              if coefficients.has_chrominance else []))]
      del coefficients
    return None if black else jpeg_restart.rewrite(data, components)
  return _checked(data, scratch_dir, 'jpeg_restart_', make)
