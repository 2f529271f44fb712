"""Masked convolutions for autoregressive image models (PixelCNN, Gated PixelCNN).

Pixels are generated in raster order and, within a pixel, channel by channel
(R -> G -> B). A layer's features are split into ``num_channels`` contiguous
groups; group g of a layer may depend on the current pixel's colour channels
< g (mask "A", the first layer, which must not see its own input) or <= g
(mask "B", later layers, whose group g already only depends on channels < g
of the input). Van den Oord et al., 2016, "Pixel Recurrent Neural Networks",
Sec. 3.4 (masks A/B) and "Conditional Image Generation with PixelCNN Decoders"
(the vertical / horizontal stacks, which remove PixelCNN's blind spot).

The masks are built once in numpy; the layers multiply the kernel by them, so
every masked connection has exactly zero weight and exactly zero gradient.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from gen_jax.errors import ConfigError
from gen_jax.nn.conv import conv_general_dilated

MASK_KINDS = ("full", "vertical", "horizontal")


def channel_groups(features: int, num_channels: int, splits: int = 1) -> np.ndarray:
    """The colour group (0..num_channels-1) of each of ``features`` features.

    Args:
      features: number of features of a layer.
      num_channels: colour channels of the image (1 = no channel ordering).
      splits: the features are ``splits`` equal chunks (e.g. the two halves that
        a gated unit multiplies), each partitioned into contiguous groups.

    Returns:
      (features,) int array.
    """
    if features % splits:
        raise ConfigError(f"{features} features do not split into {splits} equal parts")
    chunk = features // splits
    if num_channels > 1 and chunk % num_channels:
        raise ConfigError(f"{chunk} features are not divisible into {num_channels} colour groups: "
                          f"use a multiple of {num_channels}")
    return np.tile(np.arange(chunk) * num_channels // chunk, splits)


def causal_mask(kernel_size: tuple[int, int], in_features: int, out_features: int,
                num_channels: int, kind: str, mask_type: str, out_splits: int = 1) -> np.ndarray:
    """The (kh, kw, in, out) 0/1 mask of a causal convolution.

    Args:
      kernel_size: (kh, kw), both odd; the centre is the output position.
      in_features, out_features: the layer's feature counts.
      num_channels: colour channels (the groups of :func:`channel_groups`).
      kind: "full" (PixelCNN: rows above, and the centre row left of the centre),
        "vertical" (Gated PixelCNN's vertical stack: rows above only, for type A,
        or rows above and the centre row, for type B; no channel ordering since
        it only ever sees earlier rows) or "horizontal" (the centre row, left of
        and at the centre).
      mask_type: "A" (the centre excludes its own colour group) or "B" (includes it).
      out_splits: see :func:`channel_groups` (for the output features).

    Returns:
      float32 array of zeros and ones.
    """
    kh, kw = kernel_size
    if kh % 2 == 0 or kw % 2 == 0:
        raise ConfigError(f"masked convolutions need odd kernel sizes, got {kernel_size}")
    if kind not in MASK_KINDS:
        raise ConfigError(f"unknown mask kind {kind!r}; known: {', '.join(MASK_KINDS)}")
    if mask_type not in ("A", "B"):
        raise ConfigError(f"mask_type must be 'A' or 'B', got {mask_type!r}")
    ci, cj = kh // 2, kw // 2
    mask = np.zeros((kh, kw, in_features, out_features), np.float32)
    if kind == "vertical":
        mask[:ci + (mask_type == "B")] = 1.0
        return mask
    if kind == "full":
        mask[:ci] = 1.0
    mask[ci, :cj] = 1.0
    g_in = channel_groups(in_features, num_channels)
    g_out = channel_groups(out_features, num_channels, out_splits)
    allowed = g_in[:, None] < g_out[None, :] if mask_type == "A" else g_in[:, None] <= g_out[None, :]
    mask[ci, cj] = allowed.astype(np.float32)
    return mask


class MaskedConv(nn.Module):
    """A 'SAME'-padded convolution whose kernel is multiplied by :func:`causal_mask`.

    Attributes:
      features: output features.
      kernel_size: (kh, kw), odd.
      num_channels: colour channels of the image being modelled.
      kind: "full", "vertical" or "horizontal".
      mask_type: "A" or "B".
      out_splits: output chunks that each carry all colour groups (2 for gates).
      use_bias: add a bias.
    """

    features: int
    kernel_size: tuple[int, int]
    num_channels: int = 1
    kind: str = "full"
    mask_type: str = "B"
    out_splits: int = 1
    use_bias: bool = True

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kh, kw = self.kernel_size
        in_features = x.shape[-1]
        mask = causal_mask((kh, kw), in_features, self.features, self.num_channels, self.kind,
                           self.mask_type, self.out_splits)
        # Fan-in of the unmasked connections keeps the init's scale right for
        # kernels that are mostly masked (a vertical-A 3x3 keeps one row in three).
        fan_in = max(float(mask.sum(axis=(0, 1, 2)).mean()), 1.0)
        init = nn.initializers.normal(stddev=float(np.sqrt(1.0 / fan_in)))
        kernel = self.param("kernel", init, (kh, kw, in_features, self.features))
        y = conv_general_dilated(
            x, kernel * jnp.asarray(mask, kernel.dtype), window_strides=(1, 1), padding="SAME",
            dimension_numbers=("NHWC", "HWIO", "NHWC"))
        if self.use_bias:
            y = y + self.param("bias", nn.initializers.zeros, (self.features,))
        return y


__all__ = ["MASK_KINDS", "MaskedConv", "causal_mask", "channel_groups"]
