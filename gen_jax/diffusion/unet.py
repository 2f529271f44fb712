"""Noise-prediction networks: the DDPM UNet (:class:`DDPMUNet`) for images and a
time-conditioned MLP (:class:`MLPDenoiser`) for vectors.

The UNet follows Ho et al. (2020, App. B), itself after PixelCNN++ / Wide ResNets:
pre-activation residual blocks (GroupNorm, SiLU, 3x3 conv) with the time
embedding added inside each block, single-head self-attention at chosen
resolutions, dropout, per-level channel multipliers, stride-2 conv downsampling
and nearest-resize + conv upsampling (ConvTranspose's backward is very slow on
CPU, see DESIGN.md; DDPM itself upsamples this way). Class conditioning adds a
label embedding to the time embedding; label ``num_classes`` is the null label
of classifier-free guidance (Ho & Salimans, 2021).
"""

from __future__ import annotations

import math
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from gen_jax.nn import Conv


def timestep_embedding(t: jax.Array, dim: int, max_period: float = 10000.0) -> jax.Array:
    """Sinusoidal embedding of (possibly fractional) timesteps (Vaswani et al., 2017), (B,) -> (B, dim)."""
    half = dim // 2
    freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / max(half - 1, 1))
    args = t.astype(jnp.float32)[:, None] * freqs[None]
    emb = jnp.concatenate([jnp.sin(args), jnp.cos(args)], axis=-1)
    return jnp.pad(emb, ((0, 0), (0, dim % 2)))


def _groups(channels: int, groups: int) -> int:
    g = min(groups, channels)
    while channels % g:
        g -= 1
    return g


class TimeResBlock(nn.Module):
    """The DDPM UNet's time-conditioned residual block: GN-SiLU-conv, + Dense(temb),
    GN-SiLU-dropout-conv (zero-init), + skip (1x1 where widths differ)."""

    out_ch: int
    dropout: float
    groups: int = 32

    @nn.compact
    def __call__(self, x: jax.Array, temb: jax.Array, train: bool) -> jax.Array:
        h = nn.silu(nn.GroupNorm(_groups(x.shape[-1], self.groups))(x))
        h = Conv(self.out_ch, (3, 3))(h)
        h = h + nn.Dense(self.out_ch)(nn.silu(temb))[:, None, None, :]
        h = nn.silu(nn.GroupNorm(_groups(self.out_ch, self.groups))(h))
        h = nn.Dropout(self.dropout, deterministic=not train)(h)
        h = Conv(self.out_ch, (3, 3), kernel_init=nn.initializers.zeros)(h)
        if x.shape[-1] != self.out_ch:
            x = nn.Dense(self.out_ch)(x)  # the 1x1 "NIN" shortcut
        return x + h


class AttnBlock(nn.Module):
    """Single-head self-attention over the H*W positions, residual, zero-init output projection."""

    groups: int = 32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        b, hgt, wid, c = x.shape
        h = nn.GroupNorm(_groups(c, self.groups))(x).reshape(b, hgt * wid, c)
        q, k, v = (nn.Dense(c)(h) for _ in range(3))
        logits = jnp.einsum("bqc,bkc->bqk", q, k).astype(jnp.float32) / math.sqrt(c)
        # softmax in float32 under the bfloat16 policy (gen_jax/nn/precision.py)
        w = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
        h = nn.Dense(c, kernel_init=nn.initializers.zeros)(jnp.einsum("bqk,bkc->bqc", w, v))
        return x + h.reshape(b, hgt, wid, c)


class DDPMUNet(nn.Module):
    """The DDPM UNet. ``__call__(x, t, y=None, train=False)`` -> (B, H, W, out_ch).

    Its residual blocks keep the parameter names ``ResBlock_<i>`` they had before the
    class was renamed :class:`TimeResBlock`, so older checkpoints restore.

    Attributes:
      ch: base width.
      ch_mult: width multiplier per resolution level (len = number of levels).
      num_res_blocks: residual blocks per level on the way down (one more on the way up).
      attn_resolutions: spatial sizes (e.g. (16,)) that get self-attention.
      dropout: dropout rate inside the residual blocks.
      out_ch: output channels (2 * C when the variance is learned).
      num_classes: 0 = unconditional; else labels 0..num_classes-1 plus the null
        label ``num_classes``.
      groups: GroupNorm groups (reduced to a divisor of narrow widths).
      time_scale: multiplies t before the embedding (continuous-time models pass
        t in [0, 1] and scale it to the usual 0..1000 range).

    Mixed precision is the runtime's policy (``runtime.precision``, gen_jax/nn/precision.py),
    not an attribute: the network has no dtype of its own.
    """

    ch: int = 128
    ch_mult: Sequence[int] = (1, 2, 2, 2)
    num_res_blocks: int = 2
    attn_resolutions: Sequence[int] = (16,)
    dropout: float = 0.1
    out_ch: int = 3
    num_classes: int = 0
    groups: int = 32
    time_scale: float = 1.0

    @nn.compact
    def __call__(self, x: jax.Array, t: jax.Array, y: jax.Array | None = None,
                 train: bool = False) -> jax.Array:
        num_blocks = 0

        def res_block(out_ch: int) -> TimeResBlock:
            nonlocal num_blocks
            num_blocks += 1
            return TimeResBlock(out_ch, self.dropout, self.groups, name=f"ResBlock_{num_blocks - 1}")

        temb = timestep_embedding(t * self.time_scale, self.ch)
        temb = nn.Dense(4 * self.ch)(temb)
        temb = nn.Dense(4 * self.ch)(nn.silu(temb))
        if self.num_classes:
            if y is None:
                y = jnp.full((x.shape[0],), self.num_classes, jnp.int32)
            temb = temb + nn.Embed(self.num_classes + 1, 4 * self.ch)(y)
        h = Conv(self.ch, (3, 3))(x)
        hs = [h]
        levels = len(self.ch_mult)
        for i, mult in enumerate(self.ch_mult):
            for _ in range(self.num_res_blocks):
                h = res_block(self.ch * mult)(h, temb, train)
                if h.shape[1] in self.attn_resolutions:
                    h = AttnBlock(self.groups)(h)
                hs.append(h)
            if i != levels - 1:
                h = Conv(h.shape[-1], (3, 3), strides=(2, 2))(h)
                hs.append(h)
        h = res_block(h.shape[-1])(h, temb, train)
        h = AttnBlock(self.groups)(h)
        h = res_block(h.shape[-1])(h, temb, train)
        for i, mult in reversed(list(enumerate(self.ch_mult))):
            for _ in range(self.num_res_blocks + 1):
                h = res_block(self.ch * mult)(jnp.concatenate([h, hs.pop()], axis=-1), temb, train)
                if h.shape[1] in self.attn_resolutions:
                    h = AttnBlock(self.groups)(h)
            if i != 0:
                # Nearest-neighbour 2x upsampling as a repeat: same values as
                # jax.image.resize(method="nearest"), cheaper to compile and differentiate.
                h = jnp.repeat(jnp.repeat(h, 2, axis=1), 2, axis=2)
                h = Conv(h.shape[-1], (3, 3))(h)
        h = nn.silu(nn.GroupNorm(_groups(h.shape[-1], self.groups))(h))
        return Conv(self.out_ch, (3, 3), kernel_init=nn.initializers.zeros)(h)


class MLPDenoiser(nn.Module):
    """ε-network for vector data: residual SiLU MLP blocks, the time (and label)
    embedding added to each block's input. ``__call__(x, t, y=None, train=False)`` -> (B, out_dim)."""

    hidden: int = 256
    depth: int = 3
    out_dim: int = 2
    num_classes: int = 0
    dropout: float = 0.0
    time_scale: float = 1.0

    @nn.compact
    def __call__(self, x: jax.Array, t: jax.Array, y: jax.Array | None = None,
                 train: bool = False) -> jax.Array:
        temb = timestep_embedding(t * self.time_scale, 64)
        temb = nn.Dense(self.hidden)(nn.silu(nn.Dense(self.hidden)(temb)))
        if self.num_classes:
            if y is None:
                y = jnp.full((x.shape[0],), self.num_classes, jnp.int32)
            temb = temb + nn.Embed(self.num_classes + 1, self.hidden)(y)
        h = nn.Dense(self.hidden)(x)
        for _ in range(self.depth):
            z = nn.silu(nn.LayerNorm()(h + temb))
            z = nn.Dropout(self.dropout, deterministic=not train)(nn.Dense(self.hidden)(z))
            h = h + nn.Dense(self.hidden)(nn.silu(z))
        return nn.Dense(self.out_dim, kernel_init=nn.initializers.zeros)(nn.silu(h))
