"""Offline image-to-image tasks computed from ordinary image batches, in jnp.

Paired (pix2pix): ``paired_input(x, task)`` makes the conditioning image of each
target image: "edges" (Sobel gradient magnitude) or "lowres" (average-pooled by a
factor, then nearest-upsampled back).

Unpaired (CycleGAN): the examples are split into two disjoint halves by a fixed
hash of their pixel levels (``content_half``), so a given image always lands in the
same half; domain A is the first half as it is, domain B the second half through
a fixed visual transform ("invert" or "thicken"). No image appears in both
domains, so there are no pairs to learn from.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from gen_jax.errors import ConfigError
from gen_jax.value_range import ValueRange

PAIRED_TASKS = ("edges", "lowres")
DOMAIN_TASKS = ("invert", "thicken", "labels")


def sobel_edges(x01: jax.Array) -> jax.Array:
    """Sobel gradient magnitude of NHWC images in [0, 1], per channel, clipped to [0, 1]."""
    kx = jnp.array([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]]) / 4.0
    c = x01.shape[-1]
    kernel = jnp.stack([kx, kx.T], -1)[:, :, None, :]          # (3, 3, 1, 2)
    kernel = jnp.tile(kernel, (1, 1, 1, c))                    # depthwise: 2 outputs per channel
    g = jax.lax.conv_general_dilated(x01, kernel, (1, 1), "SAME",
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                     feature_group_count=c)
    g = g.reshape(*g.shape[:-1], c, 2)
    return jnp.clip(jnp.sqrt(jnp.sum(g**2, -1) + 1e-12), 0.0, 1.0)


def lowres(x: jax.Array, factor: int) -> jax.Array:
    """Average-pools NHWC images by ``factor`` and upsamples back (nearest)."""
    n, h, w, c = x.shape
    if h % factor or w % factor:
        raise ConfigError(f"image size {(h, w)} is not divisible by the low-res factor {factor}")
    small = x.reshape(n, h // factor, factor, w // factor, factor, c).mean((2, 4))
    return jnp.repeat(jnp.repeat(small, factor, 1), factor, 2)


def paired_input(x: jax.Array, task: str, value_range, factor: int = 2) -> jax.Array:
    """The conditioning image of each target image in ``x`` for a paired task.

    Args:
      x: (N, H, W, C) targets in ``value_range``.
      task: "edges" or "lowres".
      value_range: (lo, hi) of the images.
      factor: downsampling factor of "lowres".

    Returns:
      (N, H, W, C) inputs in ``value_range``.
    """
    if task == "edges":
        vr = ValueRange(*value_range)
        return vr.from_unit(sobel_edges(vr.to_unit(x)))
    if task == "lowres":
        return lowres(x, factor)
    raise ConfigError(f"unknown paired task {task!r}; known: {', '.join(PAIRED_TASKS)}")


def content_half(x: jax.Array, value_range, num_levels: int) -> jax.Array:
    """0 or 1 per image: the parity of the sum of its pixel levels (a fixed hash, so
    the two halves of a dataset are disjoint and stable across epochs)."""
    levels = ValueRange(*value_range, num_levels).levels(x).astype(jnp.int32)
    return jnp.sum(levels.reshape(x.shape[0], -1), -1) % 2


def domain_b(x: jax.Array, task: str, value_range) -> jax.Array:
    """Domain B's look of images ``x``: "invert" (1 - x) or "thicken" (3x3 max filter)."""
    vr = ValueRange(*value_range)
    x01 = vr.to_unit(x)
    if task == "invert":
        return vr.from_unit(1.0 - x01)
    if task == "thicken":
        thick = jax.lax.reduce_window(x01, -jnp.inf, jax.lax.max, (1, 3, 3, 1), (1, 1, 1, 1), "SAME")
        return vr.from_unit(thick)
    raise ConfigError(f"unknown domain transform {task!r}; known: invert, thicken")


def unpaired_domains(x: jax.Array, y: jax.Array | None, task: str, value_range,
                     num_levels: int | None) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(images in A's look, images in B's look, is_b (N,) float mask) of a batch.

    For "labels" (tfds cycle_gan/*: label 0 = A, 1 = B) both images are ``x`` and the
    mask is the label. For a transform task, image i belongs to A when
    ``content_half`` is 0 and to B (transformed) when 1; both looks are returned for
    every image and the mask says which one is real data.
    """
    if task == "labels":
        if y is None:
            raise ConfigError("model.task='labels' needs labelled data (label = domain)")
        return x, x, y.astype(x.dtype)
    is_b = content_half(x, value_range, num_levels).astype(x.dtype)
    return x, domain_b(x, task, value_range), is_b
