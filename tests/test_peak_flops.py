"""The MFU denominator: the right chip, the right dtype, nothing for a CPU."""

from okdhp_jax.tools import peak_flops


def test_device_kinds_as_jax_names_them():
  assert peak_flops.peak_tflops('NVIDIA H100 80GB HBM3', 'bfloat16') == 989.4
  assert peak_flops.peak_tflops('NVIDIA H100 PCIe', 'bfloat16') == 756.0
  assert peak_flops.peak_tflops('NVIDIA H200', 'float32') == 494.7
  assert peak_flops.peak_tflops('NVIDIA A100-SXM4-80GB', 'bfloat16') == 312.0
  assert peak_flops.peak_tflops('NVIDIA L4', 'bfloat16') == 121.0
  assert peak_flops.peak_tflops('TPU v4', 'bfloat16') == 275.0
  assert peak_flops.peak_tflops('TPU v5 lite', 'bfloat16') == 197.0
  assert peak_flops.peak_tflops('TPU v5p', 'bfloat16') == 459.0
  assert peak_flops.peak_tflops('TPU v6 lite', 'bfloat16') == 918.0
  assert peak_flops.peak_tflops('cpu', 'float32') is None
  assert peak_flops.peak_tflops('NVIDIA H100 80GB HBM3', 'float16') is None


def test_training_flops_are_six_per_mac():
  assert peak_flops.train_flops_per_image(10) == 60.0
