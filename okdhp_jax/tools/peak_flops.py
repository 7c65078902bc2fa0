"""Dense peak FLOP/s of the chips this project trains on, for MFU (model FLOPs utilisation).

Per chip (one GPU, one TPU chip), without structured sparsity, from the vendors' data sheets:
NVIDIA H100 / H200 / A100 / L4 Tensor Core GPU data sheets, and the Cloud TPU system
architecture pages for v4, v5e, v5p and v6e (cloud.google.com/tpu/docs). The float32 column is
what XLA runs float32 convolutions and matmuls at with JAX's default precision: TF32 tensor
cores on NVIDIA GPUs from Ampere on, single bfloat16 passes on TPUs (hence the same peak as
bfloat16 there). A CPU has no entry: its MFU is shown as n/a.
"""

from __future__ import annotations

# (substring of jax's device_kind, lower-cased; name; {dtype: TFLOP/s}). First match wins, so
# the more specific names come first.
PEAK_TFLOPS = (
    ('h100 pcie', 'H100 PCIe', {'bfloat16': 756.0, 'float32': 378.0}),
    ('h100', 'H100 SXM', {'bfloat16': 989.4, 'float32': 494.7}),
    ('h200', 'H200', {'bfloat16': 989.4, 'float32': 494.7}),
    ('a100', 'A100', {'bfloat16': 312.0, 'float32': 156.0}),
    ('l4', 'L4', {'bfloat16': 121.0, 'float32': 60.0}),
    ('v6 lite', 'TPU v6e', {'bfloat16': 918.0, 'float32': 918.0}),
    ('v6e', 'TPU v6e', {'bfloat16': 918.0, 'float32': 918.0}),
    ('v5 lite', 'TPU v5e', {'bfloat16': 197.0, 'float32': 197.0}),
    ('v5e', 'TPU v5e', {'bfloat16': 197.0, 'float32': 197.0}),
    ('v5p', 'TPU v5p', {'bfloat16': 459.0, 'float32': 459.0}),
    ('tpu v5', 'TPU v5p', {'bfloat16': 459.0, 'float32': 459.0}),
    ('tpu v4', 'TPU v4', {'bfloat16': 275.0, 'float32': 275.0}),
)


def peak_tflops(device_kind: str, dtype: str) -> float | None:
  """Dense peak TFLOP/s of one chip for a compute dtype; None if unknown (e.g. a CPU)."""
  kind = device_kind.lower()
  for pattern, _, peaks in PEAK_TFLOPS:
    if pattern in kind:
      return peaks.get(dtype)
  return None


def train_flops_per_image(macs_per_image: int) -> float:
  """Training FLOPs of one image: 2 FLOPs per MAC, forward + backward = 3x the forward."""
  return 2.0 * 3.0 * macs_per_image
