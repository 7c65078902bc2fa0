r"""Where a profiled train step's time goes, read back from a jax.profiler trace.

  python -m okdhp_jax.tools.profile_summary TRACE_DIR [--steps 3]

`bench_step --profile DIR` writes one trace per row and prints this summary under its table.
The trace's XSpace (the .xplane.pb TensorBoard's profile plugin opens) is read with
jax.profiler.ProfileData, so no TensorBoard is needed, e.g. on a GPU node without it.

Which events count as the step's ops:
  * a GPU or TPU: the device plane's 'XLA Ops' line where the profiler derived one, otherwise
    every event on the device plane that names its HLO op (the kernels of each stream). XLA
    runs a series of fusions on a GPU as one CUDA graph (a "command buffer"), and each kernel of
    the graph names the graph, not its fusion, as its HLO op: those are named by the kernel,
    which carries the fusion's name (`input_reduce_fusion_12`);
  * a CPU: the events of XLA's threads that name their HLO op (one per thunk).
Op time is summed over streams or threads, so on a CPU it can exceed the wall time. 'busy' is
the wall time during which at least one op ran, per step. On a GPU or TPU, busy far below the
step time means the device waits (for the host, kernel launches or transfers). On a CPU the
gap is mostly convolutions: XLA hands the large ones to Eigen's thread pool, whose work the
trace does not attribute to the op, so a CPU summary under-counts convolutions. With several
devices, the figures are the mean of one device's.

On a GPU the summary also gives the host's time per step in XLA's launch of the step's kernels
(`GpuExecutable::ExecuteThunks`). Where that is close to the step time while the GPU is busy
for well under it, the GPU waits for kernel launches: the step is bound by the host's launch
rate, which a larger batch or fewer, larger kernels help, not by the GPU's arithmetic.

Ops are grouped by kind from their HLO names (the same words on every backend), e.g.
`convolution.12` and `cudnn-conv.3` are convolutions, `transpose_copy_fusion.7` a transpose.
"""

from __future__ import annotations

import argparse
import collections
import glob
import os
import re

# (kind, pattern searched in the lower-cased HLO op name). First match wins: collectives before
# 'reduce', transposes before 'fusion'. 'conv' must not match 'convert'. Fusions are named after
# their root ops, so 'maximum_bitcast_fusion' is elementwise, not a transpose.
KINDS = (
    ('collective', r'all-reduce|all-gather|reduce-scatter|all-to-all|collective|nccl'),
    # cuDNN's kernels: xmma_fprop/dgrad/wgrad_implicit_gemm (before 'gemm' is read as matmul).
    ('convolution', r'conv(?!ert)|fprop|dgrad|wgrad|implicit_gemm'),
    ('matmul', r'gemm|dot|cublas|matmul|nvjet'),  # nvjet: cuBLAS's Hopper kernels
    ('library fusion (YNNPACK/oneDNN)', r'ynn|xnn|onednn'),
    ('transpose / copy', r'transpose|copy|memcpy|memset'),
    ('pooling / scatter', r'reduce[-_]window|select[-_]and[-_]scatter|scatter'),
    ('reduction', r'reduce(?![-_]precision)'),
    ('elementwise fusion', r'fusion|convert|broadcast|multiply|add|iota|select|maximum'),
)
OTHER = 'other'
# The host's launch of a GPU executable's kernels, e.g. '[0] GpuExecutable::ExecuteThunks'.
_LAUNCH = re.compile(r'GpuExecutable::ExecuteThunks$')
# Launches taking this share of the step or more: the GPU waits on the host.
LAUNCH_BOUND_SHARE = 0.7
# Line names of the derived timelines on device planes, which repeat what 'XLA Ops' shows.
_DERIVED_LINES = ('XLA Modules', 'Steps', 'Framework Name Scope', 'Framework Ops',
                  'TensorFlow Name Scope', 'TensorFlow Ops', 'Source code', 'XLA TraceMe',
                  'Launch Stats', 'SparseCore')


def op_kind(name: str) -> str:
  """The KINDS group of an HLO op name ('convolution.12' -> 'convolution')."""
  lowered = name.lower()
  for kind, pattern in KINDS:
    if re.search(pattern, lowered):
      return kind
  return OTHER


def _base_name(name: str) -> str:
  """'multiply_add_fusion.123' or the kernel 'input_reduce_fusion_12' -> the op type's name
  (one entry per op type)."""
  return re.sub(r'([._]\d+)+$', '', name.strip().lstrip('%'))


def newest_xplane(trace_dir: str) -> str:
  """The newest .xplane.pb under `trace_dir` (jax.profiler.trace nests it in dated folders)."""
  found = glob.glob(os.path.join(trace_dir, '**', '*.xplane.pb'), recursive=True)
  if not found:
    raise FileNotFoundError(f'no .xplane.pb under {trace_dir!r}: is it a jax.profiler.trace '
                            'folder?')
  return max(found, key=os.path.getmtime)


def _hlo_op(event) -> str | None:
  for key, value in event.stats:
    if key == 'hlo_op':
      return str(value)
  return None


def _kernel_op(event) -> str | None:
  """The op a GPU kernel event belongs to: its HLO op, or inside a CUDA graph (whose kernels
  all name the graph's `command_buffer_N` thunk) the kernel's own name, the fusion's."""
  op = _hlo_op(event)
  if op is not None and op.startswith('command_buffer'):
    return event.name
  return op


def op_events(profile) -> tuple[str, list[list[tuple[str, float, float]]]]:
  """(where the ops came from, per device: [(HLO op name, start ns, duration ns)]).

  One list per device plane that holds ops; on a CPU, one list for XLA's host threads. On a
  GPU without an 'XLA Ops' line, an op that launches several kernels gives several events.
  """
  devices = [p for p in profile.planes if p.name.startswith('/device:')
             and not p.name.startswith('/device:CUSTOM')]
  per_device, names = [], []
  for plane in devices:
    lines = {line.name: line for line in plane.lines}
    if 'XLA Ops' in lines:
      events = [(e.name, e.start_ns, e.duration_ns) for e in lines['XLA Ops'].events]
    else:
      events = [(op, e.start_ns, e.duration_ns)
                for name, line in lines.items() if name not in _DERIVED_LINES
                for e in line.events if (op := _kernel_op(e)) is not None]
    if events:
      per_device.append(events)
      names.append(plane.name)
  if per_device:
    return ', '.join(names), per_device
  host = profile.find_plane_with_name('/host:CPU')
  events = [(op, e.start_ns, e.duration_ns)
            for line in (host.lines if host is not None else []) if line.name.startswith('tf_XLA')
            for e in line.events
            if (op := _hlo_op(e)) is not None and not e.name.startswith('end: ')]
  return "/host:CPU (XLA's threads)", [events] if events else []


def launch_ns(profile) -> float | None:
  """Host time in XLA's GPU kernel launches (GpuExecutable::ExecuteThunks events, one per
  device and step), summed; None where the trace has none (a CPU or TPU)."""
  host = profile.find_plane_with_name('/host:CPU')
  durations = [e.duration_ns for line in (host.lines if host is not None else [])
               for e in line.events if _LAUNCH.search(e.name)]
  return sum(durations) if durations else None


def _busy_ns(intervals: list[tuple[float, float]]) -> float:
  """Length of the union of [start, start + duration) intervals."""
  total, end = 0.0, None
  for start, duration in sorted(intervals):
    stop = start + duration
    if end is None or start > end:
      total += duration
      end = stop
    elif stop > end:
      total += stop - end
      end = stop
  return total


def summarize(trace_dir: str, steps: int, top: int = 8) -> dict:
  """summarize_profile of the newest trace under `trace_dir`."""
  from jax.profiler import ProfileData  # pylint: disable=g-import-not-at-top
  path = newest_xplane(trace_dir)
  try:
    profile = ProfileData.from_file(path)
  except RuntimeError as error:  # what jaxlib raises for bytes that are not an XSpace
    raise ValueError(f'{path} is not a readable jax.profiler trace ({error})') from None
  try:
    return summarize_profile(profile, steps, top)
  except ValueError as error:
    raise ValueError(f'{path}: {error}') from None


def summarize_profile(profile, steps: int, top: int = 8) -> dict:
  """Per-step op time by kind, and the busy time, per device, from a trace of `steps` steps.

  Args:
    profile: a jax.profiler.ProfileData.

  Returns a JSON-able dict: source, devices (how many the figures are a mean over), steps,
  op_ms (summed op time per step), busy_ms (wall time with an op running, per step), launch_ms
  (on a GPU: the host's time per step launching the kernels, else None) and kinds:
  [{kind, ms, share, ops, largest}] (ms and op events per step, share of op_ms, largest: the op
  type of the kind that took the most time), largest first, at most `top` rows (the smaller
  kinds merged into 'other'). Op time counts nested op events (a loop's body inside the loop's
  own event) twice; this project's steps have none.
  """
  if steps < 1:
    raise ValueError(f'steps={steps}: a trace holds at least one step')
  source, per_device = op_events(profile)
  if not per_device:
    raise ValueError('the trace holds no XLA op events')
  events = [event for device in per_device for event in device]
  kind_of = {name: op_kind(name) for name in {name for name, _, _ in events}}
  totals = collections.Counter()
  for name, _, duration in events:
    totals[kind_of[name]] += duration
  ranked = [kind for kind, _ in totals.most_common() if kind != OTHER]
  kept = set(ranked if len(totals) <= top else ranked[:top - 1])
  per_kind, counts, per_op = collections.Counter(), collections.Counter(), collections.Counter()
  for name, _, duration in events:
    kind = kind_of[name] if kind_of[name] in kept else OTHER
    per_kind[kind] += duration
    counts[kind] += 1
    per_op[(kind, _base_name(name))] += duration
  total = sum(per_kind.values())
  scale = 1.0 / (steps * len(per_device) * 1e6)  # ns summed over devices -> ms per step
  kinds = []
  for kind, time_ns in per_kind.most_common():
    ops = {op: t for (k, op), t in per_op.items() if k == kind}
    kinds.append({'kind': kind, 'ms': time_ns * scale, 'share': time_ns / total,
                  'ops': counts[kind] / (steps * len(per_device)),
                  'largest': max(ops, key=ops.get)})
  busy = sum(_busy_ns([(start, duration) for _, start, duration in device])
             for device in per_device)
  launch = launch_ns(profile)
  return {'source': source, 'devices': len(per_device), 'steps': steps,
          'op_ms': total * scale, 'busy_ms': busy * scale,
          'launch_ms': None if launch is None else launch * scale, 'kinds': kinds}


def format_summary(summary: dict, step_ms: float | None = None) -> str:
  """A short paragraph and a markdown table of `summarize`'s result."""
  busy = f'ops ran during {summary["busy_ms"]:.1f} ms of each step'
  if step_ms:
    busy += f' ({summary["busy_ms"] / step_ms:.0%} of the {step_ms:.1f} ms step)'
  where = summary['source']
  if summary.get('devices', 1) > 1:
    where += f' (per device: the mean of {summary["devices"]})'
  launch = ''
  if summary.get('launch_ms') is not None:
    launch = (f' The host spent {summary["launch_ms"]:.1f} ms of each step launching the '
              "kernels (XLA's GpuExecutable::ExecuteThunks)")
    if step_ms and summary['launch_ms'] >= LAUNCH_BOUND_SHARE * step_ms:
      launch += (': most of the step, so the GPU runs kernels about as fast as the host '
                 'launches them (launch-bound; a larger batch or fewer, larger kernels help)')
    launch += '.'
  lines = [f'{summary["steps"]} profiled steps, ops of {where}: {busy}; op time summed over '
           f'streams/threads {summary["op_ms"]:.1f} ms per step.{launch}',
           '| op kind | ms/step | share | ops/step | largest op type |', '|---|---|---|---|---|']
  for k in summary['kinds']:
    lines.append(f'| {k["kind"]} | {k["ms"]:.2f} | {k["share"]:.1%} | {k["ops"]:.0f} | '
                 f'{k["largest"]} |')
  return '\n'.join(lines)


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('trace_dir', help='a jax.profiler.trace folder (bench_step --profile)')
  parser.add_argument('--steps', type=int, default=3, help='steps the trace holds')
  parser.add_argument('--step-ms', type=float, default=None,
                      help='the measured step time, to show busy time as a share of it')
  args = parser.parse_args(argv)
  if args.steps < 1:
    parser.error(f'--steps {args.steps}: a trace holds at least one step')
  try:
    summary = summarize(args.trace_dir, args.steps)
  except (FileNotFoundError, ValueError) as error:
    raise SystemExit(f'error: {error}') from None
  print(format_summary(summary, args.step_ms))


if __name__ == '__main__':
  main()
