"""GAN networks: MLP and DCGAN generators/discriminators (optionally class-conditional),
the pix2pix U-Net generator and the PatchGAN discriminator.

Normalization layers use the statistics of the batch they see, in training and
when sampling (as DCGAN/pix2pix reference code does), so no running averages are
kept and EMA generator weights stay consistent with their own statistics.
"""

from __future__ import annotations

import math
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from gen_jax.errors import ConfigError
from gen_jax.nn import Conv, get_activation, upsample_block
from gen_jax.nn.spectral_norm import SNConv, SNDense
from gen_jax.value_range import ValueRange

NORMS = ("batch", "instance", "layer", "none")


def _norm(kind: str, x: jax.Array) -> jax.Array:
    """Normalization ``kind`` (inside a compact method), batch statistics for "batch"."""
    if kind == "batch":
        return nn.BatchNorm(use_running_average=False, momentum=0.9)(x)
    if kind == "instance":
        return nn.GroupNorm(num_groups=None, group_size=1)(x)
    if kind == "layer":
        return nn.LayerNorm()(x)
    if kind == "none":
        return x
    raise ConfigError(f"unknown normalization {kind!r}; known: {', '.join(NORMS)}")


def _dense(x: jax.Array, features: int, sn: bool, update: bool) -> jax.Array:
    return SNDense(features)(x, update) if sn else nn.Dense(features)(x)


def _conv(x: jax.Array, features: int, kernel: int, stride: int, sn: bool, update: bool) -> jax.Array:
    if sn:
        return SNConv(features, (kernel, kernel), (stride, stride))(x, update)
    return Conv(features, (kernel, kernel), strides=(stride, stride))(x)


def to_range(h: jax.Array, value_range: tuple[float, float] | None) -> jax.Array:
    """tanh output mapped onto ``value_range``; identity when it is None (vector data)."""
    if value_range is None:
        return h
    return ValueRange(*value_range).from_tanh(h)


def _with_label(z: jax.Array, y: jax.Array | None, num_classes: int) -> jax.Array:
    if not num_classes:
        return z
    return jnp.concatenate([z, jax.nn.one_hot(y, num_classes, dtype=z.dtype)], -1)


def _project(out: jax.Array, feats: jax.Array, y: jax.Array | None, num_classes: int,
             projection: bool) -> jax.Array:
    """Projection discriminator (Miyato & Koyama, 2018): D(x, y) = psi(phi(x)) + embed(y)^T phi(x)."""
    if not (num_classes and projection):
        return out
    return out + jnp.sum(nn.Embed(num_classes, feats.shape[-1])(y) * feats, axis=-1)


class MLPGenerator(nn.Module):
    """z (and a one-hot label) -> an example of ``out_shape`` through dense layers."""

    out_shape: tuple[int, ...]
    hidden: Sequence[int]
    activation: str = "relu"
    num_classes: int = 0
    value_range: tuple[float, float] | None = None
    norm: str = "none"

    @nn.compact
    def __call__(self, z: jax.Array, y: jax.Array | None = None) -> jax.Array:
        act = get_activation(self.activation)
        h = _with_label(z, y, self.num_classes)
        for width in self.hidden:
            h = act(_norm(self.norm, nn.Dense(width)(h)))
        h = nn.Dense(math.prod(self.out_shape))(h)
        return to_range(h.reshape(z.shape[0], *self.out_shape), self.value_range)


class MLPDiscriminator(nn.Module):
    """An example (and its label) -> one raw score, optionally spectrally normalized."""

    hidden: Sequence[int]
    activation: str = "leaky_relu"
    spectral_norm: bool = False
    num_classes: int = 0
    projection: bool = False

    @nn.compact
    def __call__(self, x: jax.Array, y: jax.Array | None = None, update: bool = False) -> jax.Array:
        act = get_activation(self.activation)
        h = x.reshape(x.shape[0], -1)
        if not self.projection:
            h = _with_label(h, y, self.num_classes)
        for width in self.hidden:
            h = act(_dense(h, width, self.spectral_norm, update))
        out = _dense(h, 1, self.spectral_norm, update)[:, 0]
        return _project(out, h, y, self.num_classes, self.projection)


class DCGANGenerator(nn.Module):
    """DCGAN generator (Radford et al., 2016): a projection of z to a small feature map,
    then 2x upsamplings with batchnorm and ReLU, tanh at the output.

    ``channels[0]`` is the width of the projected map (of size H / 2**len(channels));
    each upsampling takes the next width, the last one the image channels.
    """

    out_shape: tuple[int, int, int]
    channels: Sequence[int]
    upsample: str = "pixel_shuffle"
    norm: str = "batch"
    num_classes: int = 0
    value_range: tuple[float, float] = (-1.0, 1.0)

    @nn.compact
    def __call__(self, z: jax.Array, y: jax.Array | None = None) -> jax.Array:
        factor = 2 ** len(self.channels)
        height, width, c_out = self.out_shape
        if height % factor or width % factor:
            raise ConfigError(f"image size {(height, width)} is not divisible by 2**{len(self.channels)} "
                              "(one upsampling per entry of model.g_channels)")
        h = nn.Dense(height // factor * width // factor * self.channels[0])(
            _with_label(z, y, self.num_classes))
        h = h.reshape(z.shape[0], height // factor, width // factor, self.channels[0])
        h = nn.relu(_norm(self.norm, h))
        widths = (*self.channels[1:], c_out)
        for i, c in enumerate(widths):
            h = upsample_block(h, c, self.upsample)
            if i < len(widths) - 1:
                h = nn.relu(_norm(self.norm, h))
        return to_range(h, self.value_range)


class DCGANDiscriminator(nn.Module):
    """DCGAN discriminator: stride-2 4x4 convs with LeakyReLU(0.2), normalization after
    all but the first, then one linear output (no pooling, no hidden dense layers).

    A class label enters as one-hot feature maps concatenated to the image, or through
    the projection head (``projection=True``).
    """

    channels: Sequence[int]
    norm: str = "batch"
    spectral_norm: bool = False
    num_classes: int = 0
    projection: bool = False

    @nn.compact
    def __call__(self, x: jax.Array, y: jax.Array | None = None, update: bool = False) -> jax.Array:
        h = x
        if self.num_classes and not self.projection:
            maps = jax.nn.one_hot(y, self.num_classes, dtype=x.dtype)[:, None, None, :]
            h = jnp.concatenate([h, jnp.broadcast_to(maps, (*x.shape[:3], self.num_classes))], -1)
        for i, c in enumerate(self.channels):
            h = _conv(h, c, 4, 2, self.spectral_norm, update)
            if i > 0:
                h = _norm(self.norm, h)
            h = nn.leaky_relu(h, 0.2)
        feats = h.reshape(h.shape[0], -1)
        out = _dense(feats, 1, self.spectral_norm, update)[:, 0]
        return _project(out, feats, y, self.num_classes, self.projection)


class UNetGenerator(nn.Module):
    """pix2pix U-Net generator (Isola et al., 2017): stride-2 4x4 conv encoder, upsampling
    decoder with skip connections to the mirrored encoder layers, dropout as the noise
    source in the decoder, tanh output. 2**len(channels) must divide the image size.
    """

    channels: Sequence[int]
    out_channels: int
    upsample: str = "pixel_shuffle"
    norm: str = "batch"
    dropout: float = 0.0
    value_range: tuple[float, float] = (-1.0, 1.0)

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        factor = 2 ** len(self.channels)
        if x.shape[1] % factor or x.shape[2] % factor:
            raise ConfigError(f"image size {x.shape[1:3]} is not divisible by 2**{len(self.channels)} "
                              "(one halving per entry of model.g_channels)")
        skips, h = [], x
        for i, c in enumerate(self.channels):
            h = Conv(c, (4, 4), strides=(2, 2))(h)
            # No normalization on the first layer nor at the bottleneck (1x1 for
            # small images, where instance statistics would be degenerate).
            if 0 < i < len(self.channels) - 1:
                h = _norm(self.norm, h)
            h = nn.leaky_relu(h, 0.2)
            skips.append(h)
        for i, c in enumerate(reversed(self.channels[:-1])):
            h = upsample_block(h, c, self.upsample)
            h = _norm(self.norm, h)
            if self.dropout:
                h = nn.Dropout(self.dropout, deterministic=False)(h)
            h = jnp.concatenate([nn.relu(h), skips[-2 - i]], -1)
        h = upsample_block(h, self.out_channels, self.upsample)
        return to_range(h, self.value_range)


class PatchGAN(nn.Module):
    """PatchGAN discriminator (Isola et al., 2017): a map of real/fake scores, one per
    overlapping patch, for an image (CycleGAN) or an (input, output) pair (pix2pix,
    concatenated along channels). ``channels`` are stride-2 layers except the last,
    which has stride 1; a 1-channel conv gives the map.
    """

    channels: Sequence[int]
    norm: str = "batch"
    spectral_norm: bool = False

    @nn.compact
    def __call__(self, x: jax.Array, cond: jax.Array | None = None, update: bool = False) -> jax.Array:
        h = x if cond is None else jnp.concatenate([cond, x], -1)
        for i, c in enumerate(self.channels):
            stride = 2 if i < len(self.channels) - 1 else 1
            h = _conv(h, c, 4, stride, self.spectral_norm, update)
            if i > 0:
                h = _norm(self.norm, h)
            h = nn.leaky_relu(h, 0.2)
        return _conv(h, 1, 4, 1, self.spectral_norm, update)[..., 0]
