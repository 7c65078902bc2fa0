"""The CPU compiler options: convolutions leave YNNPACK (reductions stay), a user's XLA_FLAGS win, and a jaxlib
that does not know an option falls back to XLA's defaults instead of failing."""

from __future__ import annotations

import logging
import re

import jax
import jax.numpy as jnp
import pytest

from okdhp_jax import cpu_compiler


@pytest.fixture(autouse=True)
def _fresh_probe():
  # Asked here, not at import: the suite's workers import every module before any test runs,
  # and a backend started at import would fix the device count before test modules set it.
  if jax.default_backend() != 'cpu':
    pytest.skip('CPU compiler options')
  cpu_compiler._checked_options.cache_clear()
  yield
  cpu_compiler._checked_options.cache_clear()


def _library_fused_ops(compiler_options) -> list[str]:
  """The ops XLA hands to a library (kCustom fusions) in a convolution's forward and backward,
  large enough for YNNPACK to take by default."""
  def loss(x, w):  # a convolution, then BatchNorm's statistics over the batch
    y = jax.lax.conv_general_dilated(x, w, (1, 1), 'SAME',
                                     dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
    mean = y.mean(axis=(0, 1, 2))
    variance = ((y - mean) ** 2).mean(axis=(0, 1, 2))
    return jnp.maximum((y - mean) / jnp.sqrt(variance + 1e-5), 0.0).sum()
  step = jax.jit(jax.grad(loss, argnums=(0, 1)), compiler_options=compiler_options)
  x, w = jnp.zeros((8, 64, 64, 128)), jnp.zeros((3, 3, 128, 128))
  text = step.lower(x, w).compile().as_text()
  return [' '.join(re.findall(r'op_name="([^"]+)"', line)) for line in text.splitlines()
          if 'kind=kCustom' in line]


def test_convolutions_compile_without_library_fusions(monkeypatch):
  monkeypatch.delenv('XLA_FLAGS', raising=False)
  options = cpu_compiler.compiler_options()
  assert options == cpu_compiler.CPU_OPTIONS
  fused = _library_fused_ops(options)
  assert not [op for op in fused if 'conv_general_dilated' in op], fused
  assert any('reduce_sum' in op for op in fused), fused  # reductions stay with the library
  if not any('conv_general_dilated' in op for op in _library_fused_ops(None)):
    pytest.skip("this jaxlib's defaults do not use YNNPACK for convolutions either")


def test_a_users_xla_flags_win(monkeypatch):
  monkeypatch.setenv('XLA_FLAGS', '--xla_cpu_experimental_ynn_fusion_type=LIBRARY_FUSION_TYPE_DOT')
  assert cpu_compiler.compiler_options() is None


def test_an_option_this_jaxlib_lacks_falls_back_with_a_log_line(monkeypatch, caplog):
  monkeypatch.delenv('XLA_FLAGS', raising=False)
  monkeypatch.setattr(cpu_compiler, 'CPU_OPTIONS', {'xla_cpu_option_from_the_future': ''})
  with caplog.at_level(logging.INFO):
    assert cpu_compiler.compiler_options() is None
  assert 'xla_cpu_option_from_the_future' in caplog.text and "using XLA's defaults" in caplog.text
