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
the entropy coder is written here, vectorised with numpy (about 22 ms for a 640x425 photo).
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
  # frexp's exponent of an integer m > 0 is its bit count (m = f 2^e, 0.5 <= f < 1); of 0, 0.
  size = np.frexp(np.abs(values).astype(np.float32))[1].astype(np.int32)
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
  blocks, component_ids = [], []
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
  coefficients = np.concatenate(blocks, axis=1).reshape(-1, 64)[:, ZIGZAG].astype(np.int32)
  blocks_per_mcu = coefficients.shape[0] // (mcu_rows * per_row)
  mcu = np.arange(coefficients.shape[0]) // blocks_per_mcu
  return coefficients, np.concatenate(component_ids, axis=1).reshape(-1), mcu


@dataclasses.dataclass
class _Symbols:
  """A scan's symbols before Huffman coding, per block and per nonzero AC coefficient.

  Per block [B]: dc_size (its DC symbol) and dc_extra, the difference from the previous
  block's DC; eob, whether the block ends before coefficient 63 (an EOB symbol). Per nonzero AC
  coefficient [A], in scan order: block, symbol (run % 16 and size), extra, size, and zrl, the
  ZRL symbols (16 zeros each) coded before it.
  """

  dc_size: np.ndarray
  dc_extra: np.ndarray
  eob: np.ndarray
  block: np.ndarray
  symbol: np.ndarray
  extra: np.ndarray
  size: np.ndarray
  zrl: np.ndarray


def _symbols(coefficients, component, mcu, interval: int) -> _Symbols:
  """The scan's symbols.

  Args:
    coefficients: [B, 64] zig-zag order; component, mcu: [B] per block; interval: MCUs per
      restart interval (DC predictions start from 0 at each).
  """
  count = len(coefficients)
  dc = coefficients[:, 0]
  # Each block's DC is coded as the difference from the previous block of its component in
  # the same restart interval.
  previous = np.zeros(count, np.int32)
  for c in np.unique(component):
    index = np.flatnonzero(component == c)
    prior = np.concatenate([[0], dc[index[:-1]]])
    first = np.concatenate([[True], mcu[index[1:]] // interval != mcu[index[:-1]] // interval])
    previous[index] = np.where(first, 0, prior)
  dc_size, dc_extra = _magnitude(dc - previous)

  nonzero = coefficients != 0
  nonzero[:, 0] = False
  flat_index = np.flatnonzero(nonzero)
  block, position = flat_index >> 6, (flat_index & 63).astype(np.int32)
  # ([:len] keeps both empty for an image without a single nonzero AC coefficient.)
  first_in_block = np.concatenate([[True], block[1:] != block[:-1]])[:len(block)]
  previous_position = np.concatenate([[0], position[:-1]])[:len(block)]
  run = position - np.where(first_in_block, 0, previous_position) - 1
  size, extra = _magnitude(coefficients.reshape(-1)[flat_index])
  last = np.zeros(count, np.int32)
  last_in_block = np.concatenate([block[1:] != block[:-1], [True]])[:len(block)]
  last[block[last_in_block]] = position[last_in_block]
  return _Symbols(dc_size=dc_size, dc_extra=dc_extra, eob=last < 63, block=block,
                  symbol=(run & 15) * 16 + size, extra=extra, size=size, zrl=run >> 4)


def _symbol_counts(symbols: _Symbols, table_of_block: np.ndarray, table: int):
  """How often table `table` codes each symbol: (DC counts [256], AC counts [256])."""
  in_table = table_of_block == table
  ac_in_table = in_table[symbols.block]
  dc = np.bincount(symbols.dc_size[in_table], minlength=256)
  ac = np.bincount(symbols.symbol[ac_in_table], minlength=256)
  ac[0xF0] += symbols.zrl[ac_in_table].sum()
  ac[0x00] += symbols.eob[in_table].sum()
  return dc, ac


def _bit_fields(symbols: _Symbols, table_of_block, mcu, interval: int, codes, lengths):
  """The scan's bit fields in order, each symbol's code with its extra bits, and 1-bits that
  pad every restart interval to a byte: (value [F], size [F] bits, interval bytes [I]).

  table_of_block, mcu: [B] per block; interval: MCUs per restart interval; codes, lengths:
  [tables, 2 (DC, AC), 256] canonical Huffman code of every symbol.
  """
  count = len(symbols.dc_size)
  # Symbol slots: per block its DC, then each nonzero AC's ZRLs and own symbol, then its EOB.
  # Slots before block b [B + 1] (the last: all of them) and before each nonzero AC [A].
  ac_used = np.cumsum(symbols.zrl + 1)
  eob_before = np.concatenate([[0], np.cumsum(symbols.eob)])
  ac_before = np.concatenate([[0], ac_used])[np.searchsorted(symbols.block, np.arange(count + 1))]
  block_start = np.arange(count + 1) + ac_before + eob_before
  ac_slot = ac_used + symbols.block + eob_before[symbols.block]
  value = np.zeros(block_start[-1], np.int64)
  size = np.zeros(block_start[-1], np.int64)

  codes, lengths = codes.reshape(-1), lengths.reshape(-1)

  def key(table, ac_class, symbol):  # index of [table, ac_class, symbol] in codes and lengths
    return (2 * table + ac_class) * 256 + symbol

  dc_key = key(table_of_block, 0, symbols.dc_size)
  value[block_start[:-1]] = (codes[dc_key] << symbols.dc_size) | symbols.dc_extra
  size[block_start[:-1]] = lengths[dc_key] + symbols.dc_size
  ac_table = table_of_block[symbols.block]
  ac_key = key(ac_table, 1, symbols.symbol)
  value[ac_slot] = (codes[ac_key] << symbols.size) | symbols.extra
  size[ac_slot] = lengths[ac_key] + symbols.size
  has_zrl = np.flatnonzero(symbols.zrl)
  zrl = symbols.zrl[has_zrl]
  # The k-th of an AC's n ZRLs sits n - k slots before it.
  before_ac = np.arange(zrl.sum()) - np.repeat(np.cumsum(zrl) - zrl, zrl) - np.repeat(zrl, zrl)
  zrl_slot = np.repeat(ac_slot[has_zrl], zrl) + before_ac
  zrl_table = np.repeat(ac_table[has_zrl], zrl)
  value[zrl_slot] = codes[key(zrl_table, 1, 0xF0)]
  size[zrl_slot] = lengths[key(zrl_table, 1, 0xF0)]
  eob_slot = block_start[1:][symbols.eob] - 1
  eob_key = key(table_of_block[symbols.eob], 1, 0x00)
  value[eob_slot] = codes[eob_key]
  size[eob_slot] = lengths[eob_key]

  # Each restart interval padded to a byte boundary with 1-bits; it ends before the first
  # block of the next one.
  restart = mcu // interval
  ends = block_start[np.append(np.flatnonzero(restart[1:] != restart[:-1]) + 1, count)]
  bit_ends = np.cumsum(size)[ends - 1]
  bits = np.diff(np.concatenate([[0], bit_ends]))
  pad = (-bits) % 8
  value = np.insert(value, ends, (1 << pad) - 1)
  size = np.insert(size, ends, pad)
  return value, size, (bits + pad) // 8


def _pack(values: np.ndarray, sizes: np.ndarray) -> np.ndarray:
  """uint8 bytes of the bit string values[0] (sizes[0] bits, MSB first), values[1], ...

  Every size is at most 27 bits (a 16-bit code and 11 extra bits), so a field starting at bit
  offset 0..31 of a 32-bit word ends within the next word: shifted into a 64-bit window, its
  top half belongs to the word it starts in, its bottom half to the next. The fields are
  disjoint, so summing each word's parts is the same as OR-ing them, and the fields that
  start in one word are adjacent (add.reduceat).
  """
  start = np.cumsum(sizes) - sizes
  total_bits = int(start[-1] + sizes[-1]) if len(sizes) else 0
  word, offset = start >> 5, start & 31
  # int64 arithmetic: a window may reach bit 63 (the sign), and masking after the shift
  # undoes the sign extension. A zero-size field has value 0, so its shift by 64 (a no-op on
  # x86) does not matter.
  window = values << (64 - offset - sizes)
  starts_word = np.ones(len(word), bool)
  np.not_equal(word[1:], word[:-1], out=starts_word[1:])
  first = np.flatnonzero(starts_word)
  packed = np.zeros(total_bits // 32 + 2, np.int64)
  packed[word[first]] = np.add.reduceat((window >> 32) & 0xFFFFFFFF, first)
  packed[word[first] + 1] += np.add.reduceat(window & 0xFFFFFFFF, first)
  return packed.astype('>u4').view(np.uint8)[:(total_bits + 7) // 8]


def _entropy_coded(symbols: _Symbols, table_of_block, mcu, interval: int, codes, lengths):
  """The scan's bytes: each restart interval padded with 1-bits to a byte, 0xFF bytes stuffed,
  intervals separated by RST0..RST7 in turn."""
  value, size, interval_bytes = _bit_fields(symbols, table_of_block, mcu, interval, codes,
                                            lengths)
  intervals = len(interval_bytes)
  packed = _pack(value, size)
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
  symbols = _symbols(coefficients, component, mcu, interval)
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
  codes = np.zeros((min(count, 2), 2, 256), np.int64)
  lengths = np.zeros((min(count, 2), 2, 256), np.int64)
  for t in range(min(count, 2)):
    for ac_class, counts in enumerate(_symbol_counts(symbols, table_of_block, t)):
      bits, huffval = _code_lengths(counts)
      header.append(_table_segment(ac_class, t, bits, huffval))
      codes[t, ac_class], lengths[t, ac_class] = _canonical_codes(bits, huffval)
  header.append(b'\xff\xdd\x00\x04' + interval.to_bytes(2, 'big'))
  sof = data[frame.sof_offset:]
  ids = [sof[10 + 3 * i] for i in range(count)]
  scan = bytes([count]) + b''.join(bytes([i, 0x00 if c == 0 else 0x11])
                                    for c, i in enumerate(ids)) + b'\x00\x3f\x00'
  header.append(b'\xff\xda' + (len(scan) + 2).to_bytes(2, 'big') + scan)
  body = _entropy_coded(symbols, table_of_block, mcu, interval, codes, lengths)
  return b''.join(header) + body.tobytes() + b'\xff\xd9'
