"""Latent-space tools for generators: linear and spherical interpolation grids and
vector arithmetic (Radford et al., 2016, Sec. 6).

They work with any Method exposing ``generate(state, z, labels=None)`` (the GAN
Method does) and are pure, so they can be jitted with ``static_argnums`` for the
Method and the sizes.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp


def lerp(z0: jax.Array, z1: jax.Array, t: jax.Array) -> jax.Array:
    """Linear interpolation: (T, D) points (1 - t) z0 + t z1 for t (T,)."""
    t = jnp.asarray(t)[:, None]
    return (1.0 - t) * z0[None] + t * z1[None]


def slerp(z0: jax.Array, z1: jax.Array, t: jax.Array) -> jax.Array:
    """Spherical interpolation (Shoemake, 1985; White, 2016, for GAN latents):
    sin((1 - t) w) / sin(w) z0 + sin(t w) / sin(w) z1 with w the angle between z0 and z1.
    Falls back to lerp when they are (nearly) parallel."""
    t = jnp.asarray(t)[:, None]
    cos = jnp.dot(z0, z1) / (jnp.linalg.norm(z0) * jnp.linalg.norm(z1) + 1e-12)
    omega = jnp.arccos(jnp.clip(cos, -1.0, 1.0))
    so = jnp.sin(omega)
    safe = so > 1e-6
    so = jnp.where(safe, so, 1.0)
    w0 = jnp.where(safe, jnp.sin((1.0 - t) * omega) / so, 1.0 - t)
    w1 = jnp.where(safe, jnp.sin(t * omega) / so, t)
    return w0 * z0[None] + w1 * z1[None]


def interpolation_grid(method: Any, state: Any, rng: jax.Array, rows: int, cols: int,
                       latent_dim: int, spherical: bool = True,
                       labels: jax.Array | None = None) -> jax.Array:
    """``rows`` interpolations of ``cols`` steps each between pairs of random latents.

    Args:
      method: a Method with ``generate(state, z, labels=None)``.
      state: its state.
      rng: key of the end points.
      rows: number of interpolations.
      cols: points per interpolation (ends included).
      latent_dim: the generator's latent size.
      spherical: slerp (the right path for Gaussian latents) instead of lerp.
      labels: (rows,) class of each row, for conditional generators.

    Returns:
      (rows * cols, ...) samples, row by row.
    """
    ends = jax.random.normal(rng, (2, rows, latent_dim))
    t = jnp.linspace(0.0, 1.0, cols)
    path = slerp if spherical else lerp
    z = jax.vmap(lambda a, b: path(a, b, t))(ends[0], ends[1]).reshape(rows * cols, latent_dim)
    y = None if labels is None else jnp.repeat(jnp.asarray(labels, jnp.int32), cols)
    return method.generate(state, z, y)


def vector_arithmetic(method: Any, state: Any, z_a: jax.Array, z_b: jax.Array, z_c: jax.Array,
                      labels: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    """DCGAN latent arithmetic: G(mean(z_a) - mean(z_b) + mean(z_c)), the analogue of
    "smiling woman - neutral woman + neutral man".

    Each group (k, D) holds latents of samples showing one concept; averaging over a
    group makes the concept vector stable (Radford et al. average three).

    Returns:
      (the result latent (D,), its sample (1, ...)).
    """
    z = jnp.mean(z_a, 0) - jnp.mean(z_b, 0) + jnp.mean(z_c, 0)
    y = None if labels is None else jnp.asarray(labels, jnp.int32).reshape(1)
    return z, method.generate(state, z[None], y)
