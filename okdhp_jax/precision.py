"""Where numerics are kept above the network's compute dtype."""

import jax
import jax.numpy as jnp


def at_least_float32(x: jax.Array) -> jax.Array:
  """bfloat16/float16 -> float32; float32 and float64 unchanged.

  Softmaxes, ensemble sums and losses of a bfloat16 network run in float32. float64 (numerical
  checks under JAX_ENABLE_X64) stays float64, so those checks see no float32 rounding.
  """
  return x.astype(jnp.promote_types(x.dtype, jnp.float32))
