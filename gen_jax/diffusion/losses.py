"""Diffusion losses: L_simple, the variational bound term by term, the hybrid
loss of improved DDPM, and loss-aware importance sampling of timesteps.

The bound (Ho et al., 2020, eq. 5; Sohl-Dickstein et al., 2015):
-log p(x_0) <= L_prior + Σ_{t>=1} L_t + L_0, with L_prior = KL(q(x_{T-1}|x_0) || N(0, I)),
L_t = KL(q(x_{t-1}|x_t, x_0) || p_θ(x_{t-1}|x_t)) (0-based t >= 1) and the decoder
L_0 = -log p_θ(x_0 | x_1-in-1-based = x_t at t=0). Image decoders are discretized
Gaussians over the data's bins, so the bound is on the discrete data's likelihood.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from gen_jax.data import bits_per_dim
from gen_jax.diffusion import process
from gen_jax.diffusion.schedules import Schedule
from gen_jax.likelihood import gaussian_log_prob_elementwise
from gen_jax.value_range import ValueRange


def normal_kl(mean1: jax.Array, logvar1: jax.Array, mean2: jax.Array, logvar2: jax.Array) -> jax.Array:
    """Elementwise KL(N(mean1, e^logvar1) || N(mean2, e^logvar2)) in nats."""
    return 0.5 * (-1.0 + logvar2 - logvar1 + jnp.exp(logvar1 - logvar2)
                  + (mean1 - mean2) ** 2 * jnp.exp(-logvar2))


def discretized_gaussian_log_likelihood(x: jax.Array, mean: jax.Array, log_scale: jax.Array,
                                        half_width: float, lo: float, hi: float) -> jax.Array:
    """Elementwise log P(bin of x) under N(mean, e^{2 log_scale}) discretized to bins
    [x - half_width, x + half_width], the edge bins extended to ±∞ (DDPM §3.3).

    Args:
      x: data on the bin centres, in [lo, hi].
      mean, log_scale: the decoder Gaussian.
      half_width: half the bin width (ValueRange.level_spacing / 2 = (hi - lo) / (2 (L - 1))
        for L levels: 1/16 for 17-level digits in (-1, 1), 1/255 for 8-bit data).
      lo, hi: the data's value range (the edge bins).

    Returns:
      log-probabilities (nats), shaped like x.
    """
    inv = jnp.exp(-log_scale)
    upper = (x + half_width - mean) * inv
    lower = (x - half_width - mean) * inv
    log_cdf_upper = jax.scipy.special.log_ndtr(upper)
    log_sf_lower = jax.scipy.special.log_ndtr(-lower)
    # log(Φ(u) - Φ(l)) = log Φ(u) + log(1 - Φ(l)/Φ(u)), or the same in survival functions
    # where both are near 1. The ratio's log is capped at -1e-6 so that neither branch
    # (both are differentiated under jnp.where) divides by 1 - e^0 = 0 in float32.
    def log1mexp(a):
        return jnp.log(-jnp.expm1(jnp.minimum(a, -1e-6)))

    mid = jnp.where(lower > 0,
                    log_sf_lower + log1mexp(jax.scipy.special.log_ndtr(-upper) - log_sf_lower),
                    log_cdf_upper + log1mexp(jax.scipy.special.log_ndtr(lower) - log_cdf_upper))
    eps = 1e-3 * half_width
    return jnp.where(x < lo + eps, log_cdf_upper, jnp.where(x > hi - eps, log_sf_lower, mid))


def gaussian_log_likelihood(x: jax.Array, mean: jax.Array, logvar: jax.Array) -> jax.Array:
    """Elementwise log N(x; mean, e^logvar), the decoder for continuous (vector) data."""
    return gaussian_log_prob_elementwise(x, mean, logvar)


def _sum(a: jax.Array) -> jax.Array:
    return a.reshape(a.shape[0], -1).sum(-1)


def prior_kl(sched: Schedule, x0: jax.Array) -> jax.Array:
    """L_prior = KL(q(x_{T-1} | x_0) || N(0, I)) per example (nats)."""
    t = jnp.full((x0.shape[0],), sched.num_timesteps - 1, jnp.int32)
    mean, var = process.q_mean_variance(sched, x0, t)
    return _sum(normal_kl(mean, jnp.log(var), 0.0, 0.0))


def vlb_term(sched: Schedule, x0: jax.Array, xt: jax.Array, t: jax.Array, mean: jax.Array,
             logvar: jax.Array, decoder: Callable[[jax.Array, jax.Array, jax.Array], jax.Array]) -> jax.Array:
    """L_t per example (nats): the Gaussian KL for t >= 1, the decoder NLL -log p(x_0|x_t) at t = 0.

    Args:
      sched: the schedule.
      x0, xt: data and its noised version at ``t``.
      t: (batch,) timesteps.
      mean, logvar: p_θ(x_{t-1} | x_t).
      decoder: elementwise log-likelihood ``decoder(x0, mean, logvar)`` of L_0.
    """
    true_mean, _, true_logvar = process.q_posterior(sched, x0, xt, t)
    kl = _sum(normal_kl(true_mean, true_logvar, mean, logvar))
    nll = -_sum(decoder(x0, mean, logvar))
    return jnp.where(t == 0, nll, kl)


def make_decoder(kind: str, value_range: tuple[float, float] = (-1.0, 1.0),
                 num_levels: int | None = None) -> Callable:
    """The L_0 decoder: "discrete" (bins of ``num_levels`` levels over ``value_range``)
    or "continuous" (a Gaussian density, for real-valued data)."""
    if kind == "continuous":
        return gaussian_log_likelihood
    vr = ValueRange(*value_range, num_levels)
    half = vr.level_spacing / 2.0
    return lambda x, mean, logvar: discretized_gaussian_log_likelihood(x, mean, 0.5 * logvar, half,
                                                                       vr.lo, vr.hi)


def full_vlb(sched: Schedule, model_fn: Callable, x0: jax.Array, rng: jax.Array, variance: str,
             decoder: Callable) -> jax.Array:
    """-VLB (nats per example): L_prior + Σ_{t=0}^{T-1} L_t, every term with its own x_t draw.

    One lax.scan over the T timesteps, one network call each.

    Args:
      model_fn: ``(x_t, t) -> (ε̂, v or None)``.
      variance: how σ_t² is chosen (see process.model_log_variance).
    """
    b = x0.shape[0]

    def body(total, inp):
        t_scalar, key = inp
        t = jnp.full((b,), t_scalar, jnp.int32)
        xt = process.q_sample(sched, x0, t, jax.random.normal(key, x0.shape))
        eps, v = model_fn(xt, t)
        mean, logvar, _ = process.p_mean_logvar(sched, xt, t, eps, variance, v)
        return total + vlb_term(sched, x0, xt, t, mean, logvar, decoder), None

    ts = jnp.arange(sched.num_timesteps, dtype=jnp.int32)
    total, _ = jax.lax.scan(body, prior_kl(sched, x0), (ts, jax.random.split(rng, sched.num_timesteps)))
    return total


# -- timestep sampling ---------------------------------------------------------

HISTORY = 10  # losses kept per timestep by the importance sampler (improved DDPM)


def init_loss_history(num_timesteps: int) -> dict:
    """State of the loss-aware sampler: a ring buffer of recent L_t per t."""
    return {"hist": jnp.zeros((num_timesteps, HISTORY), jnp.float32),
            "count": jnp.zeros((num_timesteps,), jnp.int32)}


def sample_timesteps(rng: jax.Array, batch: int, num_timesteps: int,
                     history: dict | None) -> tuple[jax.Array, jax.Array]:
    """Timesteps and their importance weights 1 / (T p_t).

    Uniform without a history (weights 1). With one, the loss-aware sampler of
    Nichol & Dhariwal (2021, §3.3): p_t ∝ √E[L_t²] over the last 10 losses, mixed
    with 0.1% uniform, once every t has 10 losses (uniform until then).
    """
    if history is None:
        return jax.random.randint(rng, (batch,), 0, num_timesteps), jnp.ones((batch,), jnp.float32)
    rms = jnp.sqrt(jnp.mean(history["hist"] ** 2, axis=1))
    p = rms / jnp.maximum(rms.sum(), 1e-12)
    p = 0.999 * p + 0.001 / num_timesteps
    warm = jnp.all(history["count"] >= HISTORY)
    p = jnp.where(warm, p, jnp.full_like(p, 1.0 / num_timesteps))
    t = jax.random.choice(rng, num_timesteps, (batch,), p=p)
    return t, 1.0 / (num_timesteps * p[t])


def update_loss_history(history: dict, t: jax.Array, losses: jax.Array) -> dict:
    """Pushes each example's L_t into its timestep's ring buffer, in batch order: the
    same result as pushing the examples one at a time, so a timestep drawn k times in
    a batch receives all k losses (only its last ``HISTORY``, if k is larger).

    Args:
      history: from :func:`init_loss_history`.
      t: (batch,) int timesteps.
      losses: (batch,) their losses (no gradient flows into the history).

    Returns:
      The updated history.
    """
    same = t[:, None] == t[None, :]
    before = jnp.tril(same, -1).sum(1)  # earlier examples with the same t in this batch
    total = same.sum(1)  # examples with this t in the batch
    slot = (history["count"][t] + before) % HISTORY
    # Only the last HISTORY of a timestep's examples survive a sequential push; dropping
    # the others keeps every scattered (t, slot) pair unique, so the order is defined.
    keep = before >= total - HISTORY
    rows = jnp.where(keep, t, history["hist"].shape[0])  # out of range: dropped
    vals = jax.lax.stop_gradient(losses).astype(jnp.float32)
    hist = history["hist"].at[rows, slot].set(vals, mode="drop")
    count = history["count"].at[t].add(1)
    return {"hist": hist, "count": count}


def bits(nats: jax.Array, dim: int) -> jax.Array:
    """Nats per example -> bits per dimension (gen_jax.data.bits_per_dim)."""
    return bits_per_dim(nats, dim)
