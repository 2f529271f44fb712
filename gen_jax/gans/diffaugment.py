"""DiffAugment (Zhao, Liu, Lin, Zhu & Han, 2020): differentiable augmentation of both real
and generated images before every discriminator evaluation, for GAN training on few images.

Policies (the official ``DiffAugment_tf.py``): ``color`` (brightness, saturation, contrast),
``translation`` (up to 1/8 of the size, zero fill) and ``cutout`` (a zeroed square of half the
size). Used by StyleGAN2 (gen_jax/gans/stylegan2.py); any GAN can call :func:`diff_augment`.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp

AUGMENTS = ("color", "translation", "cutout")


def _shift(x: jax.Array, shift: jax.Array, axis: int) -> jax.Array:
    """x shifted by ``shift`` (N,) pixels along ``axis``: out[i] = x[i + shift], zero fill."""
    size = x.shape[axis]
    shape = [x.shape[0]] + [1] * (x.ndim - 1)
    shape[axis] = size
    idx = (jnp.arange(size)[None, :] + shift[:, None]).reshape(shape)
    taken = jnp.take_along_axis(x, jnp.clip(idx, 0, size - 1), axis=axis)
    return jnp.where((idx >= 0) & (idx < size), taken, 0.0)


def _pick(u: jax.Array, count: int) -> jax.Array:
    """Uniform integers in [0, count) from uniforms ``u`` in [0, 1)."""
    return jnp.minimum(jnp.floor(u * count), count - 1).astype(jnp.int32)


def diff_augment(x: jax.Array, rng: jax.Array, policy: Sequence[str]) -> jax.Array:
    """DiffAugment (Zhao et al., 2020; the official ``DiffAugment_tf.py``) of NHWC images in
    [-1, 1], each of ``policy`` in the order of AUGMENTS, drawn per image:

    - ``color``: brightness + U(-0.5, 0.5), then saturation (around the channel mean)
      x U(0, 2), then contrast (around the image mean) x U(0.5, 1.5);
    - ``translation``: a shift by an integer in [-s, s] along each axis, s = round(size / 8),
      zero fill;
    - ``cutout``: a zeroed square of round(size / 2), its centre uniform over the image.

    All from one draw (N, 7) of U(0, 1) with ``rng``. Differentiable in ``x``.
    """
    if not policy:
        return x
    n, h, w = x.shape[:3]
    u = jax.random.uniform(rng, (n, 7))
    col = u[:, :, None, None, None]
    if "color" in policy:
        x = x + (col[:, 0] - 0.5)
        mean = x.mean(3, keepdims=True)
        x = (x - mean) * (col[:, 1] * 2.0) + mean
        mean = x.mean((1, 2, 3), keepdims=True)
        x = (x - mean) * (col[:, 2] + 0.5) + mean
    if "translation" in policy:
        sh, sw = int(h * 0.125 + 0.5), int(w * 0.125 + 0.5)
        x = _shift(x, _pick(u[:, 3], 2 * sh + 1) - sh, 1)
        x = _shift(x, _pick(u[:, 4], 2 * sw + 1) - sw, 2)
    if "cutout" in policy:
        ch, cw = int(h * 0.5 + 0.5), int(w * 0.5 + 0.5)
        top = _pick(u[:, 5:6], h + 1 - ch % 2) - ch // 2
        left = _pick(u[:, 6:7], w + 1 - cw % 2) - cw // 2
        rows = (jnp.arange(h)[None] >= top) & (jnp.arange(h)[None] < top + ch)      # (N, H)
        cols = (jnp.arange(w)[None] >= left) & (jnp.arange(w)[None] < left + cw)    # (N, W)
        x = x * (1.0 - (rows[:, :, None] & cols[:, None, :]))[..., None]
    return x


__all__ = ["AUGMENTS", "diff_augment"]
