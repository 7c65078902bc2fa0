"""JPEGs rewritten losslessly with a restart marker every few MCUs, never across an MCU row.

Why: with restart intervals that never cross an MCU row, each interval's entropy-coded bytes
decode on their own (the DC predictions restart at every marker). The training pipeline then
builds, from byte ranges alone, a small JPEG holding just the rows and columns a person's crop
needs (okdhp_jax/data/jpeg_window.py), and libjpeg decodes that instead of entropy-decoding
every row above the window and every column beside it: on COCO's photos the window decode
takes 30 % less time, the join included.

The rewrite starts from the image's quantised DCT coefficients (jpeglib reads them,
data_prep/jpeg_baseline.py) and writes one interleaved baseline scan with Huffman tables fitted
to the image. That is `jpegtran -optimize -restart`; no library on PyPI writes restart intervals
from coefficients (jpeglib exposes no restart setting, Pillow and OpenCV only encode pixels), so
the entropy coder is written here, vectorised with numpy (about 50 ms for a 640x425 photo).
The records index the markers (okdhp_jax/data/jpeg_window.py reads and writes that index).
The converters decode every rewrite with TensorFlow and keep it only if its pixels equal the
original's.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from okdhp_jax.data.jpeg_window import Frame, Unsupported, read_frame, segments

# Restart intervals at most this wide (pixels), or a twentieth of the photo's width if that
# is more: narrower ones waste fewer decoded columns around a window, but each one is a piece
# the pipeline joins. On COCO's 640 px photos 32 px gave the most crops/s (64: 1-3 % fewer,
# 128: 4-5 % fewer); on MPII's 1280 px ones 64 px did (32: 4-6 % fewer).
INTERVAL_WIDTH = 32
INTERVALS_PER_ROW = 20

# Natural (row-major) index of the k-th coefficient in zig-zag order (JPEG Figure A.6).
ZIGZAG = np.array([
    0, 1, 8, 16, 9, 2, 3, 10, 17, 24, 32, 25, 18, 11, 4, 5, 12, 19, 26, 33, 40, 48, 41, 34, 27,
    20, 13, 6, 7, 14, 21, 28, 35, 42, 49, 56, 57, 50, 43, 36, 29, 22, 15, 23, 30, 37, 44, 51,
    58, 59, 52, 45, 38, 31, 39, 46, 53, 60, 61, 54, 47, 55, 62, 63])

# Bytes a restart interval adds, measured on the bundled photos: its marker (2), the padding to
# a byte (0.5 on average) and the DC coded afresh at its start (about 1).
MARKER_BYTES = 3.5
MAX_GROWTH = 0.1

_DHT, _DRI, _SOS = 0xC4, 0xDD, 0xDA


def interval_for(frame: Frame, source_bytes: int, max_width: int | None = None) -> int:
  """MCUs per restart interval: a divisor of the MCUs per row, so that no interval crosses a row.

  The largest divisor at most `max_width` pixels wide (default: INTERVAL_WIDTH or a
  INTERVALS_PER_ROW-th of the width, whichever is more), or a wider one where the markers
  would add more than MAX_GROWTH to the file (a low-bitrate photo whose MCU count per row has
  no small divisor: the whole row, at worst).
  """
  if max_width is None:
    max_width = max(INTERVAL_WIDTH, frame.width // INTERVALS_PER_ROW)
  per_row = frame.mcus_per_row
  divisors = [n for n in range(1, per_row + 1) if per_row % n == 0]
  limit = max(1, max_width // frame.mcu_width)
  preferred = max(n for n in divisors if n <= limit)
  for n in divisors:
    intervals = frame.mcu_rows * per_row // n
    if n >= preferred and intervals * MARKER_BYTES <= MAX_GROWTH * source_bytes:
      return n
  return per_row


# ---------------------------------------------------------------------------------------------
# The entropy coder.


def _code_lengths(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """JPEG Huffman table for symbol `counts` [256]: (bits [17] counts per code length 1..16,
  huffval [n] symbols in code order), as in JPEG Annex K.2 (libjpeg's jpeg_gen_optimal_table).
  """
  freq = np.zeros(257, np.int64)
  freq[:256] = counts
  freq[256] = 1  # reserves the all-ones code word, which JPEG forbids
  size = np.zeros(257, np.int64)
  others = np.full(257, -1, np.int64)
  while True:
    live = np.flatnonzero(freq > 0)
    if len(live) < 2:
      break
    # The two least frequent; among equals the larger symbol value, as libjpeg picks.
    order = np.lexsort((-live, freq[live]))
    c1, c2 = live[order[0]], live[order[1]]
    freq[c1] += freq[c2]
    freq[c2] = 0
    for c in (c1, c2):
      size[c] += 1
      while others[c] >= 0:
        c = others[c]
        size[c] += 1
    while others[c1] >= 0:
      c1 = others[c1]
    others[c1] = c2
  bits = np.bincount(size[size > 0], minlength=33)[:33].astype(np.int64)
  for i in range(32, 16, -1):  # no code longer than 16 bits (Annex K.3 / libjpeg)
    while bits[i] > 0:
      j = i - 2
      while bits[j] == 0:
        j -= 1
      bits[i] -= 2
      bits[i - 1] += 1
      bits[j + 1] += 2
      bits[j] -= 1
  i = 16
  while bits[i] == 0:
    i -= 1
  bits[i] -= 1  # drop the reserved code word
  symbols = np.flatnonzero(size[:256] > 0)
  huffval = symbols[np.lexsort((symbols, size[symbols]))]
  return bits[:17], huffval


def _canonical_codes(bits: np.ndarray, huffval: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """(code [256], length [256]) of each symbol under the canonical code of (bits, huffval)."""
  code = np.zeros(256, np.int64)
  length = np.zeros(256, np.int64)
  next_code, k = 0, 0
  for size in range(1, 17):
    for _ in range(int(bits[size])):
      code[huffval[k]], length[huffval[k]] = next_code, size
      next_code += 1
      k += 1
    next_code <<= 1
  return code, length


def _magnitude(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """(size category, extra bits) of JPEG's value coding: size = bits of |v|, and the extra
  bits are v for v > 0, v + 2^size - 1 for v < 0."""
  magnitude = np.abs(values)
  size = np.zeros(values.shape, np.int64)
  nonzero = magnitude > 0
  size[nonzero] = np.floor(np.log2(magnitude[nonzero])).astype(np.int64) + 1
  extra = np.where(values < 0, values + (1 << size) - 1, values)
  return size, extra


def _scan_blocks(components: list[np.ndarray], frame: Frame):
  """Blocks in interleaved scan order: (coefficients [B, 64] zig-zag, component [B], MCU [B]).

  components: per component [rows, cols, 8, 8] quantised coefficients. Blocks the MCU grid
  needs beyond a component's own (at the right and bottom edges) are added with zero AC and
  the DC of the nearest real block; decoders discard them.
  """
  mcu_rows, per_row = frame.mcu_rows, frame.mcus_per_row
  single = len(components) == 1
  blocks, component_ids, mcu_ids = [], [], []
  for c, (coefficients, (v, h)) in enumerate(zip(components, frame.sampling)):
    v, h = (1, 1) if single else (v, h)
    rows, cols = mcu_rows * v, per_row * h
    flat = coefficients.reshape(coefficients.shape[0], coefficients.shape[1], 64)
    if flat.shape[0] < rows or flat.shape[1] < cols:
      padded = np.zeros((rows, cols, 64), flat.dtype)
      padded[:flat.shape[0], :flat.shape[1]] = flat
      dc = np.pad(flat[:, :, 0], ((0, rows - flat.shape[0]), (0, cols - flat.shape[1])),
                  mode='edge')
      padded[:, :, 0] = dc
      flat = padded
    flat = flat[:rows, :cols]
    # [mcu_row, v, mcu_col, h, 64] -> [mcu_row, mcu_col, v, h, 64]: blocks by MCU, then
    # within an MCU row-major, as the scan interleaves them.
    grid = flat.reshape(mcu_rows, v, per_row, h, 64).transpose(0, 2, 1, 3, 4)
    blocks.append(grid.reshape(mcu_rows * per_row, v * h, 64))
    component_ids.append(np.full((mcu_rows * per_row, v * h), c))
    mcu_ids.append(np.broadcast_to(np.arange(mcu_rows * per_row)[:, None],
                                   (mcu_rows * per_row, v * h)))
  coefficients = np.concatenate(blocks, axis=1).reshape(-1, 64)[:, ZIGZAG].astype(np.int64)
  return (coefficients, np.concatenate(component_ids, axis=1).reshape(-1),
          np.concatenate(mcu_ids, axis=1).reshape(-1))


def _symbols(coefficients, component, mcu, interval: int):
  """The scan's symbols in order: (block [S], is_ac [S], symbol [S], extra [S], extra_size [S]).

  Args:
    coefficients: [B, 64] zig-zag order; component, mcu: [B] per block; interval: MCUs per
      restart interval (DC predictions start from 0 at each).
  """
  count = len(coefficients)
  dc = coefficients[:, 0]
  # Each block's DC is coded as the difference from the previous block of its component in
  # the same restart interval.
  previous = np.zeros(count, np.int64)
  for c in np.unique(component):
    index = np.flatnonzero(component == c)
    prior = np.concatenate([[0], dc[index[:-1]]])
    first = np.concatenate([[True], mcu[index[1:]] // interval != mcu[index[:-1]] // interval])
    previous[index] = np.where(first, 0, prior)
  dc_size, dc_extra = _magnitude(dc - previous)

  ac = coefficients[:, 1:]
  block, position = np.nonzero(ac)
  position = position + 1  # zig-zag index 1..63
  # ([:len] keeps both empty for an image without a single nonzero AC coefficient.)
  first_in_block = np.concatenate([[True], block[1:] != block[:-1]])[:len(block)]
  previous_position = np.concatenate([[0], position[:-1]])[:len(block)]
  run = position - np.where(first_in_block, 0, previous_position) - 1
  zrl = run // 16  # runs of 16 zeros each need a ZRL symbol (0xF0) first
  ac_size, ac_extra = _magnitude(ac[block, position - 1])
  last = np.full(count, 0)
  np.maximum.at(last, block, position)
  eob = last < 63

  # Symbols per block: its DC, the ZRLs and the symbol of each nonzero AC, an EOB if needed.
  per_block = 1 + np.bincount(block, weights=zrl + 1, minlength=count).astype(np.int64) + eob
  start = np.concatenate([[0], np.cumsum(per_block)[:-1]])
  total = int(per_block.sum())
  symbol = np.zeros(total, np.int64)
  extra = np.zeros(total, np.int64)
  extra_size = np.zeros(total, np.int64)
  is_ac = np.ones(total, bool)
  owner = np.repeat(np.arange(count), per_block)
  is_ac[start] = False
  symbol[start] = dc_size
  extra[start] = dc_extra
  extra_size[start] = dc_size
  # Where each nonzero AC's own symbol lands: after its block's DC and every earlier AC's
  # ZRLs and symbol.
  used = np.cumsum(zrl + 1)
  before = used - (zrl + 1)
  block_base = np.zeros(count, np.int64)
  np.add.at(block_base, block[first_in_block], before[first_in_block])
  slot = start[block] + 1 + (used - 1) - block_base[block]
  symbol[slot] = (run % 16) * 16 + ac_size
  extra[slot] = ac_extra
  extra_size[slot] = ac_size
  zrl_blocks = np.flatnonzero(zrl)
  if len(zrl_blocks):
    zrl_slots = np.concatenate([slot[i] - np.arange(zrl[i], 0, -1) for i in zrl_blocks])
    symbol[zrl_slots] = 0xF0
  symbol[(start + per_block - 1)[eob]] = 0x00  # EOB
  return owner, is_ac, symbol, extra, extra_size


def _pack(values: np.ndarray, sizes: np.ndarray) -> np.ndarray:
  """uint8 bytes of the bit string values[0] (sizes[0] bits, MSB first), values[1], ...

  Every size is at most 27 bits (a 16-bit code and 11 extra bits), so a value starting at
  bit offset 0..7 of a byte fits in that byte and the 4 after it. The bit fields are
  disjoint, so summing each byte's parts (bincount) is the same as OR-ing them.
  """
  start = np.cumsum(sizes) - sizes
  first_byte, offset = start // 8, start % 8
  window = values << (40 - offset - sizes)
  index = (first_byte[:, None] + np.arange(5)[None, :]).reshape(-1)
  parts = ((window[:, None] >> (32 - 8 * np.arange(5))[None, :]) & 0xFF).reshape(-1)
  length = int((start[-1] + sizes[-1] + 7) // 8) if len(sizes) else 0
  packed = np.bincount(index, weights=parts, minlength=length + 5)[:length]
  return packed.astype(np.uint8)


def _entropy_coded(owner, is_ac, symbol, extra, extra_size, table_of_block, mcu, interval,
                   tables):
  """The scan's bytes: each restart interval padded with 1-bits to a byte, 0xFF bytes stuffed,
  intervals separated by RST0..RST7 in turn."""
  table = table_of_block[owner]
  code = np.zeros(len(symbol), np.int64)
  length = np.zeros(len(symbol), np.int64)
  for t, (dc_codes, ac_codes) in enumerate(tables):
    for codes, mask in ((dc_codes, ~is_ac), (ac_codes, is_ac)):
      chosen = mask & (table == t)
      code[chosen] = codes[0][symbol[chosen]]
      length[chosen] = codes[1][symbol[chosen]]
  value = (code << extra_size) | extra
  size = length + extra_size
  # Pad each restart interval to a byte boundary with 1-bits.
  interval_of = mcu[owner] // interval
  intervals = int(interval_of[-1]) + 1
  bits = np.bincount(interval_of, weights=size, minlength=intervals).astype(np.int64)
  pad = (-bits) % 8
  ends = np.searchsorted(interval_of, np.arange(intervals), side='right')
  value = np.insert(value, ends, (1 << pad) - 1)
  size = np.insert(size, ends, pad)
  packed = _pack(value, size)
  interval_bytes = (bits + pad) // 8
  # Byte stuffing: a 0x00 after every 0xFF of entropy-coded data.
  stuffed_at = np.flatnonzero(packed == 0xFF) + 1
  packed = np.insert(packed, stuffed_at, 0)
  boundaries = np.cumsum(interval_bytes)
  boundaries = boundaries + np.searchsorted(stuffed_at, boundaries, side='right')
  # RSTn after every interval but the last.
  markers = np.stack([np.full(intervals - 1, 0xFF), 0xD0 + np.arange(intervals - 1) % 8], 1)
  return np.insert(packed, np.repeat(boundaries[:-1], 2), markers.reshape(-1).astype(np.uint8))


def _table_segment(table_class: int, table_id: int, bits, huffval) -> bytes:
  body = bytes([table_class << 4 | table_id]) + bytes(int(b) for b in bits[1:17]) + bytes(
      int(v) for v in huffval)
  return b'\xff\xc4' + (len(body) + 2).to_bytes(2, 'big') + body


def rewrite(data: bytes, components: list[np.ndarray], max_width: int | None = None) -> bytes:
  """JPEG `data` written again from its quantised coefficients as one baseline scan with a
  restart marker every interval_for(...) MCUs.

  Args:
    data: the source JPEG (baseline or progressive; its APPn, COM, DQT and SOF are kept).
    components: per component [rows, cols, 8, 8] int quantised DCT coefficients in natural
      (row-major) order, as jpeglib.read_dct gives them.
    max_width: the widest restart interval wanted, in pixels (interval_for).
  Returns:
    The rewritten JPEG's bytes. Unsupported for 12-bit, CMYK, lossless or arithmetic JPEGs.
  """
  frame = read_frame(data)
  if len(components) != len(frame.sampling):
    raise Unsupported(f'{len(components)} coefficient arrays for {len(frame.sampling)} '
                      'components')
  interval = interval_for(frame, len(data), max_width)
  frame = dataclasses.replace(frame, restart_interval=interval)
  coefficients, component, mcu = _scan_blocks(components, frame)
  owner, is_ac, symbol, extra, extra_size = _symbols(coefficients, component, mcu, interval)
  # Table 0 for the first component (luma), table 1 for the others, as encoders usually do.
  table_of_block = np.minimum(component, 1)
  header = [data[:2]]
  count = len(frame.sampling)
  for marker, offset, length in segments(data):
    if marker in (_DHT, _DRI, _SOS):
      continue
    segment = data[offset:offset + 2 + length]
    if offset == frame.sof_offset:
      segment = b'\xff\xc0' + segment[2:]  # written as a baseline frame
    header.append(segment)
  tables = []
  for t in range(min(count, 2)):
    codes = []
    for ac_class in (0, 1):
      selected = (table_of_block[owner] == t) & (is_ac == bool(ac_class))
      bits, huffval = _code_lengths(np.bincount(symbol[selected], minlength=256))
      header.append(_table_segment(ac_class, t, bits, huffval))
      codes.append(_canonical_codes(bits, huffval))
    tables.append(codes)
  header.append(b'\xff\xdd\x00\x04' + interval.to_bytes(2, 'big'))
  sof = data[frame.sof_offset:]
  ids = [sof[10 + 3 * i] for i in range(count)]
  scan = bytes([count]) + b''.join(bytes([i, 0x00 if c == 0 else 0x11])
                                    for c, i in enumerate(ids)) + b'\x00\x3f\x00'
  header.append(b'\xff\xda' + (len(scan) + 2).to_bytes(2, 'big') + scan)
  body = _entropy_coded(owner, is_ac, symbol, extra, extra_size, table_of_block, mcu, interval,
                        tables)
  return b''.join(header) + body.tobytes() + b'\xff\xd9'
