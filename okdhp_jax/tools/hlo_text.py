"""XLA's optimised HLO module text, read line by line: its computations, their instructions,
an instruction's attributes and an array shape's bytes.

Read by tools/gpu_program.py (kernels, launches) and tools/tpu_program.py (collectives). Written
here because jaxlib's Python API hands over a compiled module as text (`Compiled.as_text()`)
and offers no walk over its instructions.
"""

from __future__ import annotations

import dataclasses
import re


@dataclasses.dataclass
class Instruction:
  name: str
  opcode: str
  shape: str        # 'bf16[64,64,64,128]{3,2,1,0}' or a tuple '(f32[..], u8[0]{0})'
  text: str         # the whole line


_INSTRUCTION = re.compile(r'^\s*(?:ROOT\s+)?%(?P<name>[^\s=]+)\s*=\s*(?P<rest>.*)$')
_COMPUTATION = re.compile(r'^(?:ENTRY\s+)?%(?P<name>[^\s(]+)\s*\(')


def _split_shape(rest: str) -> tuple[str, str]:
  """'bf16[2]{0} add(%a, %b), ...' -> ('bf16[2]{0}', 'add(%a, %b), ...'); tuples kept whole."""
  if not rest.startswith('('):
    shape, _, tail = rest.partition(' ')
    return shape, tail
  depth = 0
  for index, char in enumerate(rest):
    depth += {'(': 1, ')': -1}.get(char, 0)
    if depth == 0:
      return rest[:index + 1], rest[index + 1:].lstrip()
  return rest, ''


def parse_hlo(text: str) -> dict[str, list[Instruction]]:
  """Optimised HLO module text -> {computation name: its instructions, in order}."""
  computations, current = {}, None
  for line in text.splitlines():
    start = _COMPUTATION.match(line)
    if start and line.rstrip().endswith('{'):
      current = computations.setdefault(start.group('name'), [])
      continue
    match = _INSTRUCTION.match(line) if current is not None else None
    if match:
      shape, tail = _split_shape(match.group('rest'))
      opcode = tail.partition('(')[0].strip()
      current.append(Instruction(match.group('name'), opcode, shape, line))
  return computations


def attribute(text: str, key: str) -> str | None:
  """The value of `key=` in an instruction's text (quotes and a leading % removed), or None."""
  match = re.search(rf'\b{key}=("[^"]*"|%?[^\s,]+)', text)
  return match.group(1).strip('"').lstrip('%') if match else None


def operands(instruction: Instruction) -> list[str]:
  """The names an instruction reads, in order ('a', 'b' of 'fusion(%a, %b), kind=...')."""
  args = instruction.text.split(f'{instruction.opcode}(', 1)[1]
  depth = 1
  for end, char in enumerate(args):
    depth += {'(': 1, ')': -1}.get(char, 0)
    if depth == 0:
      return re.findall(r'%([^\s,)]+)', args[:end])
  return re.findall(r'%([^\s,)]+)', args)


def arrays(shape: str) -> list[str]:
  """The array shapes in a shape: 'f32[3]' of 'f32[3]{0}', a tuple's members in order."""
  return re.findall(r'[a-z]+\d*\[[\d,]*\]', shape)


def dims(shape: str) -> list[int]:
  """The dimensions of an array shape: [3, 128] of 'bf16[3,128]{1,0}'."""
  match = re.match(r'[a-z]+\d*\[([\d,]*)\]', shape)
  return [int(d) for d in match.group(1).split(',') if d] if match else []


def elements(shape: str) -> int:
  """The number of values in an array shape."""
  count = 1
  for dim in dims(shape):
    count *= dim
  return count


def shape_bytes(shape: str) -> int:
  """Bytes of an array shape 'bf16[3,3,128,128]{...}' (tuples: the sum of their arrays)."""
  sizes = {'pred': 1, 's8': 1, 'u8': 1, 's16': 2, 'u16': 2, 'f16': 2, 'bf16': 2, 's32': 4,
           'u32': 4, 'f32': 4, 's64': 8, 'u64': 8, 'f64': 8}
  total = 0
  for dtype, dims in re.findall(r'\b([a-z]+\d*)\[([\d,]*)\]', shape):
    count = 1
    for dim in filter(None, dims.split(',')):
      count *= int(dim)
    total += count * sizes.get(dtype, 0)
  return total
