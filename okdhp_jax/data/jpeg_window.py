"""A small JPEG of just the MCU rows and restart intervals a crop needs, cut from a bigger one.

A JPEG's entropy-coded data can only be read from its start, so `tf.io.decode_and_crop_jpeg`
still entropy-decodes every row above its window and every column beside it. The converters
store JPEGs with a restart marker every few MCUs, never across an MCU row, and the records
index where each restart interval starts (data_prep/jpeg_restart.py). Each interval then
decodes on its own, and the intervals covering a window, renumbered RST0..RST7 in turn under a
copy of the header whose frame size says how many there are, form a valid JPEG of that region.
Joining the byte ranges costs far less than the rows and columns it spares the decoder
(docs/performance.md).

The region's pixels are the full image's: the same blocks, the same scaled IDCT. Only chroma
upsampling of 4:2:0 images (libjpeg's fancy upsampling averages neighbouring chroma samples)
can differ in the region's outermost pixel, which the crop window's 2 px margin keeps out of
the warp's reach.

Record fields (okdhp_jax/data/records.py):
  image/restart_layout  [mcu_height, mcu_width, interval_mcus, intervals_per_row, sof_offset,
                         scan_offset]; zeros when the image has no usable restart index.
  image/restart_offsets [mcu_rows * intervals_per_row + 1]: where each interval's data starts,
                         then the end of the file's EOI marker (so interval i's data always
                         ends 2 bytes before offsets[i + 1]).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from okdhp_jax.data.tf_host import tf

LAYOUT_SIZE = 6
_DHT, _EOI_MARKER, _SOS, _DRI = 0xC4, 0xD9, 0xDA, 0xDD
_SEQUENTIAL_SOF = (0xC0, 0xC1)  # baseline, extended sequential (Huffman)
_PROGRESSIVE_SOF = 0xC2
# RST0..RST7, the markers between intervals, and EOI, the one after the last.
_MARKERS = [bytes([0xFF, 0xD0 + i]) for i in range(8)] + [b'\xff\xd9']
_BYTES = [bytes([i]) for i in range(256)]


# ---------------------------------------------------------------------------------------------
# Writing the index (numpy; the converters, through records.serialize).

class Unsupported(ValueError):
  """A JPEG whose layout this module does not read (12-bit, CMYK, lossless, arithmetic...)."""


@dataclasses.dataclass(frozen=True)
class Frame:
  """What a JPEG's header says about its layout.

  sof_offset: byte offset of the SOF marker; height, width: pixels; sampling: [C, 2] (v, h)
  per component; mcu_height, mcu_width: pixels per MCU; restart_interval: MCUs per interval
  (0: none); scan_offset: first byte of the entropy-coded data.
  """
  sof_offset: int
  height: int
  width: int
  sampling: tuple
  mcu_height: int
  mcu_width: int
  restart_interval: int
  scan_offset: int

  @property
  def mcus_per_row(self) -> int:
    return -(-self.width // self.mcu_width)

  @property
  def mcu_rows(self) -> int:
    return -(-self.height // self.mcu_height)


def segments(data: bytes):
  """(marker, offset, length) of each header segment after SOI, up to and including SOS."""
  if data[:2] != b'\xff\xd8':
    raise Unsupported('not a JPEG (no SOI marker)')
  position = 2
  while position + 4 <= len(data):
    if data[position] != 0xFF:
      raise Unsupported(f'no marker at byte {position}')
    marker = data[position + 1]
    if marker == 0xFF:  # fill byte
      position += 1
      continue
    length = int.from_bytes(data[position + 2:position + 4], 'big')
    yield marker, position, length
    if marker == _SOS:
      return
    position += 2 + length
  raise Unsupported('the header ends before the first scan')


def read_frame(data: bytes) -> Frame:
  """The Frame of a baseline, extended-sequential or progressive Huffman JPEG with 8-bit
  samples and 1 or 3 components (Unsupported otherwise)."""
  sof = None
  restart_interval, scan_offset = 0, None
  for marker, offset, length in segments(data):
    if 0xC0 <= marker <= 0xCF and marker not in (_DHT, 0xC8, 0xCC):  # a frame header
      if marker not in _SEQUENTIAL_SOF + (_PROGRESSIVE_SOF,):
        raise Unsupported(f'frame type 0x{marker:02X} (lossless, hierarchical or arithmetic '
                          'coding)')
      sof = offset
    elif marker == _DRI:
      restart_interval = int.from_bytes(data[offset + 4:offset + 6], 'big')
    elif marker == _SOS:
      scan_offset = offset + 2 + length
  if sof is None:
    raise Unsupported('no frame header (SOF)')
  precision, count = data[sof + 4], data[sof + 9]
  height = int.from_bytes(data[sof + 5:sof + 7], 'big')
  width = int.from_bytes(data[sof + 7:sof + 9], 'big')
  if precision != 8 or count not in (1, 3) or height == 0 or width == 0:
    raise Unsupported(f'{precision}-bit samples, {count} components, {width}x{height}')
  # Sampling factors: the high nibble is horizontal, the low one vertical.
  sampling = tuple((data[sof + 11 + 3 * i] & 15, data[sof + 11 + 3 * i] >> 4)
                   for i in range(count))
  if count == 1:  # a single-component scan is not interleaved: one block per MCU
    v_max = h_max = 1
  else:
    v_max, h_max = max(v for v, _ in sampling), max(h for _, h in sampling)
  return Frame(sof, height, width, sampling, 8 * v_max, 8 * h_max, restart_interval,
               scan_offset)


def interval_offsets(data: bytes, frame: Frame) -> np.ndarray | None:
  """int64 [mcu_rows * intervals_per_row + 1]: where each restart interval's data starts, in
  scan order, then where the EOI marker after the last one ends; None when the JPEG has no restart
  intervals that tile its MCU rows."""
  n = frame.restart_interval
  if n == 0 or frame.mcus_per_row % n or frame.scan_offset is None:
    return None
  count = frame.mcu_rows * (frame.mcus_per_row // n)
  scan = np.frombuffer(data, np.uint8, offset=frame.scan_offset)
  ff = np.flatnonzero(scan[:-1] == 0xFF)
  following = scan[ff + 1]
  markers = ff[(following >= 0xD0) & (following <= 0xD7)]
  end = ff[following == _EOI_MARKER]
  # Exactly one RSTn between intervals, numbered 0..7 in turn, then EOI (bytes after the EOI,
  # which some files carry, could hold more markers: such files are not indexed).
  if (len(markers) != count - 1 or len(end) == 0 or (count > 1 and end[0] < markers[-1])
      or np.any(scan[markers + 1] - 0xD0 != np.arange(count - 1) % 8)):
    return None
  return np.concatenate([[0], markers + 2, end[:1] + 2]).astype(np.int64) + frame.scan_offset


def restart_index(data: bytes) -> tuple[np.ndarray, np.ndarray] | None:
  """(layout [6], offsets) as the records store them (okdhp_jax/data/jpeg_window.py), or None
  for a JPEG without restart intervals that tile its MCU rows."""
  try:
    frame = read_frame(data)
  except Unsupported:
    return None
  offsets = interval_offsets(data, frame)
  if offsets is None:
    return None
  layout = np.array([frame.mcu_height, frame.mcu_width, frame.restart_interval,
                     frame.mcus_per_row // frame.restart_interval, frame.sof_offset,
                     frame.scan_offset], np.int64)
  return layout, offsets


# ---------------------------------------------------------------------------------------------
# Reading a region (TensorFlow; the input pipeline).


def region(encoded: tf.Tensor, layout: tf.Tensor, offsets: tf.Tensor, height, width,
           crop_window: tf.Tensor, reduction: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
  """The JPEG of the MCU rows and restart intervals covering `crop_window`, and the window in it.

  Written with few ops: a tf.data map runs each op through TensorFlow's executor, which costs
  about as much as the small ones compute.

  Args:
    encoded: JPEG bytes with an indexed restart layout. layout: [6] int64, offsets: [n + 1]
      int64 (the record fields above). height, width: the image's size in pixels.
    crop_window: [4] int32 (y, x, height, width) in pixels of the 1/reduction decode, as
      tf.io.decode_and_crop_jpeg takes it; reduction: int32 scalar.

  Returns:
    (JPEG bytes scalar, [4] int32 window in the region's 1/reduction pixels).
  """
  layout = tf.cast(layout, tf.int32)
  # Rows are MCU rows, columns restart intervals: (y, x) units in pixels.
  unit = layout[0:2] * tf.stack([1, layout[2]])
  size = tf.cast(tf.stack([height, width]), tf.int32)
  start = crop_window[0:2] * reduction
  stop = tf.minimum(start + crop_window[2:4] * reduction, size)
  first = start // unit
  last = (stop + unit - 1) // unit  # exclusive
  index = tf.reshape(tf.range(first[0], last[0])[:, None] * layout[3]
                     + tf.range(first[1], last[1])[None, :], [-1])
  # Interval i's data runs from offsets[i] to 2 bytes before offsets[i + 1] (its RSTn, or the
  # EOI after the last interval).
  starts = tf.gather(offsets, index)
  pieces = tf.strings.substr(encoded, starts, tf.gather(offsets, index + 1) - 2 - starts)
  count = tf.size(index)
  marker = tf.where(tf.range(1, count + 1) < count, tf.range(count) % 8, 8)
  body = tf.strings.reduce_join(tf.strings.join([pieces, tf.gather(_MARKERS, marker)]))
  # The frame header (SOF) holds height and width 5 bytes after its marker.
  extent = tf.minimum(last * unit, size) - first * unit
  dimensions = tf.strings.reduce_join(tf.gather(_BYTES, tf.reshape(
      tf.stack([extent // 256, extent % 256], 1), [-1])))
  sof, scan = layout[4], layout[5]
  jpeg = tf.strings.join([tf.strings.substr(encoded, 0, sof + 5), dimensions,
                          tf.strings.substr(encoded, sof + 9, scan - sof - 9), body])
  offset = first * unit // reduction
  return jpeg, crop_window - tf.concat([offset, [0, 0]], 0)


def has_index(layout: tf.Tensor) -> tf.Tensor:
  """bool scalar: the record's image has a restart index (a zero layout: it has none)."""
  return layout[0] > 0
