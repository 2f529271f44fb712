"""Convolutional encoder/decoder stacks with selectable upsampling.

Upsampling is a config choice because on CPU ``nn.ConvTranspose``'s backward
pass is very slow in XLA (DESIGN.md, performance notes): a conv to 4x channels
followed by depth-to-space ("pixel_shuffle", Shi et al., 2016) measured ~2.3x
faster per train step than ConvTranspose there, nearest-resize + conv
("resize") in between.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax

from gen_jax.errors import ConfigError
from gen_jax.nn.mlp import get_activation

UPSAMPLE_MODES = ("pixel_shuffle", "resize", "transpose")


def depth_to_space(x: jax.Array, block: int = 2) -> jax.Array:
    """(N, H, W, C*b*b) -> (N, H*b, W*b, C), the inverse of space-to-depth."""
    n, h, w, c = x.shape
    if c % (block * block):
        raise ValueError(f"channels {c} not divisible by {block * block}")
    c_out = c // (block * block)
    x = x.reshape(n, h, w, block, block, c_out)
    x = x.transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(n, h * block, w * block, c_out)


def upsample_block(x: jax.Array, features: int, mode: str) -> jax.Array:
    """Doubles height and width and maps to ``features`` channels (call inside compact)."""
    if mode == "pixel_shuffle":
        return depth_to_space(nn.Conv(4 * features, (3, 3))(x), 2)
    if mode == "resize":
        n, h, w, c = x.shape
        x = jax.image.resize(x, (n, 2 * h, 2 * w, c), method="nearest")
        return nn.Conv(features, (3, 3))(x)
    if mode == "transpose":
        return nn.ConvTranspose(features, (4, 4), strides=(2, 2), padding="SAME")(x)
    raise ConfigError(f"unknown upsampling {mode!r}; known: {', '.join(UPSAMPLE_MODES)}")


class ConvEncoder(nn.Module):
    """Stride-2 convolutions (one per entry of ``channels``), then dense layers.

    Attributes:
      channels: channels of each stride-2 stage.
      hidden: width of the dense layer before the output.
      out_dim: output width.
      activation: name of the activation.
    """

    channels: Sequence[int]
    hidden: int
    out_dim: int
    activation: str = "silu"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        act = get_activation(self.activation)
        h = act(nn.Conv(self.channels[0], (3, 3))(x))
        for c in self.channels:
            h = act(nn.Conv(c, (3, 3), strides=(2, 2))(h))
        h = h.reshape(h.shape[0], -1)
        h = act(nn.Dense(self.hidden)(h))
        return nn.Dense(self.out_dim)(h)


class ConvDecoder(nn.Module):
    """Dense layers to a small feature map, then one 2x upsampling per entry of
    ``channels``, then a 3x3 conv to ``out_channels``.

    Attributes:
      out_shape: (H, W) of the output; each must be divisible by 2**len(channels).
      channels: channels of each upsampling stage, coarsest first.
      hidden: width of the first dense layer.
      out_channels: channels of the output.
      upsample: one of UPSAMPLE_MODES.
      activation: name of the activation.
    """

    out_shape: tuple[int, int]
    channels: Sequence[int]
    hidden: int
    out_channels: int
    upsample: str = "pixel_shuffle"
    activation: str = "silu"

    @nn.compact
    def __call__(self, z: jax.Array) -> jax.Array:
        act = get_activation(self.activation)
        factor = 2 ** len(self.channels)
        h0, w0 = self.out_shape[0] // factor, self.out_shape[1] // factor
        if h0 * factor != self.out_shape[0] or w0 * factor != self.out_shape[1]:
            raise ConfigError(f"image size {self.out_shape} is not divisible by 2**{len(self.channels)}"
                              " (one halving per entry of model.channels)")
        h = act(nn.Dense(self.hidden)(z))
        h = act(nn.Dense(h0 * w0 * self.channels[0])(h))
        h = h.reshape(z.shape[0], h0, w0, self.channels[0])
        for c in self.channels:
            h = act(upsample_block(h, c, self.upsample))
        return nn.Conv(self.out_channels, (3, 3))(h)

