r"""The train step compiled for a described Cloud TPU slice on any CPU machine: memory, collectives.

  pip install 'okdhp_jax[tpu-aot]'   # libtpu; no TPU needed
  python -m okdhp_jax.tools.tpu_program --config configs/hg4.py --tpu v5e:4x4 --batch 128
  python -m okdhp_jax.tools.tpu_program --config configs/hg4.py --tpu v5e:2x2 --slices 2 \
      --batch 64 --config.train.batch_norm_stats=per_device
  python -m okdhp_jax.tools.tpu_program --config configs/hg4.py --tpu v5p:2x2x1 --fit

libtpu compiles the step ahead of time for the slice `--tpu` names (a Cloud TPU topology,
'v5e:4x4' = 16 v5e chips over 4 hosts), or for `--slices` such slices joined by the data-centre
network: then the mesh is a hybrid one (jax's create_hybrid_device_mesh), data parallel within
and across the slices. The step is lowered from abstract inputs sharded on that mesh; nothing
runs. libtpu warns that no accelerator type is set, and carries on.

One table, a column per config: per chip, the argument, output and temporary memory against
the chip's HBM; the collectives per step by kind and dtype (count and MiB), with how many chips
each group spans (within a slice, across slices); the FLOPs per chip from XLA's cost analysis,
and the seconds to trace and compile. `--fit` adds the largest global batch whose program fits
the chips, found by compiling: aimed at the chip's HBM from what the compiled programs took and
what the refused ones needed (libtpu refuses a program too large early and says how much it
needed; one that fits takes several times as long), bisected where the aim misses.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import json
import math
import os
import re
import sys
import time

from okdhp_jax.tools import gpu_program, hlo_text

EXTRA = 'okdhp_jax[tpu-aot]'
GIB, MIB = 2**30, 2**20
COLLECTIVES = ('all-reduce', 'all-gather', 'reduce-scatter', 'collective-permute', 'all-to-all')


@dataclasses.dataclass(frozen=True)
class Chip:
  """What a chip generation offers per chip (Cloud TPU's system-architecture pages)."""
  name: str
  hbm_gib: float
  bf16_tflops: float


# Keyed by the topology name's prefix ('v5e:4x4' -> 'v5e'). Google's tables give a v5p 95 GB of
# HBM, but libtpu leaves a v5p program 95.74 GiB for its temporaries (a v5e one 15.75 of 16):
# the chip holds 96 GiB.
CHIPS = {
    'v4': Chip('TPU v4', 32, 275),
    'v5e': Chip('TPU v5e', 16, 197),
    'v5p': Chip('TPU v5p', 96, 459),
    'v6e': Chip('TPU v6e (Trillium)', 32, 918),
}


def chip_of(topology: str) -> Chip:
  generation = topology.partition(':')[0]
  if generation not in CHIPS or ':' not in topology:
    raise ValueError(f'--tpu {topology!r}: give a Cloud TPU topology such as v5e:4x4, '
                     f'v5p:2x2x2 or v4:2x2x1 (generations: {sorted(CHIPS)})')
  return CHIPS[generation]


def check_libtpu() -> str | None:
  """Why a TPU cannot be described here (None: it can)."""
  import importlib.util  # pylint: disable=g-import-not-at-top
  if importlib.util.find_spec('libtpu') is None:
    return (f'compiling for a described TPU needs libtpu; install the extra: pip install '
            f'"{EXTRA}" (or pip install "jax[tpu]" of this jax version)')
  return None


def described_mesh(topology: str, slices: int = 1):
  """The `data` mesh (sharding.mesh_over) over every chip of `slices` described `topology`
  slices: several slices make a hybrid mesh, data parallel within and across them."""
  from jax.experimental import topologies  # pylint: disable=g-import-not-at-top

  from okdhp_jax import sharding  # pylint: disable=g-import-not-at-top
  chip_of(topology)
  kwargs = {'num_slices': slices} if slices > 1 else {}
  try:
    devices = topologies.get_topology_desc(topology_name=topology, platform='tpu',
                                           **kwargs).devices
  except Exception as error:  # pylint: disable=broad-except
    raise ValueError(f'--tpu {topology!r}: libtpu does not know this topology '
                     f'({str(error).splitlines()[0]})') from None
  return sharding.mesh_over(devices)


# ------------------------------------------------------------------- the compiled program

def group_size(instruction_text: str, num_devices: int) -> int:
  """How many devices each replica group of a collective holds.

  XLA writes the groups as explicit lists ({{0,1},{2,3}}), as an iota ([2,4]<=[8]: groups are
  the last dimension) or, on TPU, over named mesh axes (mesh['axis_0'=4,'axis_1'=2]{'axis_0'}:
  the braces name the axes a group spans); no groups means all devices.
  """
  groups = hlo_text.attribute(instruction_text, 'replica_groups')
  text = instruction_text.partition('replica_groups=')[2]
  if not groups or not text:
    return num_devices
  if text.startswith('{{'):
    return len(text[2:].partition('}')[0].split(','))
  iota = re.match(r'\[([\d,]+)\]<=', text)
  if iota:
    return int(iota.group(1).split(',')[-1])
  named = re.match(r"mesh\[([^\]]*)\]\{([^}]*)\}", text)
  if named:
    sizes = dict(re.findall(r"'(\w+)'=(\d+)", named.group(1)))
    return math.prod(int(sizes[a]) for a in re.findall(r"'(\w+)'", named.group(2)))
  return num_devices


# Collectives are told apart by size: BatchNorm statistics are a few KiB each, latency-bound
# barriers inside the forward and backward passes; gradients travel in a few large ones.
LARGE_BYTES = MIB
# The group of a transfer between slices over the data-centre network (DCN).
ACROSS_SLICES = 0


def collective_counts(program: str, num_devices: int) -> list[dict]:
  """[{kind, dtype, group, size, count, mib}] of the collectives in `program` (optimised HLO
  text), per step; size is 'small' (each under LARGE_BYTES) or 'large'.

  Asynchronous pairs count once (the -start; the -done moves nothing). The bytes are those of
  the result: the array each device ends with (for an all-reduce, the array reduced).
  """
  rows = collections.defaultdict(lambda: [0, 0])
  for body in hlo_text.parse_hlo(program).values():
    for instruction in body:
      kind = instruction.opcode.removesuffix('-start')
      shape = instruction.shape
      group = None
      dcn = re.search(r'_xla_megascale_transfer_type="(\w+)"', instruction.text)
      if instruction.opcode == 'send' and dcn:
        # Across slices, XLA hands the data-centre network's transfers to the Multislice
        # runtime as host sends (each with its recv): one per reduction, the data first.
        kind, group = f'DCN {dcn.group(1).lower().replace("_", "-")}', ACROSS_SLICES
        shape = hlo_text.arrays(shape)[0]
      elif kind not in COLLECTIVES or instruction.opcode.endswith('-done'):
        continue
      elif instruction.opcode.endswith('-start') and shape.startswith('('):
        # (operands..., results...) for async starts: keep the results' half.
        arrays = hlo_text.arrays(shape)
        shape = ' '.join(arrays[len(arrays) // 2:])
      dtypes = '+'.join(sorted(set(re.findall(r'\b([a-z]+\d*)\[', shape))))
      size = hlo_text.shape_bytes(shape)
      if group is None:
        group = group_size(instruction.text, num_devices)
      row = rows[(kind, dtypes, group, 'large' if size >= LARGE_BYTES else 'small')]
      row[0] += 1
      row[1] += size
  return [{'kind': k, 'dtype': d, 'group': g, 'size': z, 'count': n, 'mib': b / MIB}
          for (k, d, g, z), (n, b) in sorted(rows.items())]


def program_row(compiled, mesh, chip: Chip, slices: int) -> dict:
  memory = compiled.memory_analysis()
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  flops = float((cost or {}).get('flops', 0.0))
  num_devices = mesh.devices.size
  row = {'chips': num_devices, 'slices': slices, 'chip': chip.name, 'hbm_gib': chip.hbm_gib,
         'argument_gib': memory.argument_size_in_bytes / GIB,
         'output_gib': memory.output_size_in_bytes / GIB,
         'temp_gib': memory.temp_size_in_bytes / GIB,
         'alias_gib': memory.alias_size_in_bytes / GIB,
         'flops_per_chip': flops,
         'compute_ms_at_peak': flops / (chip.bf16_tflops * 1e12) * 1e3,
         'collectives': collective_counts(compiled.as_text(), num_devices)}
  row['peak_gib'] = peak_gib(row)
  return row


def peak_gib(row: dict) -> float:
  """Memory a chip holds during the step: arguments, temporaries and the outputs that do not
  reuse a donated argument's buffer."""
  return row['argument_gib'] + row['temp_gib'] + row['output_gib'] - row['alias_gib']


def measure(config_spec: str, dtype: str | None, batch: int | None, mesh, chip: Chip,
            slices: int, overrides=(), save_hlo: str | None = None) -> dict:
  row = gpu_program.compile_step(config_spec, dtype, batch, mesh, dump_to=None, backend='tpu',
                                 overrides=overrides)
  compiled = row.pop('compiled')
  row.update(program_row(compiled, mesh, chip, slices))
  if save_hlo:
    os.makedirs(save_hlo, exist_ok=True)
    name = f'{os.path.basename(config_spec).replace(":", "_")}_b{row["batch"]}.hlo.txt'
    with open(os.path.join(save_hlo, name), 'w', encoding='utf-8') as f:
      f.write(compiled.as_text())
  return row


# ------------------------------------------------------------------ does a batch fit?

# Cloud TPU accelerator types (what `gcloud ... --accelerator-type` takes) -> topology, for the
# launcher. v4 and v5p count TensorCores (2 per chip), v5e and v6e count chips.
ACCELERATOR_TOPOLOGIES = {
    'v4-8': 'v4:2x2x1', 'v4-16': 'v4:2x2x2', 'v4-32': 'v4:2x2x4', 'v4-64': 'v4:2x4x4',
    'v4-128': 'v4:4x4x4',
    'v5p-8': 'v5p:2x2x1', 'v5p-16': 'v5p:2x2x2', 'v5p-32': 'v5p:2x2x4', 'v5p-64': 'v5p:2x4x4',
    'v5p-128': 'v5p:4x4x4',
    'v5litepod-4': 'v5e:2x2', 'v5litepod-8': 'v5e:2x4', 'v5litepod-16': 'v5e:4x4',
    'v5litepod-32': 'v5e:4x8', 'v5litepod-64': 'v5e:8x8', 'v5litepod-128': 'v5e:8x16',
    'v5litepod-256': 'v5e:16x16',
    'v6e-4': 'v6e:2x2', 'v6e-8': 'v6e:2x4', 'v6e-16': 'v6e:4x4', 'v6e-32': 'v6e:4x8',
    'v6e-64': 'v6e:8x8', 'v6e-128': 'v6e:8x16', 'v6e-256': 'v6e:16x16',
}


def topology_of(accelerator_type: str) -> str:
  if accelerator_type not in ACCELERATOR_TOPOLOGIES:
    raise ValueError(f'--accelerator-type {accelerator_type!r} is not one this tool knows '
                     f'({", ".join(ACCELERATOR_TOPOLOGIES)}); give --tpu TOPOLOGY instead')
  return ACCELERATOR_TOPOLOGIES[accelerator_type]


# libtpu refuses a program too large for the chip before its expensive passes, in a fraction of
# the time a program that fits takes (v5e: 10 s against 4 minutes for MobilePose, 8 against 15
# for OKDHP-HG8), and says how much it would have needed:
# "RESOURCE_EXHAUSTED: Ran out of memory on HBM, the total memory required for HLO temporaries
# (16.21G) exceeds available HBM (15.75G)."
_REFUSAL = re.compile(r'temporaries \(([\d.]+)([KMG])\) exceeds available HBM \(([\d.]+)([KMG])\)')
_UNIT_GIB = {'K': 2**-20, 'M': 2**-10, 'G': 1.0}


def _out_of_memory(error: Exception) -> bool:
  text = str(error)
  return 'RESOURCE_EXHAUSTED' in text or 'out of memory' in text.lower()


def refusal(batch: int, error: Exception) -> dict:
  """The row of a program libtpu refused for memory: the temporaries per chip it needed and
  the HBM it leaves for them, where its message says (else None)."""
  found = _REFUSAL.search(str(error))
  required, available = ((float(found.group(1)) * _UNIT_GIB[found.group(2)],
                          float(found.group(3)) * _UNIT_GIB[found.group(4)])
                         if found else (None, None))
  return {'batch': batch, 'refused': True, 'required_temp_gib': required,
          'available_temp_gib': available}


def try_batch(config_spec, dtype, batch, mesh, chip, slices, overrides) -> dict:
  """measure(), or refusal() when libtpu refuses the program for memory."""
  try:
    return measure(config_spec, dtype, batch, mesh, chip, slices, overrides)
  except Exception as error:  # pylint: disable=broad-except
    if _out_of_memory(error):
      return refusal(batch, error)
    raise


def _fits(row: dict, chip: Chip) -> bool:
  return not row.get('refused') and peak_gib(row) <= chip.hbm_gib


def _besides_temporaries(row: dict | None) -> float:
  """What a compiled program holds per chip besides its temporaries (arguments and outputs:
  the state, the batch); 0 without one."""
  return peak_gib(row) - row['temp_gib'] if row else 0.0


def _memories(rows: list[dict]) -> dict[int, float]:
  """{batch: GiB per chip} of the compiles that say it: a compiled program's peak; a refused
  one's needed temporaries plus what the compiled program nearest in batch holds besides its
  temporaries (arguments and outputs: the state, the batch), where one was compiled."""
  compiled = [row for row in rows if not row.get('refused')]
  memories = {row['batch']: peak_gib(row) for row in compiled}
  for row in rows:
    if row.get('refused') and row['required_temp_gib'] is not None:
      nearest = min(compiled, key=lambda c: abs(c['batch'] - row['batch']), default=None)
      memories[row['batch']] = row['required_temp_gib'] + _besides_temporaries(nearest)
  return memories


# The search's compile budgets: programs that fit (minutes each for a full-size network), and
# programs that do not (most refused by libtpu in a fraction of that).
MAX_SEARCH_COMPILES = 8
MAX_REFUSED_COMPILES = 16


def largest_fitting_batch(config_spec, dtype, batch, mesh, chip, slices, overrides,
                          compiled: dict | None = None) -> dict:
  """{fits, fitted, exact}: the largest global batch (a multiple of the chips) whose program
  fits the chips, its compiled row, and whether the next multiple was found not to fit.

  A program fits when libtpu compiles it and its peak (arguments, temporaries, outputs not
  donated) is within the chip's HBM; libtpu itself checks only the temporaries, against what it
  leaves them (15.75 GiB of a v5e's 16, 95.74 of a v5p's 96). From a compile at `batch`, each
  next guess is aimed at the HBM along the line through the two programs whose memory is
  nearest it, the refused ones included (libtpu says what they needed), rounded up: a guess
  just over the limit is refused early, one under it compiles in full. While nothing bounds
  the search from above it at least doubles the batch, since memory per chip grows slower than
  linearly with the rows (measured on v5e: MobilePose-ResNet18 took 8.65 GiB at 411 rows per
  chip, where 8 and 32 rows extrapolate to 16). Memory is not quite monotonic in the rows near
  the limit (MobilePose on v5e: 1,426 rows need 16.21 GiB of temporaries, 1,450 need 16.06), so
  the answer is the largest batch that fits below the smallest one found not to. `exact` is False
  when a budget ran out first: `fits` then fits, and more may. `compiled`: the row of `batch`
  when it was compiled already.
  """
  chips = mesh.devices.size

  def compile_batch(batch: int) -> dict:
    started = time.monotonic()
    row = try_batch(config_spec, dtype, batch, mesh, chip, slices, overrides)
    _say_compiled(row, chip, chips, time.monotonic() - started)
    return row

  rows = [compiled or compile_batch(batch)]
  if compiled:
    _say_compiled(compiled, chip, chips)
  while not _fits(rows[-1], chip) and batch > chips:
    batch = _smaller_guess(rows, batch, chip, chips)
    rows.append(compile_batch(batch))
  if not _fits(rows[-1], chip):
    return {'fits': 0, 'fitted': None, 'exact': True}
  budget = {True: MAX_SEARCH_COMPILES, False: MAX_REFUSED_COMPILES}
  while True:
    fitting = [row for row in rows if _fits(row, chip)]
    low = max(fitting, key=lambda row: row['batch'])
    high = min((row['batch'] for row in rows if not _fits(row, chip)), default=None)
    guess = _next_guess(rows, low, high, chip, chips)
    if guess is None or not min(budget.values()):
      break
    rows.append(compile_batch(guess))
    budget[_fits(rows[-1], chip)] -= 1
  return {'fits': low['batch'], 'fitted': low,
          'exact': high is not None and high - low['batch'] <= chips}


def _say_compiled(row: dict, chip: Chip, chips: int, seconds: float | None = None) -> None:
  """The search's progress line on stderr, one per compile (they take seconds to minutes)."""
  took = '' if seconds is None else f' ({seconds:.0f} s)'
  if _fits(row, chip):
    verdict = f'fits, {peak_gib(row):.2f} GiB per chip'
  else:
    verdict = over_memory(row, chip)
  print(f'  batch {row["batch"]} ({row["batch"] // chips} per chip): {verdict}{took}',
        file=sys.stderr, flush=True)


def _limit(rows: list[dict], low: dict | None, chip: Chip) -> float:
  """The peak GiB per chip a program may reach: the HBM, or less where libtpu's limit on the
  temporaries binds first (what it leaves them, plus what `low`, the largest program that fits,
  holds besides its temporaries)."""
  available = [row['available_temp_gib'] for row in rows
               if row.get('refused') and row['available_temp_gib'] is not None]
  if not available:
    return chip.hbm_gib
  return min(chip.hbm_gib, available[0] + _besides_temporaries(low))


def _smaller_guess(rows: list[dict], batch: int, chip: Chip, chips: int) -> int:
  """Below a batch that does not fit: where the memory of the two smallest that do not
  extrapolates to the chip's HBM (from above: memory has a part that does not grow with the
  rows), or in proportion from one; at least half of `batch`."""
  limit = _limit(rows, None, chip)
  above = sorted(_memories(rows).items())[:2]
  guess = 0
  if len(above) == 2 and above[1][1] > above[0][1]:
    (b0, m0), (b1, m1) = above
    guess = b0 - (m0 - limit) * (b1 - b0) / (m1 - m0)
  elif above:
    guess = above[0][0] * limit / above[0][1]
  guess = min(int(guess) // chips * chips, batch - chips)
  return max(chips, guess, batch // 2 // chips * chips)


def _next_guess(rows: list[dict], low: dict, high: int | None, chip: Chip,
                chips: int) -> int | None:
  """The next batch to compile, a multiple of `chips` above `low`'s and below `high`; None when
  none is left. `rows`: every compile so far, in order."""
  limit = _limit(rows, low, chip)
  known = sorted(_memories(rows).items())
  # The two programs nearest the limit, one on each side of it when there are.
  under = sorted((p for p in known if p[1] <= limit), key=lambda p: p[1])[-1:]
  over = sorted((p for p in known if p[1] > limit), key=lambda p: p[1])[:1]
  pair = sorted(under + over if under and over else sorted(
      known, key=lambda p: abs(p[1] - limit))[:2])
  if len(pair) == 2 and pair[0][1] != pair[1][1]:
    (b0, m0), (b1, m1) = pair
    aim = b0 + (limit - m0) * (b1 - b0) / (m1 - m0)
  else:  # one program: as if its memory grew in proportion to its rows.
    aim = low['batch'] * limit / peak_gib(low)
  aim = math.ceil(aim / chips) * chips
  if high is None:
    # Aim far past the limit: memory grows slower than the line, so a guess aimed at it lands
    # under the limit, and a program that fits costs several times what a refusal does.
    return max(2 * aim, 2 * low['batch'])
  middle = (low['batch'] + high) // 2 // chips * chips
  if _fits(rows[-1], chip):
    # After a program that fits, at least halve what is left, so the search does not climb in
    # small expensive steps under the limit.
    aim = max(aim, middle)
  else:
    # After three refusals in a row, bisect: memory can rise in a step (OKDHP-HG4 on a v5e:
    # 127 rows per chip took 14.39 GiB, 137 to 139 needed 15.93), where the aim would come
    # down a few rows per refusal.
    refusals = next((n for n in range(len(rows)) if _fits(rows[-1 - n], chip)), len(rows))
    if refusals >= 3:
      aim = min(aim, middle)
  guess = min(max(aim, low['batch'] + chips), high - chips)
  return guess if low['batch'] < guess < high else None


def check_batch(config_spec, dtype, batch, mesh, chip, slices, overrides, topology) -> str | None:
  """None when the global batch divides over the chips and its program fits them; else the
  one line that says why not and which batch would do."""
  chips = mesh.devices.size
  where = f'{topology}' + (f' x {slices} slices' if slices > 1 else '') + f' ({chips} chips)'
  if batch % chips:
    lower, upper = batch // chips * chips, (batch // chips + 1) * chips
    options = ' or '.join(str(b) for b in (lower, upper) if b > 0)
    return f'{where}: global batch {batch} does not divide over {chips} chips; use {options}'
  row = try_batch(config_spec, dtype, batch, mesh, chip, slices, overrides)
  if _fits(row, chip):
    return None
  found = largest_fitting_batch(config_spec, dtype, batch, mesh, chip, slices, overrides,
                                compiled=row)
  fits = f'{found["fits"]} fits' if found['fits'] else 'not even one row per chip fits'
  return f'{where}: global batch {batch} {over_memory(row, chip)}; {fits}'


def over_memory(row: dict, chip: Chip) -> str:
  """How far a program that does not fit is over the chip's memory, as one phrase."""
  hbm = f'the {chip.name} HBM of {chip.hbm_gib:g} GiB'
  if not row.get('refused'):
    return (f'needs {peak_gib(row):.1f} GiB per chip, {peak_gib(row) - chip.hbm_gib:.1f} GiB '
            f'over {hbm}')
  if row['required_temp_gib'] is None:
    return f'does not fit {hbm} (libtpu ran out of memory compiling it)'
  return (f'needs {row["required_temp_gib"]:.2f} GiB of temporaries per chip, '
          f'{row["required_temp_gib"] - row["available_temp_gib"]:.2f} GiB over the '
          f'{row["available_temp_gib"]:.2f} GiB that libtpu leaves them of {hbm}')


# ----------------------------------------------------------------------------- the table

def format_table(rows: list[dict]) -> str:
  """Markdown: one row per quantity, a column per compiled config."""
  headers = [f'{os.path.basename(r["config"])} {r["dtype"]} b{r["batch"]}' for r in rows]
  lines = ['| ' + ' | '.join(['', *headers]) + ' |', '|---|' + '---:|' * len(rows)]

  def add(label, cells):
    lines.append(f'| {label} | ' + ' | '.join(cells) + ' |')

  add('chips (slices)', [f'{r["chips"]} ({r["slices"]})' for r in rows])
  add('rows per chip', [str(r['batch'] // r['chips']) for r in rows])
  for key, label in (('argument_gib', 'arguments GiB per chip'),
                     ('temp_gib', 'temporaries GiB per chip'),
                     ('output_gib', 'outputs GiB per chip (donated: reused)')):
    add(label, [f'{r[key]:.2f}' for r in rows])
  add('peak GiB per chip / HBM', [f'{peak_gib(r):.2f} / {r["hbm_gib"]:g}' for r in rows])
  add('GFLOPs per chip per step', [f'{r["flops_per_chip"] / 1e9:,.1f}' for r in rows])
  add('ms at the chip\'s bf16 peak', [f'{r["compute_ms_at_peak"]:.1f}' for r in rows])
  def key(c):
    return c['kind'], c['dtype'], c['group'], c.get('size', '')

  for kind, dtype, group, size in sorted({key(c) for r in rows for c in r['collectives']}):
    cells = []
    for r in rows:
      match = [c for c in r['collectives'] if key(c) == (kind, dtype, group, size)]
      cells.append(f'{match[0]["count"]:,} ({match[0]["mib"]:.2f} MiB)' if match else '-')
    each = {'small': ', each < 1 MiB', 'large': ', each >= 1 MiB'}.get(size, '')
    where = 'across slices' if group == ACROSS_SLICES else f'groups of {group} chips'
    add(f'{kind} {dtype}{each}, {where}', cells)
  add('collective MiB per step', [f'{sum(c["mib"] for c in r["collectives"]):.1f}'
                                  for r in rows])
  add('trace + lower s', [f'{r["lower_s"]:.1f}' for r in rows])
  add('compile s', [f'{r["compile_s"]:.1f}' for r in rows])
  return '\n'.join(lines)


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--config', action='append', default=[], required=True,
                      help='config file, optionally with :arg (repeat for several columns)')
  where = parser.add_mutually_exclusive_group()
  where.add_argument('--tpu', default=None, help="a slice's topology, e.g. v5e:4x4, v5p:2x2x2")
  where.add_argument('--accelerator-type', '--accelerator_type', default=None,
                     help='a Cloud TPU accelerator type, e.g. v5litepod-16 (the launcher\'s)')
  parser.add_argument('--slices', type=int, default=1, help='slices joined by DCN (default 1)')
  parser.add_argument('--batch', type=int, default=None,
                      help='global batch (default: config.train.batch_size)')
  parser.add_argument('--dtype', choices=gpu_program.DTYPES, default=None,
                      help="compute dtype (default: the config's; 'auto' is bfloat16 on a TPU)")
  parser.add_argument('--fit', action='store_true',
                      help='also find the largest global batch that fits the chips')
  parser.add_argument('--check', action='store_true',
                      help='only say whether --batch divides over and fits the chips: exit 0 '
                           'if so, else one line and exit 1 (launch/tpu_vm.sh --dry-run)')
  parser.add_argument('--json', default=None, metavar='FILE',
                      help='also write the rows (every count) to FILE as JSON')
  parser.add_argument('--save-hlo', '--save_hlo', default=None, metavar='DIR',
                      help="also write each compiled program's optimised HLO text into DIR")
  args, overrides = parser.parse_known_args(argv)
  bad = [o for o in overrides if not o.startswith('--config.')]
  if bad:
    parser.error(f'unrecognised arguments: {" ".join(bad)}')
  try:
    topology = args.tpu or (topology_of(args.accelerator_type) if args.accelerator_type
                            else 'v5e:4x4')
    chip = chip_of(topology)
    if args.slices < 1:
      raise ValueError(f'--slices must be >= 1, got {args.slices}')
    for spec in args.config:
      if not os.path.exists(spec.partition(':')[0]):
        raise ValueError(f'--config file {spec.partition(":")[0]} does not exist')
  except ValueError as error:
    parser.error(str(error))
  os.environ['JAX_PLATFORMS'] = 'cpu'  # the described chips are compile-only devices.
  # libtpu locks a file so that two processes do not share real chips; compiles may share.
  os.environ.setdefault('ALLOW_MULTIPLE_LIBTPU_LOAD', '1')
  os.environ['JAX_ENABLE_COMPILATION_CACHE'] = 'false'
  problem = check_libtpu()
  if problem:
    print(f'tpu_program: error: {problem}', file=sys.stderr)
    raise SystemExit(1)
  try:
    mesh = described_mesh(topology, args.slices)
  except ValueError as error:
    print(f'tpu_program: error: {error}', file=sys.stderr)
    raise SystemExit(1) from None
  overrides = [o.removeprefix('--config.') for o in overrides]
  try:
    _run(args, topology, chip, mesh, overrides)
  except (ValueError, FileNotFoundError) as error:  # a config key, a config file.
    print(f'tpu_program: error: {error}', flush=True)
    raise SystemExit(1) from None


def _global_batch(spec: str, overrides: list[str], batch: int | None) -> int:
  """--batch, else the config's (with the --config.* overrides)."""
  if batch:
    return batch
  from okdhp_jax.tools.config_file import apply_overrides, load_config  # pylint: disable=g-import-not-at-top
  config = load_config(spec)
  apply_overrides(config, overrides)
  return config.train.batch_size


def _run(args, topology: str, chip: Chip, mesh, overrides: list[str]) -> None:
  if args.check:
    failures = []
    for spec in args.config:
      batch = _global_batch(spec, overrides, args.batch)
      problem = check_batch(spec, args.dtype, batch, mesh, chip, args.slices, overrides,
                            topology)
      print(f'{spec}: {problem or f"global batch {batch} fits {topology}"}', flush=True)
      failures += [problem] if problem else []
    raise SystemExit(1 if failures else 0)
  print(f'TPU: {topology}' + (f' x {args.slices} slices' if args.slices > 1 else '') +
        f', {mesh.devices.size} {chip.name} chips of {chip.hbm_gib:g} GiB HBM', flush=True)
  print(f'XLA_FLAGS={os.environ.get("XLA_FLAGS", "")}', flush=True)
  rows, fits = [], {}
  for spec in args.config:
    print(f'compiling {spec} ...', file=sys.stderr, flush=True)
    batch = _global_batch(spec, overrides, args.batch)
    try:
      row = measure(spec, args.dtype, batch, mesh, chip, args.slices, overrides,
                    save_hlo=args.save_hlo)
    except Exception as error:  # pylint: disable=broad-except
      if not _out_of_memory(error):
        raise
      row = refusal(batch, error)
      if not args.fit:
        print(f'tpu_program: error: {spec}: global batch {batch} {over_memory(row, chip)}; '
              f'--fit finds the largest that fits', file=sys.stderr, flush=True)
        raise SystemExit(1) from None
    if args.fit:
      fits[spec] = largest_fitting_batch(spec, args.dtype, batch, mesh, chip, args.slices,
                                         overrides, compiled=row)
      row = row if _fits(row, chip) else fits[spec]['fitted']
    rows += [row] if row else []
  print(format_table(rows), flush=True)
  # What --json keeps of each search, and what the lines below say.
  fits = {spec: {'fits': found['fits'], 'exact': found['exact'],
                 'peak_gib': peak_gib(found['fitted']) if found['fitted'] else None}
          for spec, found in fits.items()}
  for spec, found in fits.items():
    batch, chips = found['fits'], mesh.devices.size
    peak = '' if found['peak_gib'] is None else f', {found["peak_gib"]:.2f} GiB per chip'
    if not batch:
      print(f'{spec}: not even one row per chip fits {topology}')
    elif found['exact']:
      print(f'{spec}: largest global batch that fits {topology}: {batch} '
            f'({batch // chips} per chip{peak}; {batch + chips} does not fit)')
    else:
      print(f'{spec}: global batch {batch} fits {topology} ({batch // chips} per chip{peak}); '
            f'the search ran out of compiles ({MAX_SEARCH_COMPILES} that fit, '
            f'{MAX_REFUSED_COMPILES} refused), so more may fit')
  if args.json:
    with open(args.json, 'w', encoding='utf-8') as f:
      json.dump({'tpu': topology, 'slices': args.slices, 'rows': rows, 'fits': fits}, f,
                indent=1)


if __name__ == '__main__':
  main()
