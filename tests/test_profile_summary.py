"""Reading a jax.profiler trace back: op kinds, per-step times, and the device's busy time."""

from __future__ import annotations

import pytest
from jax.profiler import ProfileData

from okdhp_jax.tools import profile_summary

# A GPU-like trace of 2 steps (times in ps; ops of 2-6 ms): the derived 'XLA Ops' line, plus a
# stream line whose kernels repeat those ops and must not be counted twice.
GPU_TRACE = '''
planes {
  id: 1
  name: "/device:GPU:0"
  lines { id: 1 name: "XLA Ops" timestamp_ns: 1000
    events { metadata_id: 1 offset_ps: 0 duration_ps: 6000000000 }
    events { metadata_id: 2 offset_ps: 4000000000 duration_ps: 2000000000 }
    events { metadata_id: 3 offset_ps: 10000000000 duration_ps: 4000000000 }
    events { metadata_id: 4 offset_ps: 14000000000 duration_ps: 2000000000 } }
  lines { id: 2 name: "Stream #7(compute)" timestamp_ns: 1000
    events { metadata_id: 5 offset_ps: 0 duration_ps: 6000000000
             stats { metadata_id: 9 str_value: "cudnn-conv.3" } } }
  lines { id: 3 name: "XLA Modules" timestamp_ns: 1000
    events { metadata_id: 6 offset_ps: 0 duration_ps: 16000000000 } }
  event_metadata { key: 1 value { id: 1 name: "cudnn-conv.3" } }
  event_metadata { key: 2 value { id: 2 name: "transpose_copy_fusion.1" } }
  event_metadata { key: 3 value { id: 3 name: "cudnn-conv.4" } }
  event_metadata { key: 4 value { id: 4 name: "all-reduce.2" } }
  event_metadata { key: 5 value { id: 5 name: "sm90_xmma_fprop_kernel" } }
  event_metadata { key: 6 value { id: 6 name: "jit_train_step" } }
  stat_metadata { key: 9 value { id: 9 name: "hlo_op" } }
}
'''


@pytest.mark.parametrize('name, kind', [
    ('convolution.51', 'convolution'), ('cudnn-conv-bias-activation.2', 'convolution'),
    ('wrapped_convert.7', 'elementwise fusion'),  # 'convert' is not a convolution.
    ('transpose_copy_fusion.1', 'transpose / copy'), ('all-reduce.3', 'collective'),
    ('reduce-scatter.1', 'collective'), ('convert_reduce_fusion', 'reduction'),
    ('select-and-scatter.4', 'pooling / scatter'), ('cublas-gemm.1', 'matmul'),
    ('ynn_fusion.9', 'library fusion (YNNPACK/oneDNN)'), ('rng-bit-generator', 'other'),
    ('__cudnn$convForward', 'convolution'), ('gemm_fusion_dot.2', 'matmul'),
    ('maximum_bitcast_fusion.3', 'elementwise fusion'),  # a ReLU, named after its root ops
    ('reduce-precision.1', 'other'),
])
def test_op_kinds_from_hlo_names(name, kind):
  assert profile_summary.op_kind(name) == kind


def test_a_gpu_trace_counts_the_xla_ops_line_once_per_step():
  summary = profile_summary.summarize_profile(ProfileData.from_text_proto(GPU_TRACE), steps=2)
  assert summary['source'] == '/device:GPU:0'
  kinds = {k['kind']: k for k in summary['kinds']}
  assert set(kinds) == {'convolution', 'transpose / copy', 'collective'}
  assert kinds['convolution']['ms'] == pytest.approx(5.0)  # (6 + 4) ms over 2 steps
  assert kinds['convolution']['ops'] == 1 and kinds['convolution']['largest'] == 'cudnn-conv'
  assert kinds['transpose / copy']['ms'] == pytest.approx(1.0)
  assert summary['op_ms'] == pytest.approx(7.0)
  # The overlapping transpose adds no busy time: ops cover [0, 6) and [10, 16) ms.
  assert summary['busy_ms'] == pytest.approx(6.0)
  assert sum(k['share'] for k in summary['kinds']) == pytest.approx(1.0)
  table = profile_summary.format_summary(summary, step_ms=10.0)
  assert '(60% of the 10.0 ms step)' in table
  assert '| convolution | 5.00 | 71.4% | 1 | cudnn-conv |' in table


def test_without_a_derived_line_the_kernels_that_name_their_op_count():
  trace = GPU_TRACE.replace('name: "XLA Ops"', 'name: "Stream #8(compute)"', 1)
  summary = profile_summary.summarize_profile(ProfileData.from_text_proto(trace), steps=1)
  # Only the stream kernel carries an hlo_op stat; it is named by that op.
  assert [(k['kind'], k['largest']) for k in summary['kinds']] == [('convolution', 'cudnn-conv')]


def test_small_kinds_merge_into_other():
  summary = profile_summary.summarize_profile(ProfileData.from_text_proto(GPU_TRACE), steps=2,
                                              top=2)
  assert [k['kind'] for k in summary['kinds']] == ['convolution', 'other']
  assert summary['kinds'][1]['ms'] == pytest.approx(2.0)
  assert summary['kinds'][1]['largest'] in ('transpose_copy_fusion', 'all-reduce')


def test_several_devices_give_the_mean_of_one():
  second = GPU_TRACE.replace('/device:GPU:0', '/device:GPU:1').replace('id: 1\n', 'id: 2\n', 1)
  one = profile_summary.summarize_profile(ProfileData.from_text_proto(GPU_TRACE), steps=2)
  two = profile_summary.summarize_profile(ProfileData.from_text_proto(GPU_TRACE + second),
                                          steps=2)
  assert two['devices'] == 2 and two['source'] == '/device:GPU:0, /device:GPU:1'
  for key in ('op_ms', 'busy_ms'):
    assert two[key] == pytest.approx(one[key])
  assert two['kinds'] == one['kinds']
  assert '(per device: the mean of 2)' in profile_summary.format_summary(two)


def test_a_trace_needs_at_least_one_step(tmp_path):
  with pytest.raises(SystemExit):
    profile_summary.main([str(tmp_path), '--steps', '0'])


def test_a_folder_without_a_trace_is_named(tmp_path):
  with pytest.raises(SystemExit, match='no .xplane.pb under'):
    profile_summary.main([str(tmp_path)])


def test_a_damaged_trace_is_named(tmp_path):
  damaged = tmp_path / 'plugins' / 'profile' / '2026_11_27' / 'host.xplane.pb'
  damaged.parent.mkdir(parents=True)
  damaged.write_bytes(b'not an XSpace')
  with pytest.raises(SystemExit, match=f'{damaged} is not a readable jax.profiler trace'):
    profile_summary.main([str(tmp_path)])


# A GPU trace without an 'XLA Ops' line (as jax 0.11 writes on an H200), 1 step of 10 ms: a
# cuDNN convolution's kernel, two kernels of one CUDA graph (whose hlo_op names the graph, the
# kernel's name its fusion) and a memset; on the host, XLA's launch of the step's kernels.
GRAPH_TRACE = '''
planes {
  id: 1
  name: "/device:GPU:0"
  lines { id: 1 name: "Stream #14(Memset,Compute)" timestamp_ns: 1000
    events { metadata_id: 1 offset_ps: 0 duration_ps: 3000000000
             stats { metadata_id: 9 str_value: "cudnn-conv-bw-filter.5" } }
    events { metadata_id: 2 offset_ps: 3000000000 duration_ps: 2000000000
             stats { metadata_id: 9 str_value: "command_buffer_77" } }
    events { metadata_id: 3 offset_ps: 5000000000 duration_ps: 1000000000
             stats { metadata_id: 9 str_value: "command_buffer_77" } }
    events { metadata_id: 4 offset_ps: 6000000000 duration_ps: 1000000000
             stats { metadata_id: 9 str_value: "cudnn-conv.2" } } }
  event_metadata { key: 1 value { id: 1 name: "sm90_xmma_wgrad_implicit_gemm_bf16" } }
  event_metadata { key: 2 value { id: 2 name: "input_reduce_fusion_12" } }
  event_metadata { key: 3 value { id: 3 name: "loop_maximum_fusion_3" } }
  event_metadata { key: 4 value { id: 4 name: "Memset 3" } }
  stat_metadata { key: 9 value { id: 9 name: "hlo_op" } }
}
planes {
  id: 2
  name: "/host:CPU"
  lines { id: 1 name: "python3" timestamp_ns: 1000
    events { metadata_id: 1 offset_ps: 0 duration_ps: 9000000000 }
    events { metadata_id: 2 offset_ps: 0 duration_ps: 8000000000 } }
  event_metadata { key: 1 value { id: 1 name: "PjitFunction(train_step)" } }
  event_metadata { key: 2 value { id: 2 name: "[0] GpuExecutable::ExecuteThunks" } }
}
'''


def test_kernels_of_a_cuda_graph_are_named_by_their_fusion():
  summary = profile_summary.summarize_profile(ProfileData.from_text_proto(GRAPH_TRACE), steps=1)
  kinds = {k['kind']: (k['ms'], k['largest']) for k in summary['kinds']}
  # Not one 'other' kind named command_buffer: each graph kernel counts as its fusion.
  assert kinds == {'convolution': (pytest.approx(4.0), 'cudnn-conv-bw-filter'),
                   'reduction': (pytest.approx(2.0), 'input_reduce_fusion'),
                   'elementwise fusion': (pytest.approx(1.0), 'loop_maximum_fusion')}


def test_the_hosts_kernel_launch_time_and_a_launch_bound_step_are_named():
  summary = profile_summary.summarize_profile(ProfileData.from_text_proto(GRAPH_TRACE), steps=1)
  assert summary['launch_ms'] == pytest.approx(8.0)
  assert summary['busy_ms'] == pytest.approx(7.0)
  bound = profile_summary.format_summary(summary, step_ms=10.0)
  assert 'The host spent 8.0 ms of each step launching the kernels' in bound
  assert 'launch-bound' in bound
  # A step twice as long as the launches is the GPU's own time: no launch-bound verdict.
  assert 'launch-bound' not in profile_summary.format_summary(summary, step_ms=20.0)


def test_cpu_and_tpu_traces_have_no_launch_time():
  summary = profile_summary.summarize_profile(ProfileData.from_text_proto(GPU_TRACE), steps=2)
  assert summary['launch_ms'] is None
  assert 'launching' not in profile_summary.format_summary(summary, step_ms=10.0)


@pytest.mark.parametrize('name, kind', [
    ('sm90_xmma_dgrad_implicit_gemm_bf16bf16', 'convolution'),  # cuDNN's, not a matmul
    ('nvjet_sm90_tst_128x256_64x4_TNN', 'matmul'),  # cuBLAS's
    ('memcpy32_post', 'transpose / copy'), ('Memset 3', 'transpose / copy'),
])
def test_op_kinds_from_kernel_names(name, kind):
  assert profile_summary.op_kind(name) == kind
