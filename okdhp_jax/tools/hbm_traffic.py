"""What each kernel of an optimised GPU program moves through HBM and computes, and the step
time a roofline puts on that: a model of a program compiled for a described GPU
(tools/gpu_program.py), where nothing runs.

Per kernel of the entry computation (fusions, cuDNN and other library calls, copies):
  bytes  every operand read once and every output written once; an operand that a fusion only
         slices (through bitcasts, reshapes and converts, which XLA computes per element) counts
         as the elements it takes, as when a weight is cut out of the flat state's vector;
  flops  a convolution's 2 * (output-side activation elements) * (kernel elements per output
         channel), whichever of forward, backward-input or backward-filter it is, and a GEMM
         fusion's 2 * (output elements) * (contracted length); elementwise work counts none.
Step time = sum over kernels of max(bytes / (BANDWIDTH_SHARE * HBM bandwidth),
flops / (FLOPS_SHARE * dense peak)) + LAUNCH_S: kernels run one after another and none reaches
its chip's peak. The shares are assumptions, not measurements, so the model ranks programs and
says which resource bounds them; a GPU's bench_step says how fast one is.

Written here because XLA's cost analysis is empty for a GPU program compiled without a GPU
(`Compiled.cost_analysis()` returns None in jaxlib 0.10.2).
"""

from __future__ import annotations

import dataclasses
import re

from okdhp_jax.tools import hlo_text

# What a kernel is assumed to reach: a streaming kernel 90 % of the HBM bandwidth, a cuDNN
# convolution or a GEMM 60 % of the dense peak, and each kernel 2 microseconds of launch and
# tail (inside a CUDA graph).
BANDWIDTH_SHARE = 0.9
FLOPS_SHARE = 0.6
LAUNCH_S = 2e-6

# What reads and writes nothing itself: views, tuples and constants.
_NO_KERNEL = frozenset({'parameter', 'get-tuple-element', 'tuple', 'constant', 'bitcast'})
# Per-element operations a sliced operand's elements pass through unread elsewhere.
_PER_ELEMENT_VIEWS = frozenset({'bitcast', 'reshape', 'convert'})
_SLICES = frozenset({'slice', 'dynamic-slice'})


@dataclasses.dataclass(frozen=True)
class KernelCost:
  name: str
  kind: str      # 'fusion:kLoop', '__cudnn$convForward', 'copy', ...
  bytes: float   # HBM bytes read and written
  flops: float


def _fusion_cost(fusion, body, shapes) -> tuple[float, float]:
  """(bytes, flops) of one fusion whose fused computation is `body`."""
  parameter_names = {}
  users = {}
  for instruction in body:
    if instruction.opcode == 'parameter':
      index = int(re.search(r'parameter\((\d+)\)', instruction.text).group(1))
      parameter_names[index] = instruction.name
      continue
    for name in hlo_text.operands(instruction):
      users.setdefault(name, []).append(instruction)

  def elements_read(name: str, whole: int) -> int:
    readers = users.get(name)
    if not readers:
      return whole
    taken = 0
    for user in readers:
      if user.opcode in _SLICES:
        taken += hlo_text.elements(user.shape)
      elif user.opcode in _PER_ELEMENT_VIEWS:
        taken += elements_read(user.name, whole)
      else:
        return whole
    return min(taken, whole)

  read = 0.0
  for index, name in enumerate(o for o in hlo_text.operands(fusion) if o in shapes):
    whole = hlo_text.elements(shapes[name])
    per_element = hlo_text.shape_bytes(shapes[name]) / max(whole, 1)
    parameter = parameter_names.get(index)
    read += per_element * (elements_read(parameter, whole) if parameter else whole)
  written = sum(hlo_text.shape_bytes(s) for s in hlo_text.arrays(fusion.shape))
  flops = 0.0
  by_name = {instruction.name: instruction for instruction in body}
  for instruction in body:
    if instruction.opcode == 'dot':
      lhs = hlo_text.dims(by_name[hlo_text.operands(instruction)[0]].shape)
      contracted = re.search(r'lhs_contracting_dims=\{([\d,]*)\}', instruction.text)
      length = 1
      for dim in filter(None, (contracted.group(1) if contracted else '').split(',')):
        length *= lhs[int(dim)]
      flops += 2.0 * hlo_text.elements(instruction.shape) * length
  return read + written, flops


def _convolution_flops(call, shapes, outputs) -> float:
  """2 * output elements * kernel elements per output channel; `dim_labels` describe the
  forward convolution (input_kernel->output) whichever pass the call computes."""
  labels = hlo_text.attribute(call.text, 'dim_labels') or ''
  kernel_labels = labels.partition('_')[2].partition('->')[0]
  if 'o' not in kernel_labels:
    return 0.0
  first, second = (shapes[name] for name in hlo_text.operands(call)[:2])
  target = hlo_text.attribute(call.text, 'custom_call_target') or ''
  if 'BackwardFilter' in target:
    kernel, output = outputs[0], second
  elif 'BackwardInput' in target:
    kernel, output = second, first
  else:
    kernel, output = second, outputs[0]
  output_channels = hlo_text.dims(kernel)[kernel_labels.index('o')]
  per_channel = hlo_text.elements(kernel) // max(output_channels, 1)
  return 2.0 * hlo_text.elements(output) * per_channel


def kernel_costs(text: str) -> list[KernelCost]:
  """Every kernel of the entry computation of an optimised GPU module text, with its cost."""
  computations = hlo_text.parse_hlo(text)
  entry = re.search(r'^ENTRY %(\S+)', text, re.M).group(1)
  instructions = computations[entry]
  shapes = {instruction.name: instruction.shape for instruction in instructions}
  costs = []
  for instruction in instructions:
    if instruction.opcode in _NO_KERNEL:
      continue
    if instruction.opcode == 'fusion':
      kind = f'fusion:{hlo_text.attribute(instruction.text, "kind")}'
      body = computations[hlo_text.attribute(instruction.text, 'calls')]
      nbytes, flops = _fusion_cost(instruction, body, shapes)
    else:
      read = sum(hlo_text.shape_bytes(shapes[name]) for name in hlo_text.operands(instruction)
                 if name in shapes)
      # A cuDNN call's u8 member is its scratch space, not an output.
      outputs = [s for s in hlo_text.arrays(instruction.shape) if not s.startswith('u8')]
      nbytes, flops = read + sum(hlo_text.shape_bytes(s) for s in outputs), 0.0
      kind = instruction.opcode
      if instruction.opcode == 'custom-call':
        kind = hlo_text.attribute(instruction.text, 'custom_call_target') or kind
        if kind.startswith('__cudnn$conv'):
          flops = _convolution_flops(instruction, shapes, outputs)
    costs.append(KernelCost(instruction.name, kind, nbytes, flops))
  return costs


def roofline_seconds(costs: list[KernelCost], bandwidth: float, peak_flops: float) -> float:
  """The modelled step: each kernel bound by its bytes or its FLOPs, plus its launch."""
  return sum(max(c.bytes / (BANDWIDTH_SHARE * bandwidth), c.flops / (FLOPS_SHARE * peak_flops))
             + LAUNCH_S for c in costs)
