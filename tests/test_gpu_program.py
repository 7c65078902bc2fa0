"""The GPU program tool: its counts of HLO and thunk texts, the described GPUs, and one deviceless
compile of a tiny train step for an H100 where the gpu-aot extra is installed."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from main_runs import ROOT, clean_env
from okdhp_jax import cpu_compiler
from okdhp_jax.tools import gpu_program, gpu_targets

# A trimmed optimised HLO module in XLA's text format: a loop, a reduction, a transpose and a
# Triton fusion, two cuDNN convolutions, a copy of a fusion's output and one of a parameter.
HLO = '''\
HloModule jit_train_step, is_scheduled=true

%fused_reduce (param_0: bf16[8,4,4,16]) -> f32[16] {
  %param_0 = bf16[8,4,4,16]{3,2,1,0} parameter(0)
  %convert.1 = f32[8,4,4,16]{3,2,1,0} convert(%param_0)
  %constant_0 = f32[] constant(0)
  ROOT %reduce.1 = f32[16]{0} reduce(%convert.1, %constant_0), dimensions={0,1,2}, to_apply=%add
}

%fused_transpose (param_0.1: f32[3,3,16,16]) -> bf16[16,3,3,16] {
  %param_0.1 = f32[3,3,16,16]{3,2,1,0} parameter(0)
  %convert.2 = bf16[3,3,16,16]{3,2,1,0} convert(%param_0.1)
  ROOT %transpose.1 = bf16[16,3,3,16]{3,2,1,0} transpose(%convert.2), dimensions={3,0,1,2}
}

%fused_update (param_0.2: f32[3,3,16,16], param_1: f32[16]) -> (f32[3,3,16,16], f32[16]) {
  %param_0.2 = f32[3,3,16,16]{3,2,1,0} parameter(0)
  %param_1 = f32[16]{0} parameter(1)
  %negate.1 = f32[3,3,16,16]{3,2,1,0} negate(%param_0.2)
  %negate.2 = f32[16]{0} negate(%param_1)
  ROOT %tuple.1 = (f32[3,3,16,16]{3,2,1,0}, f32[16]{0}) tuple(%negate.1, %negate.2)
}

%gemm_computation (parameter_0: bf16[8,16], parameter_1: bf16[16,16]) -> bf16[8,16] {
  %parameter_0 = bf16[8,16]{1,0} parameter(0)
  %parameter_1 = bf16[16,16]{1,0} parameter(1)
  ROOT %dot.1 = bf16[8,16]{1,0} dot(%parameter_0, %parameter_1), lhs_contracting_dims={1}, rhs_contracting_dims={0}
}

ENTRY %main.1 (x.1: bf16[8,4,4,16], w.1: f32[3,3,16,16], m.1: bf16[8,16]) -> (f32[3,3,16,16], f32[16]) {
  %x.1 = bf16[8,4,4,16]{3,2,1,0} parameter(0), sharding={replicated}
  %w.1 = f32[3,3,16,16]{3,2,1,0} parameter(1), sharding={replicated}
  %m.1 = bf16[8,16]{1,0} parameter(2), sharding={replicated}
  %input_transpose_fusion = bf16[16,3,3,16]{3,2,1,0} fusion(%w.1), kind=kInput, calls=%fused_transpose
  %cudnn-conv.1 = (bf16[8,4,4,16]{3,2,1,0}, u8[0]{0}) custom-call(%x.1, %input_transpose_fusion), window={size=3x3 pad=1_1x1_1}, custom_call_target="__cudnn$convForward"
  %get-tuple-element.1 = bf16[8,4,4,16]{3,2,1,0} get-tuple-element(%cudnn-conv.1), index=0
  %cudnn-conv.2 = (f32[3,3,16,16]{3,2,1,0}, u8[0]{0}) custom-call(%x.1, %get-tuple-element.1), window={size=3x3 pad=1_1x1_1}, custom_call_target="__cudnn$convBackwardFilter"
  %input_reduce_fusion = f32[16]{0} fusion(%get-tuple-element.1), kind=kInput, calls=%fused_reduce
  %gemm_fusion = bf16[8,16]{1,0} fusion(%m.1, %m.1), kind=kCustom, calls=%gemm_computation, backend_config={"fusion_backend_config":{"kind":"__triton_nested_gemm_fusion"}}
  %get-tuple-element.2 = f32[3,3,16,16]{3,2,1,0} get-tuple-element(%cudnn-conv.2), index=0
  %loop_negate_fusion = (f32[3,3,16,16]{3,2,1,0}, f32[16]{0}) fusion(%get-tuple-element.2, %input_reduce_fusion), kind=kLoop, calls=%fused_update
  %get-tuple-element.3 = f32[3,3,16,16]{3,2,1,0} get-tuple-element(%loop_negate_fusion), index=0
  %copy.1 = f32[3,3,16,16]{3,2,1,0} copy(%get-tuple-element.3)
  %copy.2 = f32[3,3,16,16]{3,2,1,0} copy(%w.1)
  %get-tuple-element.4 = f32[16]{0} get-tuple-element(%loop_negate_fusion), index=1
  ROOT %tuple.2 = (f32[3,3,16,16]{3,2,1,0}, f32[16]{0}) tuple(%copy.1, %get-tuple-element.4)
}
'''

# A trimmed `*thunk_sequence_after_thunk_passes.txt`: a kernel and a convolution on their own, a
# command buffer of two kernels and a memcpy, a stream wait, another convolution.
THUNKS = '''\
001: kCustomKernel  [source       | next=002 (1)] input_transpose_fusion grid: [5, 1, 1] threads: [128, 1, 1]  shared_memory: 0 bytes
002: kConvolution   [prev=001 (1) | next=000 (1)] kConvolution
000: kCommandBuffer [prev=002 (1) | next=006 (1)]
    003: kCustomKernel [source       | next=004 (1)] input_reduce_fusion grid: [32, 1, 1] threads: [256, 1, 1]  shared_memory: 0 bytes
    004: kCopy         [prev=003 (1) | next=005 (1)] kCopy
    005: kCustomKernel [prev=004 (1) | sink        ] loop_negate_fusion grid: [1, 1, 1] threads: [128, 1, 1]  shared_memory: 0 bytes
006: kWaitForStreams [prev=000 (1) | next=007 (1)] kWaitForStreams
007: kConvolution   [prev=006 (1) | sink        ] kConvolution
'''

NEEDS_EXTRA = gpu_program.check_cuda_plugin()


def test_hlo_counts_kernels_by_kind_convolutions_and_copies():
  counts = gpu_program.hlo_counts(HLO)
  assert counts['kernels'] == 4
  assert counts['kernels_by_kind'] == {'transpose': 1, 'reduction': 1, 'custom': 1, 'loop': 1}
  assert counts['library_calls'] == {'__cudnn$convForward': 1, '__cudnn$convBackwardFilter': 1}
  assert counts['copies'] == 2
  assert counts['copies_of_fusion_outputs'] == 1
  assert counts['copied_gib'] * 2**30 == 2 * 3 * 3 * 16 * 16 * 4


def test_thunk_counts_launches_per_step():
  counts = gpu_program.thunk_counts(THUNKS)
  assert counts['command_buffers'] == 1
  assert counts['thunks_in_command_buffers'] == {'kCustomKernel': 2, 'kCopy': 1}
  assert counts['thunks_outside'] == {'kCustomKernel': 1, 'kConvolution': 2,
                                      'kWaitForStreams': 1}
  # One graph, one kernel and two convolutions; a stream wait launches nothing.
  assert counts['launches'] == {'total': 4, 'graphs': 1, 'library_calls': 2, 'kernels': 1,
                                'copies_and_other': 0}


def test_table_has_a_column_per_config_and_every_quantity():
  row = dict(gpu_program.hlo_counts(HLO), **gpu_program.thunk_counts(THUNKS), config='a/hg.py',
             dtype='bfloat16', batch=8, temp_gib=1.5, argument_gib=0.25, output_gib=0.25,
             hbm_gb=0.5, tflop=0.25, roofline_ms=4.0, lower_s=1.0, compile_s=2.0)
  table = gpu_program.format_table([row, row]).splitlines()
  assert table[0] == '|  | hg.py bfloat16 b8 | hg.py bfloat16 b8 |'
  assert len(table) == 2 + len(gpu_program.ROWS)
  cells = {line.split(' | ')[0].strip('| ').replace('&nbsp;', ''): line.split(' | ')[1]
           for line in table[2:]}
  assert cells['host launches per step'] == '4'
  assert cells['cuDNN convolutions'] == '2'
  assert cells['temporary memory GiB'] == '1.50'
  assert cells['roofline step ms (modelled)'] == '4.0' and cells['img/s at that step'] == '2,000'
  assert 'n/a' not in cells.values()


@pytest.mark.parametrize('key', sorted(gpu_targets.TARGETS))
def test_every_described_gpu_names_its_source(key):
  target = gpu_targets.TARGETS[key]
  assert 'openxla/xla' in target.source and 'data sheet' in target.source
  text = gpu_targets.target_config(target, (9, 8, 0), (12, 9, 79))
  assert f'core_count: {target.core_count}' in text
  assert f'major: {target.compute_capability[0]} minor: {target.compute_capability[1]}' in text
  assert 'dnn_version: "9.8.0"' in text and 'runtime_version: "12.9.79"' in text


def test_a_missing_plugin_names_the_extra(monkeypatch):
  import importlib.metadata
  real_version = importlib.metadata.version

  def version(name):
    if name == 'jax-cuda12-plugin':
      raise importlib.metadata.PackageNotFoundError(name)
    return real_version(name)

  monkeypatch.setattr(importlib.metadata, 'version', version)
  assert gpu_program.EXTRA in gpu_program.check_cuda_plugin()


def test_a_cpu_mesh_still_gets_the_cpu_compiler_options():
  from okdhp_jax import sharding
  from okdhp_jax.training import step
  assert step._compiler_options(sharding.make_mesh()) == cpu_compiler.compiler_options()


def test_help_imports_no_framework():
  probe = ('import runpy, sys\nsys.argv = ["gpu_program", "--help"]\ntry:\n'
           '  runpy.run_module("okdhp_jax.tools.gpu_program", run_name="__main__")\n'
           'except SystemExit:\n  pass\n'
           'print("imported:", sorted(m for m in ("jax", "tensorflow") if m in sys.modules))')
  result = subprocess.run([sys.executable, '-c', probe], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, env=clean_env())
  assert result.returncode == 0, result.stderr[-2000:]
  assert 'usage' in result.stdout and result.stdout.strip().endswith('imported: []')


@pytest.mark.skipif(NEEDS_EXTRA is not None, reason=f'needs the gpu-aot extra: {NEEDS_EXTRA}')
def test_a_tiny_step_compiles_for_a_described_h100(tmp_path):
  """One deviceless compile; the user's XLA_FLAGS reach it (every kernel in a graph) and the
  project's CPU compiler options do not."""
  env = dict(clean_env(), XLA_FLAGS='--xla_gpu_graph_min_graph_size=1')
  counts = tmp_path / 'counts.json'
  result = subprocess.run(
      [sys.executable, '-m', 'okdhp_jax.tools.gpu_program', '--config',
       'configs/hg2_baseline.py:runlocal', '--batch', '8', '--dtype', 'bfloat16', '--gpu', 'h100',
       '--dump-to', str(tmp_path / 'dump'), '--json', str(counts)],
      cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'XLA_FLAGS=--xla_gpu_graph_min_graph_size=1' in result.stdout
  assert '| host launches per step |' in result.stdout
  row = json.loads(counts.read_text())['rows'][0]
  assert row['dtype'] == 'bfloat16' and row['batch'] == 8
  assert row['kernels'] > 0 and row['library_calls']['__cudnn$convForward'] > 0
  assert row['launches']['kernels'] == 0
  assert row['launches']['total'] == row['command_buffers'] + sum(
      n for kind, n in row['thunks_outside'].items() if kind not in gpu_program.NOT_LAUNCHES)
  assert row['temp_gib'] > 0 and row['argument_gib'] > 0
  # The roofline model, with the H100's bandwidth and bfloat16 peak.
  assert row['hbm_gb'] > 0 and row['tflop'] > 0 and row['roofline_ms'] > 0
  options = [p for p in os.listdir(tmp_path / 'dump') if p.endswith('train_step.debug_options')]
  assert options, os.listdir(tmp_path / 'dump')
  for name in options:
    for option in cpu_compiler.CPU_OPTIONS:
      assert option not in (tmp_path / 'dump' / name).read_text()
