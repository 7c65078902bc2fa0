"""Progressive JPEGs rewritten as baseline ones, losslessly: the same pixels, faster to decode.

A progressive JPEG spreads each block's coefficients over several scans, so a decoder must read
the whole file before any pixel is final: `tf.io.decode_and_crop_jpeg` on one person's window
costs nearly a full decode. MPII's photos are progressive. Rewritten as a baseline (sequential)
JPEG from the same quantised DCT coefficients, with Huffman tables fitted to the image, they
decode to identical pixels and the training pipeline's window decode drops from 1.8-2.2 to
1.4-1.6 ms on 1280x720 MPII photos (data_prep/README.md).

The rewrite works on the DCT coefficients, which neither Pillow, OpenCV nor TensorFlow expose;
jpeglib (libjpeg's read_coefficients / write_coefficients) is the library on PyPI that does.
Every rewrite is checked: TensorFlow, which decodes for training, must get the very pixels of
the original from it, otherwise the original bytes are kept.

jpeglib is not thread-safe (two rewrites at once wrote each other's markers, and once crashed
the process), so its calls hold a lock; the converters' other image work runs on threads.
"""

from __future__ import annotations

import io
import os
import shutil
import tempfile
import threading

import jpeglib
import numpy as np
from PIL import Image

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


def _rewrite(path: str, target: str, scratch: str) -> None:
  """jpeglib's read and write, holding the lock, its temporary files kept in `scratch`."""
  with _JPEGLIB_LOCK:
    # jpeglib copies its input to tempfile's folder and leaves the copy behind when libjpeg
    # fails; with the lock held nothing else in the converter uses tempfile meanwhile.
    saved, tempfile.tempdir = tempfile.tempdir, scratch
    # jpeglib's C code can leave the process's stderr (fd 2) on one of its temporary files
    # (seen on a worker thread reading a bundled MPII photo), which then swallowed every
    # later message, the converter's own errors included: a copy of fd 2 is put back.
    stderr_copy = os.dup(2)
    try:
      coefficients = jpeglib.read_dct(path)
      # libjpeg writes its own JFIF (APP0) and Adobe (APP14) markers; the source's copies
      # would follow them and could disagree about the colour transform.
      coefficients.markers = [
          m for m in coefficients.markers
          if not (m.content or b'').startswith((b'JFIF\0', b'Adobe'))]
      # Huffman tables fitted to this image, as `jpegtran -optimize` writes. jpeglib writes
      # sequential (baseline) scans; baseline_copy checks that it did.
      coefficients.write_dct(target, flags=['+OPTIMIZE_CODING'])
    finally:
      tempfile.tempdir = saved
      os.dup2(stderr_copy, 2)
      os.close(stderr_copy)


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
  if _header_markers(data) > _MAX_MARKERS:
    return None
  scratch = None
  try:
    scratch = tempfile.mkdtemp(prefix='jpeg_baseline_', dir=scratch_dir or _SYSTEM_TEMP)
    target = os.path.join(scratch, 'baseline.jpg')
    _rewrite(path, target, scratch)
    with open(target, 'rb') as f:
      rewritten = f.read()
    with Image.open(io.BytesIO(rewritten)) as copy:
      if is_progressive(copy):
        return None
    same = np.array_equal(tf.io.decode_jpeg(rewritten, channels=3).numpy(),
                          tf.io.decode_jpeg(data, channels=3).numpy())
    return rewritten if same else None
  except Exception:  # pylint: disable=broad-except  (any failure: keep the original bytes)
    return None
  finally:
    if scratch:
      shutil.rmtree(scratch, ignore_errors=True)
