r"""The train step's GPU program, compiled for a described GPU on any CPU machine: what it launches.

  pip install 'okdhp_jax[gpu-aot]'   # the CUDA plugin of this jaxlib; no GPU or driver needed
  python -m okdhp_jax.tools.gpu_program --config configs/hg4.py --batch 64 --dtype bfloat16 \
      --gpu h100
  python -m okdhp_jax.tools.gpu_program --config configs/hg4.py --config configs/hg4_baseline.py \
      --batch 64 --dtype bfloat16 --gpu h100 --json counts.json
  XLA_FLAGS=--xla_gpu_graph_min_graph_size=1 python -m okdhp_jax.tools.gpu_program \
      --config configs/hg4.py --batch 64 --dtype bfloat16
  # On a GPU machine: the program compiled for its own first GPU, counted the same way.
  python -m okdhp_jax.tools.gpu_program --config configs/hg4.py --batch 64 --dtype bfloat16 \
      --gpu local --json local.json

XLA compiles the train step ahead of time for the GPU that okdhp_jax/tools/gpu_targets.py
describes (`--gpu`): the process runs on the CPU (JAX_PLATFORMS=cpu, so the CUDA plugin skips
its driver check yet offers the GPU's topology), and the step is lowered from abstract inputs
sharded on a one-GPU mesh. Nothing runs and nothing is autotuned (cuDNN picks convolution
algorithms on the device), so this gives the program's structure, not its times.

One table, a column per config: the kernels (fusions) by kind, cuDNN convolutions by call,
copies, the command buffers (CUDA graphs) and the kernels inside them, the launches the host
makes per step, the temporary and argument memory, the HBM traffic and FLOPs per step with the
step time a roofline puts on them (a model: tools/hbm_traffic.py), and the seconds to trace and
to compile.
XLA_FLAGS apply to the GPU compile as to any other and are printed above the table;
`--xla_dump_to` there keeps XLA's dump in that folder, else `--dump-to DIR` does.

`--gpu local` compiles for this machine's first GPU instead (on a GPU machine, with the CUDA
jaxlib it has; no described target), counted the same way, so a lent GPU's own program can be
set beside the described one (launch/gpu_benchmark.sh runs it). cuDNN's algorithms are then
autotuned as in training, which the compile seconds include.
"""

from __future__ import annotations

import argparse
import collections
import glob
import json
import os
import re
import sys
import tempfile
import time

from okdhp_jax.tools import gpu_targets, hbm_traffic, hlo_text, peak_flops

EXTRA = 'okdhp_jax[gpu-aot]'
DTYPES = ('auto', 'float32', 'bfloat16')
# Thunks the host issues no device work for: stream waits, and containers whose members are
# counted instead.
NOT_LAUNCHES = frozenset({'kWaitForStreams', 'kSequential'})
LIBRARY_THUNKS = ('kConvolution', 'kGemm', 'kCublasLtMatmul', 'kCuDnn', 'kCustomCall', 'kFft')
GIB = 2**30


# ----------------------------------------------------------------- the optimised HLO text

def fusion_kind(fusion: hlo_text.Instruction, body: list[hlo_text.Instruction]) -> str:
  """'reduction', 'transpose', 'scatter', 'loop' (elementwise, broadcasts, slices,
  concatenations) or 'custom' (Triton, cuDNN fusions), by what the fused computation holds: a
  fusion that reduces is a reduction, else one that transposes is a transpose."""
  if hlo_text.attribute(fusion.text, 'kind') == 'kCustom':
    return 'custom'
  opcodes = {instruction.opcode for instruction in body}
  if 'reduce' in opcodes:
    return 'reduction'
  if 'transpose' in opcodes:
    return 'transpose'
  if 'scatter' in opcodes:
    return 'scatter'
  return 'loop'


def hlo_counts(text: str) -> dict:
  """Kernels by kind, library calls by target and copies of the optimised HLO `text`.

  Kernels are the fusions of the computations the host steps through (the entry and what it
  calls by control flow), not of fused computations.
  """
  computations = hlo_text.parse_hlo(text)
  fused = {hlo_text.attribute(i.text, 'calls') for body in computations.values() for i in body
           if i.opcode == 'fusion'}
  kernels, calls = collections.Counter(), collections.Counter()
  copies, copies_of_fusions, copied_bytes = 0, 0, 0
  for name, body in computations.items():
    if name in fused:
      continue
    producers = {i.name: i for i in body}
    for instruction in body:
      if instruction.opcode == 'fusion':
        kernels[fusion_kind(instruction, computations.get(
            hlo_text.attribute(instruction.text, 'calls'), []))] += 1
      elif instruction.opcode == 'custom-call':
        calls[hlo_text.attribute(instruction.text, 'custom_call_target')] += 1
      elif instruction.opcode in ('copy', 'copy-start'):
        copies += 1
        copied_bytes += hlo_text.shape_bytes(instruction.shape)
        if _copied_from(instruction, producers) == 'fusion':
          copies_of_fusions += 1
  return {'kernels': sum(kernels.values()), 'kernels_by_kind': dict(kernels),
          'library_calls': dict(calls), 'copies': copies,
          'copies_of_fusion_outputs': copies_of_fusions, 'copied_gib': copied_bytes / GIB}


def _copied_from(copy: hlo_text.Instruction,
                 producers: dict[str, hlo_text.Instruction]) -> str | None:
  """The opcode of what a copy reads, looking through get-tuple-element."""
  source = _first_operand(copy, producers)
  while source is not None and source.opcode == 'get-tuple-element':
    source = _first_operand(source, producers)
  return source.opcode if source is not None else None


def _first_operand(instruction: hlo_text.Instruction,
                   producers: dict[str, hlo_text.Instruction]) -> hlo_text.Instruction | None:
  names = hlo_text.operands(instruction)
  return producers.get(names[0]) if names else None


# ------------------------------------------------------------ the thunk sequence (runtime)

_THUNK = re.compile(r'^(?P<indent>\s*)\d+:\s+(?P<kind>k\w+)\s+\[[^\]]*\]\s*(?P<label>\S*)')


def thunk_counts(text: str) -> dict:
  """Command buffers, what sits in and outside them, and the host's launches per step.

  `text` is XLA's `*thunk_sequence_after_thunk_passes.txt`: one line per thunk, the members of
  a command buffer indented under it. The host launches each command buffer as one graph and
  every other thunk that does device work (a kernel, a cuDNN call, a copy, a memset) alone.
  """
  inside, outside = collections.Counter(), collections.Counter()
  command_buffers, in_buffer = 0, False
  for line in text.splitlines():
    match = _THUNK.match(line)
    if not match:
      continue
    kind = match.group('kind')
    if not match.group('indent'):
      in_buffer = kind == 'kCommandBuffer'
      command_buffers += in_buffer
      if not in_buffer:
        outside[kind] += 1
    elif in_buffer:
      inside[kind] += 1
  return {'command_buffers': command_buffers, 'thunks_in_command_buffers': dict(inside),
          'thunks_outside': dict(outside), 'launches': _launches(command_buffers, outside)}


def _launches(command_buffers: int, outside: dict[str, int]) -> dict[str, int]:
  """The host's launches per step: {total, graphs, library_calls, kernels, copies_and_other}."""
  kernels = _kernel_thunks(outside)
  library_calls = sum(outside.get(kind, 0) for kind in LIBRARY_THUNKS)
  work = sum(n for kind, n in outside.items() if kind not in NOT_LAUNCHES)
  return {'total': command_buffers + work, 'graphs': command_buffers,
          'library_calls': library_calls, 'kernels': kernels,
          'copies_and_other': work - kernels - library_calls}


def _kernel_thunks(kinds: dict[str, int]) -> int:
  return sum(n for kind, n in kinds.items() if kind in ('kKernel', 'kCustomKernel'))


# ------------------------------------------------------------- the compile for a described GPU

def check_cuda_plugin() -> str | None:
  """Why a GPU cannot be described here (None: it can): the CUDA plugin must match jaxlib."""
  import importlib.metadata  # pylint: disable=g-import-not-at-top
  import jaxlib  # pylint: disable=g-import-not-at-top
  wanted = jaxlib.__version__
  try:
    plugin = importlib.metadata.version('jax-cuda12-plugin')
  except importlib.metadata.PackageNotFoundError:
    plugin = None
  if plugin != wanted:
    found = f'jax-cuda12-plugin {plugin}' if plugin else 'no CUDA plugin'
    return (f'compiling for a described GPU needs the CUDA plugin of this jaxlib ({wanted}); '
            f'found {found}. Install the extra: pip install "{EXTRA}" (or '
            f'pip install "jax[cuda12]=={wanted}")')
  return None


def described_mesh(gpu: str):
  """A one-GPU `data` mesh on the described `gpu` (a key of gpu_targets.TARGETS)."""
  from jax.experimental import topologies  # pylint: disable=g-import-not-at-top
  from okdhp_jax import sharding  # pylint: disable=g-import-not-at-top
  topology = topologies.get_topology_desc(
      platform='cuda', target_config=gpu_targets.installed_target_config(gpu), topology='1x1x1')
  return topologies.make_mesh(topology, (1,), (sharding.DATA_AXIS,))


def local_mesh():
  """(a one-GPU `data` mesh on this machine's first GPU, its device_kind); SystemExit naming
  the backend when JAX sees no GPU here."""
  import jax  # pylint: disable=g-import-not-at-top
  from okdhp_jax import sharding  # pylint: disable=g-import-not-at-top
  try:
    gpus = jax.devices('gpu')
  except RuntimeError as error:
    raise SystemExit(f'gpu_program: error: --gpu local needs a GPU that JAX sees; JAX has '
                     f'{jax.default_backend()} only ({str(error).splitlines()[0]})') from None
  return sharding.mesh_over(gpus[:1]), gpus[0].device_kind


def _abstract(tree, named_sharding):
  import jax  # pylint: disable=g-import-not-at-top
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=named_sharding),
                      tree)


def compile_step(config_spec: str, dtype: str | None, batch_size: int | None, mesh,
                 dump_to: str | None, backend: str = 'gpu', overrides=()) -> dict:
  """Compiles one config's train step for `mesh`'s described devices (a GPU, a TPU slice).

  Returns {config, dtype, batch, lower_s, compile_s, compiled}: the compiled program and the
  seconds to trace and lower it and to compile it. XLA dumps it into `dump_to` (None: no
  dump), which needs a compile, not a cached program: main turns JAX's persistent cache off
  (its key ignores dump options), and a compile option keeps the lowering's own cache out.
  `backend` resolves the compute dtype 'auto' as it would on those devices; `overrides`
  ('train.batch_norm_stats=per_device', ...) change the config before anything is built.
  """
  import jax  # pylint: disable=g-import-not-at-top
  from okdhp_jax import sharding  # pylint: disable=g-import-not-at-top
  from okdhp_jax.experiment import Experiment  # pylint: disable=g-import-not-at-top
  from okdhp_jax.models import resolve_compute_dtype  # pylint: disable=g-import-not-at-top
  from okdhp_jax.tools.bench_step import synthetic_batch  # pylint: disable=g-import-not-at-top
  from okdhp_jax.tools.config_file import apply_overrides, load_config  # pylint: disable=g-import-not-at-top
  from okdhp_jax.training import flat_state  # pylint: disable=g-import-not-at-top
  from okdhp_jax.training import step as step_lib  # pylint: disable=g-import-not-at-top

  config = load_config(config_spec)
  apply_overrides(config, overrides)
  # 'auto' resolves as on the GPU, not as on this CPU.
  config.model.dtype = resolve_compute_dtype(dtype or config.model.dtype, backend=backend)
  config.train.batch_size = batch_size or config.train.batch_size
  # The state's shapes and dtypes only: it is built on the CPU, then described on the GPU.
  experiment = Experiment(config, workdir=None, steps_per_epoch=1000,
                          rng=jax.random.key(config.seed, impl='unsafe_rbg'))
  num_joints = experiment.meta.num_joints
  # Arranged as the step on `mesh` keeps it: flat on a GPU (training/flat_state.py).
  state = _abstract(flat_state.arranged_for(config.train, experiment.state, mesh),
                    sharding.replicated(mesh))
  frozen = _abstract(experiment.method.frozen_state(experiment.mesh), sharding.replicated(mesh))
  batch = _abstract(synthetic_batch(config, config.train.batch_size, num_joints),
                    sharding.data_sharded(mesh))
  train_step = step_lib.make_train_step(config, experiment.model, experiment.method, mesh=mesh,
                                        steps_per_epoch=1000, num_joints=num_joints)
  start = time.perf_counter()
  lowered = train_step.lower(state, frozen, batch)
  lower_s = time.perf_counter() - start
  start = time.perf_counter()
  compiled = lowered.compile({'xla_dump_to': dump_to} if dump_to else {})
  compile_s = time.perf_counter() - start
  return {'config': config_spec, 'dtype': config.model.dtype, 'batch': config.train.batch_size,
          'lower_s': lower_s, 'compile_s': compile_s, 'compiled': compiled}


def thunk_files(dump_dir: str) -> dict[str, float]:
  """{path: modification time} of the train steps' thunk sequences in XLA's dump folder."""
  pattern = os.path.join(dump_dir, '*train_step*thunk_sequence_after_thunk_passes.txt')
  return {path: os.path.getmtime(path) for path in glob.glob(pattern)}


def new_thunks(dump_dir: str, before: dict[str, float]) -> str:
  """The thunk sequence XLA wrote into `dump_dir` since `before` (thunk_files) was taken."""
  paths = [p for p, mtime in thunk_files(dump_dir).items() if before.get(p) != mtime]
  if not paths:
    raise FileNotFoundError(f'XLA wrote no thunk sequence of the train step into {dump_dir}')
  with open(max(paths, key=os.path.getmtime), encoding='utf-8') as f:
    return f.read()


def program_row(compiled, thunks_text: str | None, chip: gpu_targets.GpuTarget | None = None,
                dtype: str = 'bfloat16') -> dict:
  """The counts of one compiled GPU program and its thunk sequence (None: no thunk counts);
  the roofline's step time where `chip` (its bandwidth and its dense peak in `dtype`) is
  known."""
  memory = compiled.memory_analysis()
  text = compiled.as_text()
  row = hlo_counts(text)
  costs = hbm_traffic.kernel_costs(text)
  peak = chip and peak_flops.peak_tflops(chip.name, dtype)
  row.update(hbm_gb=sum(c.bytes for c in costs) / 1e9, tflop=sum(c.flops for c in costs) / 1e12,
             roofline_ms=1e3 * hbm_traffic.roofline_seconds(
                 costs, chip.memory_bandwidth, peak * 1e12) if peak else None)
  row.update(thunk_counts(thunks_text) if thunks_text is not None else dict.fromkeys(
      ('command_buffers', 'thunks_in_command_buffers', 'thunks_outside', 'launches')))
  row.update(temp_gib=memory.temp_size_in_bytes / GIB,
             argument_gib=memory.argument_size_in_bytes / GIB,
             output_gib=memory.output_size_in_bytes / GIB)
  return row


def measure(config_spec: str, dtype: str | None, batch_size: int | None, mesh, *,
            keep_dump: str | None, need_thunks: bool = True,
            chip: gpu_targets.GpuTarget | None = None) -> dict:
  """compile_step, then its counts; the dump goes to `keep_dump` or a folder removed after.
  Without `need_thunks` (a real GPU, whose XLA may name its dump differently) a missing thunk
  sequence leaves the launch counts out with a warning instead of losing the compile."""
  user_dump = _xla_dump_to()
  with tempfile.TemporaryDirectory(prefix='okdhp_gpu_program_') as scratch:
    dump_dir = user_dump or keep_dump or scratch
    before = thunk_files(dump_dir)
    row = compile_step(config_spec, dtype, batch_size, mesh, dump_to=dump_dir)
    try:
      thunks = new_thunks(dump_dir, before)
    except FileNotFoundError as error:
      if need_thunks:
        raise
      print(f'warning: {error}; command buffers and launches are not counted',
            file=sys.stderr, flush=True)
      thunks = None
    row.update(program_row(row.pop('compiled'), thunks, chip, row['dtype']))
  return row


def _xla_dump_to() -> str | None:
  match = re.search(r'--xla_dump_to=(\S+)', os.environ.get('XLA_FLAGS', ''))
  return match.group(1) if match else None


# ----------------------------------------------------------------------------- the table

# (label, how a row gives it)
ROWS = (
    ('kernels (fusions)', lambda r: r['kernels']),
    ('  reductions', lambda r: r['kernels_by_kind'].get('reduction', 0)),
    ('  transposes', lambda r: r['kernels_by_kind'].get('transpose', 0)),
    ('  elementwise, concatenations (loop)', lambda r: r['kernels_by_kind'].get('loop', 0)),
    ('  Triton GEMMs, scatters', lambda r: sum(
        n for k, n in r['kernels_by_kind'].items()
        if k not in ('reduction', 'transpose', 'loop'))),
    ('cuDNN convolutions', lambda r: sum(
        n for t, n in r['library_calls'].items() if t.startswith('__cudnn$conv'))),
    ('  forward', lambda r: _calls(r, '__cudnn$convForward')),
    ('  backward input', lambda r: _calls(r, '__cudnn$convBackwardInput')),
    ('  backward filter', lambda r: _calls(r, '__cudnn$convBackwardFilter')),
    ('  fused bias/activation', lambda r: _calls(r, '__cudnn$convBiasActivationForward')),
    ('other library calls', lambda r: sum(
        n for t, n in r['library_calls'].items() if not t.startswith('__cudnn$conv'))),
    ('copies', lambda r: r['copies']),
    ('  of fusion outputs', lambda r: r['copies_of_fusion_outputs']),
    ('  GiB copied', lambda r: f'{r["copied_gib"]:.2f}'),
    ('command buffers (CUDA graphs)', lambda r: r['command_buffers']),
    ('  kernels inside', lambda r: _kernel_thunks(r['thunks_in_command_buffers'])),
    ('  copies, memsets inside', lambda r: sum(r['thunks_in_command_buffers'].values())
     - _kernel_thunks(r['thunks_in_command_buffers'])),
    ('kernels outside command buffers', lambda r: _kernel_thunks(r['thunks_outside'])),
    ('host launches per step', lambda r: r['launches']['total']),
    ('  graphs', lambda r: r['launches']['graphs']),
    ('  convolutions and library calls', lambda r: r['launches']['library_calls']),
    ('  kernels', lambda r: r['launches']['kernels']),
    ('  copies, memsets', lambda r: r['launches']['copies_and_other']),
    ('temporary memory GiB', lambda r: f'{r["temp_gib"]:.2f}'),
    ('HBM traffic GB per step (modelled)', lambda r: f'{r["hbm_gb"]:.1f}'),
    ('TFLOP per step (convolutions, GEMMs)', lambda r: f'{r["tflop"]:.2f}'),
    ('roofline step ms (modelled)', lambda r: f'{r["roofline_ms"]:.1f}'),
    ('  img/s at that step', lambda r: round(1e3 * r['batch'] / r['roofline_ms'])),
    ('argument memory GiB', lambda r: f'{r["argument_gib"]:.2f}'),
    ('trace + lower s', lambda r: f'{r["lower_s"]:.1f}'),
    ('compile s', lambda r: f'{r["compile_s"]:.1f}'),
)


def _calls(row: dict, target: str) -> int:
  return row['library_calls'].get(target, 0)


def format_table(rows: list[dict]) -> str:
  """Markdown: one row per quantity, one column per compiled config."""
  headers = [f'{os.path.basename(r["config"])} {r["dtype"]} b{r["batch"]}' for r in rows]
  lines = ['| ' + ' | '.join(['', *headers]) + ' |', '|---|' + '---:|' * len(rows)]
  for label, value in ROWS:
    cells = [format_count(value, r) for r in rows]
    lines.append(f'| {label.replace("  ", "&nbsp;&nbsp;")} | ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines)


def format_count(value, row: dict) -> str:
  """One ROWS entry of a row: '1,234', '0.36', or 'n/a' where the row lacks it (no thunk
  sequence, a row from an older --json)."""
  try:
    count = value(row)
  except (KeyError, TypeError, AttributeError):
    return 'n/a'
  if count is None:
    return 'n/a'
  return f'{count:,}' if isinstance(count, int) else str(count)


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--config', action='append', default=[], required=True,
                      help='config file, optionally with :arg (repeat for several columns)')
  parser.add_argument('--batch', type=int, default=None,
                      help='global batch (default: config.train.batch_size)')
  parser.add_argument('--dtype', choices=DTYPES, default=None,
                      help="compute dtype (default: the config's; 'auto' is bfloat16 on a GPU)")
  parser.add_argument('--gpu', choices=[*sorted(gpu_targets.TARGETS), 'local'], default='h100',
                      help='the described GPU (okdhp_jax/tools/gpu_targets.py names sources), '
                           "or 'local': this machine's first GPU")
  parser.add_argument('--dump-to', '--dump_to', default=None, metavar='DIR',
                      help="keep XLA's dump of the compile in DIR (default: a removed folder)")
  parser.add_argument('--json', default=None, metavar='FILE',
                      help='also write the rows (every count) to FILE as JSON')
  args = parser.parse_args(argv)
  for spec in args.config:
    if not os.path.exists(spec.partition(':')[0]):
      parser.error(f'--config file {spec.partition(":")[0]} does not exist')
  # A dump needs a compile, not a program from JAX's persistent cache (its key ignores dumps).
  os.environ['JAX_ENABLE_COMPILATION_CACHE'] = 'false'
  local = args.gpu == 'local'
  if local:
    mesh, device = local_mesh()
    # The roofline needs the chip's bandwidth: known for the chips described here.
    target = next((t for t in gpu_targets.TARGETS.values() if t.name == device), None)
    import jax  # pylint: disable=g-import-not-at-top
    print(f"GPU: {device} (this machine's first GPU; jax {jax.__version__})", flush=True)
  else:
    # Before JAX starts: the CUDA plugin then registers the GPU's topology without a driver.
    os.environ['JAX_PLATFORMS'] = 'cpu'
    problem = check_cuda_plugin()
    if problem:
      print(f'error: {problem}', file=sys.stderr)
      raise SystemExit(1)
    target = gpu_targets.TARGETS[args.gpu]
    device = target.name
    print(f'GPU: {target.name} (described: {target.source})', flush=True)
    mesh = described_mesh(args.gpu)
  print(f'XLA_FLAGS={os.environ.get("XLA_FLAGS", "")}', flush=True)
  rows = []
  for spec in args.config:
    print(f'compiling {spec} ...', file=sys.stderr, flush=True)
    rows.append(measure(spec, args.dtype, args.batch, mesh, keep_dump=args.dump_to,
                        need_thunks=not local, chip=target))
  print(format_table(rows), flush=True)
  if args.json:
    with open(args.json, 'w', encoding='utf-8') as f:
      json.dump({'gpu': args.gpu, 'device': device,
                 'xla_flags': os.environ.get('XLA_FLAGS', ''), 'rows': rows}, f, indent=1)


if __name__ == '__main__':
  main()
