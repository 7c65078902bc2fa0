"""The roofline model of a compiled GPU program (okdhp_jax/tools/hbm_traffic.py), on a
hand-written optimised HLO module whose bytes and FLOPs are counted by hand below."""

from __future__ import annotations

import pytest

from okdhp_jax.tools import hbm_traffic

# A flat f32[1000] state vector, an activation x and its gradient g (bf16[2,4,4,8]), a 3x3
# kernel k (bf16[3,3,8,8]) and GEMM operands m (bf16[8,16]), n (bf16[16,4]).
HLO = '''\
HloModule jit_train_step, is_scheduled=true

%fused_cut (param_0: f32[1000]) -> bf16[144] {
  %param_0 = f32[1000]{0} parameter(0)
  %convert.1 = bf16[1000]{0} convert(%param_0)
  %slice.1 = bf16[72]{0} slice(%convert.1), slice={[0:72]}
  %bitcast.1 = bf16[1000]{0} bitcast(%convert.1)
  %slice.2 = bf16[72]{0} slice(%bitcast.1), slice={[100:172]}
  ROOT %concatenate.1 = bf16[144]{0} concatenate(%slice.1, %slice.2), dimensions={0}
}

%fused_cut_and_sum (param_0.1: f32[1000]) -> (f32[72], f32[]) {
  %param_0.1 = f32[1000]{0} parameter(0)
  %slice.3 = f32[72]{0} slice(%param_0.1), slice={[0:72]}
  %constant.1 = f32[] constant(0)
  %reduce.1 = f32[] reduce(%param_0.1, %constant.1), dimensions={0}, to_apply=%add
  ROOT %tuple.1 = (f32[72]{0}, f32[]) tuple(%slice.3, %reduce.1)
}

%gemm_computation (parameter_0: bf16[8,16], parameter_1: bf16[16,4]) -> bf16[8,4] {
  %parameter_0 = bf16[8,16]{1,0} parameter(0)
  %parameter_1 = bf16[16,4]{1,0} parameter(1)
  ROOT %dot.1 = bf16[8,4]{1,0} dot(%parameter_0, %parameter_1), lhs_contracting_dims={1}, rhs_contracting_dims={0}
}

ENTRY %main.1 (v.1: f32[1000], x.1: bf16[2,4,4,8], g.1: bf16[2,4,4,8], k.1: bf16[3,3,8,8], m.1: bf16[8,16], n.1: bf16[16,4]) -> bf16[144] {
  %v.1 = f32[1000]{0} parameter(0)
  %x.1 = bf16[2,4,4,8]{3,2,1,0} parameter(1)
  %g.1 = bf16[2,4,4,8]{3,2,1,0} parameter(2)
  %k.1 = bf16[3,3,8,8]{3,2,1,0} parameter(3)
  %m.1 = bf16[8,16]{1,0} parameter(4)
  %n.1 = bf16[16,4]{1,0} parameter(5)
  %loop_cut_fusion = bf16[144]{0} fusion(%v.1), kind=kLoop, calls=%fused_cut
  %input_sum_fusion = (f32[72]{0}, f32[]) fusion(%v.1), kind=kInput, calls=%fused_cut_and_sum
  %cudnn-conv.1 = (bf16[2,4,4,8]{3,2,1,0}, u8[0]{0}) custom-call(%x.1, %k.1), window={size=3x3 pad=1_1x1_1}, dim_labels=b01f_01io->b01f, custom_call_target="__cudnn$convForward"
  %cudnn-conv-bw-filter.1 = (bf16[3,3,8,8]{3,2,1,0}, u8[0]{0}) custom-call(%x.1, %g.1), window={size=3x3 pad=1_1x1_1}, dim_labels=b01f_01io->b01f, custom_call_target="__cudnn$convBackwardFilter"
  %cudnn-conv-bw-input.1 = (bf16[2,4,4,8]{3,2,1,0}, u8[0]{0}) custom-call(%g.1, %k.1), window={size=3x3 pad=1_1x1_1}, dim_labels=b01f_01io->b01f, custom_call_target="__cudnn$convBackwardInput"
  %gemm_fusion = bf16[8,4]{1,0} fusion(%m.1, %n.1), kind=kCustom, calls=%gemm_computation
  %get-tuple-element.1 = bf16[2,4,4,8]{3,2,1,0} get-tuple-element(%cudnn-conv.1), index=0
  %copy.1 = bf16[2,4,4,8]{3,2,1,0} copy(%get-tuple-element.1)
  ROOT %bitcast.2 = bf16[144]{0} bitcast(%loop_cut_fusion)
}
'''

CONV_BYTES = 2 * (256 + 576 + 256)   # x or g (2*4*4*8 values), k (3*3*8*8), the result
CONV_FLOPS = 2 * 256 * (3 * 3 * 8)  # each output value: a 3x3x8 dot product
EXPECTED = {
    # Only the two slices' 144 float32 values are read, through a convert and a bitcast.
    'loop_cut_fusion': ('fusion:kLoop', 144 * 4 + 144 * 2, 0),
    # A reduction reads the whole vector, so the slice beside it costs nothing more.
    'input_sum_fusion': ('fusion:kInput', 1000 * 4 + 72 * 4 + 4, 0),
    'cudnn-conv.1': ('__cudnn$convForward', CONV_BYTES, CONV_FLOPS),
    'cudnn-conv-bw-filter.1': ('__cudnn$convBackwardFilter', CONV_BYTES, CONV_FLOPS),
    'cudnn-conv-bw-input.1': ('__cudnn$convBackwardInput', CONV_BYTES, CONV_FLOPS),
    'gemm_fusion': ('fusion:kCustom', 2 * (128 + 64 + 32), 2 * 32 * 16),
    'copy.1': ('copy', 2 * 512, 0),
}


def test_every_kernel_with_its_bytes_and_flops():
  costs = {c.name: (c.kind, c.bytes, c.flops) for c in hbm_traffic.kernel_costs(HLO)}
  assert costs == EXPECTED


def test_each_kernel_is_bound_by_its_bytes_or_its_flops():
  bandwidth, peak = 1e9, 1e10  # the convolutions bound by FLOPs, the rest (the GEMM) by bytes
  costs = hbm_traffic.kernel_costs(HLO)
  seconds = hbm_traffic.roofline_seconds(costs, bandwidth, peak)
  by_bytes = sum(b for kind, b, _ in EXPECTED.values() if 'conv' not in kind)
  expected = (by_bytes / (hbm_traffic.BANDWIDTH_SHARE * bandwidth)
              + 3 * CONV_FLOPS / (hbm_traffic.FLOPS_SHARE * peak)
              + len(EXPECTED) * hbm_traffic.LAUNCH_S)
  assert 3 * CONV_BYTES / (hbm_traffic.BANDWIDTH_SHARE * bandwidth) < (
      3 * CONV_FLOPS / (hbm_traffic.FLOPS_SHARE * peak))
  assert 2 * 32 * 16 / (hbm_traffic.FLOPS_SHARE * peak) < (
      2 * (128 + 64 + 32) / (hbm_traffic.BANDWIDTH_SHARE * bandwidth))
  assert seconds == pytest.approx(expected, rel=1e-12)
