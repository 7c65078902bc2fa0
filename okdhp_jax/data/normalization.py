"""Image normalisation, done on the device: crops cross from the host as uint8.

The input pipeline delivers crops as uint8 [B, H, W, 3] (a quarter of float32's host-to-device
traffic); the train and predict steps turn them into the ImageNet-normalised float32 the
networks were trained on (the released code's transforms.Normalize on [0, 1] RGB).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def check_uint8(images, what: str) -> None:
  """Raises unless `images` are uint8 (pixels as the pipeline delivers them, 0..255)."""
  if np.dtype(images.dtype) != np.uint8:
    raise ValueError(f'{what} must be uint8 pixels [batch, height, width, 3] in 0..255 (the '
                     f'steps normalise on the device); got {images.dtype}')


def normalize(images: jax.Array) -> jax.Array:
  """uint8 [..., 3] pixels -> ImageNet-normalised float32."""
  scaled = images.astype(jnp.float32) / 255.0
  return (scaled - jnp.asarray(IMAGENET_MEAN)) / jnp.asarray(IMAGENET_STD)
