"""The Gaussian diffusion process: forward marginals, the true posterior, model
parameterizations and the reverse-step distribution p_θ(x_{t-1} | x_t).

Ho et al. (2020), "Denoising Diffusion Probabilistic Models" (DDPM); learned
variances from Nichol & Dhariwal (2021), "Improved DDPM"; v-prediction from
Salimans & Ho (2022), "Progressive Distillation". All functions take 0-based
integer timesteps ``t`` of shape (batch,).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from gen_jax.diffusion.schedules import Schedule, extract
from gen_jax.errors import ConfigError

PREDICTIONS = ("eps", "x0", "v")
VARIANCES = ("beta", "beta_tilde", "learned")


def q_mean_variance(sched: Schedule, x0: jax.Array, t: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Mean and variance of q(x_t | x_0) = N(√ᾱ_t x_0, (1 - ᾱ_t) I) (DDPM eq. 4)."""
    a = extract(sched.alphas_cumprod, t, x0.ndim)
    return jnp.sqrt(a) * x0, jnp.broadcast_to(1.0 - a, x0.shape)


def q_sample(sched: Schedule, x0: jax.Array, t: jax.Array, noise: jax.Array) -> jax.Array:
    """x_t = √ᾱ_t x_0 + √(1 - ᾱ_t) ε, a draw from q(x_t | x_0) given ε ~ N(0, I)."""
    a = extract(sched.alphas_cumprod, t, x0.ndim)
    return jnp.sqrt(a) * x0 + jnp.sqrt(1.0 - a) * noise


def q_posterior(sched: Schedule, x0: jax.Array, xt: jax.Array,
                t: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """q(x_{t-1} | x_t, x_0) = N(μ̃_t, β̃_t I) (DDPM eqs. 6-7).

    μ̃_t = β_t √ᾱ_{t-1} / (1 - ᾱ_t) x_0 + (1 - ᾱ_{t-1}) √α_t / (1 - ᾱ_t) x_t.

    Returns:
      (mean, variance, clipped log-variance), each shaped like x0.
    """
    n = x0.ndim
    mean = extract(sched.posterior_mean_coef1, t, n) * x0 + extract(sched.posterior_mean_coef2, t, n) * xt
    var = jnp.broadcast_to(extract(sched.posterior_variance, t, n), x0.shape)
    logvar = jnp.broadcast_to(extract(sched.posterior_log_variance_clipped, t, n), x0.shape)
    return mean, var, logvar


# -- parameterizations -------------------------------------------------------
# With a_t = √ᾱ_t and s_t = √(1 - ᾱ_t): x_t = a x_0 + s ε and v = a ε - s x_0.

def _as(sched: Schedule, t: jax.Array, ndim: int) -> tuple[jax.Array, jax.Array]:
    a = extract(sched.alphas_cumprod, t, ndim)
    return jnp.sqrt(a), jnp.sqrt(1.0 - a)


def x0_from_eps(sched: Schedule, xt: jax.Array, t: jax.Array, eps: jax.Array) -> jax.Array:
    """x̂_0 = (x_t - √(1 - ᾱ_t) ε) / √ᾱ_t."""
    a, s = _as(sched, t, xt.ndim)
    return (xt - s * eps) / a


def eps_from_x0(sched: Schedule, xt: jax.Array, t: jax.Array, x0: jax.Array) -> jax.Array:
    """ε̂ = (x_t - √ᾱ_t x_0) / √(1 - ᾱ_t)."""
    a, s = _as(sched, t, xt.ndim)
    return (xt - a * x0) / s


def v_from_eps(sched: Schedule, xt: jax.Array, t: jax.Array, eps: jax.Array) -> jax.Array:
    """v = √ᾱ_t ε - √(1 - ᾱ_t) x_0 (Salimans & Ho, 2022), x_0 implied by (x_t, ε)."""
    a, s = _as(sched, t, xt.ndim)
    return a * eps - s * (xt - s * eps) / a


def eps_from_v(sched: Schedule, xt: jax.Array, t: jax.Array, v: jax.Array) -> jax.Array:
    """ε = √(1 - ᾱ_t) x_t + √ᾱ_t v (since a² + s² = 1)."""
    a, s = _as(sched, t, xt.ndim)
    return s * xt + a * v


def x0_from_v(sched: Schedule, xt: jax.Array, t: jax.Array, v: jax.Array) -> jax.Array:
    """x_0 = √ᾱ_t x_t - √(1 - ᾱ_t) v."""
    a, s = _as(sched, t, xt.ndim)
    return a * xt - s * v


def to_eps(pred: str, sched: Schedule, xt: jax.Array, t: jax.Array, out: jax.Array) -> jax.Array:
    """The network output ``out`` under parameterization ``pred`` converted to ε̂."""
    if pred == "eps":
        return out
    if pred == "x0":
        return eps_from_x0(sched, xt, t, out)
    if pred == "v":
        return eps_from_v(sched, xt, t, out)
    raise ConfigError(f"unknown prediction {pred!r}; known: {', '.join(PREDICTIONS)}")


def target(pred: str, sched: Schedule, x0: jax.Array, xt: jax.Array, t: jax.Array,
           noise: jax.Array) -> jax.Array:
    """The regression target of parameterization ``pred`` for x_t made from (x_0, ε)."""
    if pred == "eps":
        return noise
    if pred == "x0":
        return x0
    if pred == "v":
        a, s = _as(sched, t, x0.ndim)
        return a * noise - s * x0
    raise ConfigError(f"unknown prediction {pred!r}; known: {', '.join(PREDICTIONS)}")


def model_log_variance(sched: Schedule, variance: str, t: jax.Array, shape: tuple[int, ...],
                       v: jax.Array | None = None) -> jax.Array:
    """log σ_t² of p_θ(x_{t-1} | x_t).

    "beta": σ² = β_t ("fixed large"; at t = 0 we keep β_0, not DDPM's β̃_1: β_0 / α_0 is
    the true Var(x_0 | x_t=0) of data whose spread is much larger than √β_0, so a
    continuous decoder is right there, and for a discretized one it hardly matters);
    "beta_tilde": σ² = β̃_t ("fixed small", clipped at t = 0);
    "learned": the improved-DDPM interpolation log σ² = u log β_t + (1 - u) log β̃_t
    with u = (v + 1) / 2 from the network output v (Nichol & Dhariwal, 2021, eq. 15).
    """
    n = len(shape)
    if variance == "beta":
        return jnp.broadcast_to(extract(np.log(sched.betas), t, n), shape)
    if variance == "beta_tilde":
        return jnp.broadcast_to(extract(sched.posterior_log_variance_clipped, t, n), shape)
    if variance == "learned":
        if v is None:
            raise ValueError("variance='learned' needs the network's variance output v")
        u = (v + 1.0) / 2.0
        return u * extract(np.log(sched.betas), t, n) + (1.0 - u) * extract(
            sched.posterior_log_variance_clipped, t, n)
    raise ConfigError(f"unknown variance {variance!r}; known: {', '.join(VARIANCES)}")


def p_mean_logvar(sched: Schedule, xt: jax.Array, t: jax.Array, eps: jax.Array, variance: str,
                  v: jax.Array | None = None,
                  clip: tuple[float, float] | None = None) -> tuple[jax.Array, jax.Array, jax.Array]:
    """p_θ(x_{t-1} | x_t) = N(μ̃_t(x_t, x̂_0), σ_t²) with x̂_0 from ε̂ (optionally clipped to ``clip``).

    Unclipped this is DDPM eq. 11, μ = (x_t - β_t / √(1 - ᾱ_t) ε̂) / √α_t.

    Returns:
      (mean, log-variance, x̂_0).
    """
    x0 = x0_from_eps(sched, xt, t, eps)
    if clip is not None:
        x0 = jnp.clip(x0, *clip)
    mean, _, _ = q_posterior(sched, x0, xt, t)
    return mean, model_log_variance(sched, variance, t, xt.shape, v), x0
