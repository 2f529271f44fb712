"""GAN objectives: discriminator and generator losses from D's raw outputs.

Every function takes the discriminator's raw outputs (logits for the
cross-entropy objectives, scores for the others) on real and generated data
and returns a scalar to *minimize*. D outputs of any shape (a PatchGAN's map)
are averaged over all their elements.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from gen_jax.errors import ConfigError

OBJECTIVES = ("minimax", "nonsaturating", "lsgan", "wgan", "wgan_gp", "hinge")


def _mean(x: jax.Array, weights: jax.Array | None) -> jax.Array:
    """Mean over all elements, or the per-example ``weights``-weighted mean."""
    if weights is None:
        return jnp.mean(x)
    per_example = x.reshape(x.shape[0], -1).mean(-1)
    return jnp.sum(per_example * weights) / jnp.maximum(jnp.sum(weights), 1e-8)


def bce_d_loss(real: jax.Array, fake: jax.Array, smoothing: float = 0.0,
               real_w: jax.Array | None = None, fake_w: jax.Array | None = None) -> jax.Array:
    """Discriminator loss of the original GAN (Goodfellow et al., 2014).

    L_D = -E[t log D(x) + (1 - t) log(1 - D(x))] - E[log(1 - D(G(z)))], D = sigmoid(logit),
    with real target t = 1 - ``smoothing`` (one-sided label smoothing, Salimans et al.,
    2016: only the real targets are softened).
    """
    t = 1.0 - smoothing
    # -log sigmoid(a) = softplus(-a) and -log(1 - sigmoid(a)) = softplus(a).
    real_term = t * jax.nn.softplus(-real) + (1.0 - t) * jax.nn.softplus(real)
    return _mean(real_term, real_w) + _mean(jax.nn.softplus(fake), fake_w)


def minimax_g_loss(fake: jax.Array, w: jax.Array | None = None) -> jax.Array:
    """The minimax generator loss E[log(1 - D(G(z)))] (Goodfellow et al., 2014), which
    saturates when D confidently rejects the samples."""
    return -_mean(jax.nn.softplus(fake), w)


def nonsaturating_g_loss(fake: jax.Array, w: jax.Array | None = None) -> jax.Array:
    """The non-saturating generator loss -E[log D(G(z))] (Goodfellow et al., 2014, Sec. 3)."""
    return _mean(jax.nn.softplus(-fake), w)


def lsgan_d_loss(real: jax.Array, fake: jax.Array, a: float, b: float,
                 real_w: jax.Array | None = None, fake_w: jax.Array | None = None) -> jax.Array:
    """Least-squares GAN (Mao et al., 2017): L_D = 1/2 E[(D(x) - b)^2] + 1/2 E[(D(G(z)) - a)^2]."""
    return 0.5 * _mean((real - b) ** 2, real_w) + 0.5 * _mean((fake - a) ** 2, fake_w)


def lsgan_g_loss(fake: jax.Array, c: float, w: jax.Array | None = None) -> jax.Array:
    """Least-squares GAN (Mao et al., 2017): L_G = 1/2 E[(D(G(z)) - c)^2]."""
    return 0.5 * _mean((fake - c) ** 2, w)


def wasserstein_d_loss(real: jax.Array, fake: jax.Array, real_w: jax.Array | None = None,
                       fake_w: jax.Array | None = None) -> jax.Array:
    """Wasserstein GAN critic loss (Arjovsky et al., 2017): E[D(G(z))] - E[D(x)]."""
    return _mean(fake, fake_w) - _mean(real, real_w)


def wasserstein_g_loss(fake: jax.Array, w: jax.Array | None = None) -> jax.Array:
    """Generator loss shared by WGAN, WGAN-GP and the hinge GAN: -E[D(G(z))]."""
    return -_mean(fake, w)


def hinge_d_loss(real: jax.Array, fake: jax.Array, real_w: jax.Array | None = None,
                 fake_w: jax.Array | None = None) -> jax.Array:
    """Hinge loss (Lim & Ye, 2017; Miyato et al., 2018): E[relu(1 - D(x))] + E[relu(1 + D(G(z)))]."""
    return _mean(jax.nn.relu(1.0 - real), real_w) + _mean(jax.nn.relu(1.0 + fake), fake_w)


def gradient_penalty(critic: Callable[[jax.Array], jax.Array], real: jax.Array, fake: jax.Array,
                     rng: jax.Array) -> jax.Array:
    """WGAN-GP penalty (Gulrajani et al., 2017): E[(||grad_x D(x_hat)||_2 - 1)^2] on random
    interpolates x_hat = eps x + (1 - eps) G(z), eps ~ U[0, 1] per example.

    Args:
      critic: maps a batch to per-example scores (N,) or (N, 1). The gradient is that of
        the summed scores, so it is per example for a critic acting per example; with
        batch-wide features (ProGAN's minibatch stddev) it includes their cross terms,
        as the official ProGAN code computes it.
      real: (N, ...) real batch.
      fake: (N, ...) generated batch.
      rng: key of the interpolation weights.

    Returns:
      The scalar penalty (without the weight lambda).
    """
    eps = jax.random.uniform(rng, (real.shape[0],) + (1,) * (real.ndim - 1))
    x_hat = eps * real + (1.0 - eps) * fake
    # Examples do not interact in the critic, so the gradient of the summed scores
    # w.r.t. x_hat holds every example's own input gradient.
    grads = jax.grad(lambda x: jnp.sum(critic(x)))(x_hat)
    norms = jnp.sqrt(jnp.sum(grads.reshape(grads.shape[0], -1) ** 2, axis=-1) + 1e-12)
    return jnp.mean((norms - 1.0) ** 2)


def get_losses(objective: str, label_smoothing: float = 0.0,
               lsgan_abc: tuple[float, float, float] = (0.0, 1.0, 1.0)):
    """(d_loss(real, fake, real_w=None, fake_w=None), g_loss(fake, w=None)) of an objective.

    Args:
      objective: one of OBJECTIVES ("wgan" and "wgan_gp" share their losses; the
        clipping and the penalty are applied by the Method).
      label_smoothing: one-sided label smoothing of the real targets; only for the
        cross-entropy objectives (minimax, nonsaturating).
      lsgan_abc: LSGAN targets (a fake, b real, c generator's target for fakes).

    Returns:
      The two loss functions.
    """
    if objective not in OBJECTIVES:
        raise ConfigError(f"unknown GAN objective {objective!r}; known: {', '.join(OBJECTIVES)}")
    if label_smoothing and objective not in ("minimax", "nonsaturating"):
        raise ConfigError("label smoothing applies to the cross-entropy objectives (minimax, "
                          f"nonsaturating), not {objective!r}")
    if not 0.0 <= label_smoothing < 1.0:
        raise ConfigError(f"label smoothing must be in [0, 1), got {label_smoothing}")
    if objective in ("minimax", "nonsaturating"):
        def d_loss(real, fake, real_w=None, fake_w=None):
            return bce_d_loss(real, fake, label_smoothing, real_w, fake_w)
        return d_loss, minimax_g_loss if objective == "minimax" else nonsaturating_g_loss
    if objective == "lsgan":
        a, b, c = (float(v) for v in lsgan_abc)
        return (lambda r, f, rw=None, fw=None: lsgan_d_loss(r, f, a, b, rw, fw),
                lambda f, w=None: lsgan_g_loss(f, c, w))
    if objective == "hinge":
        return hinge_d_loss, wasserstein_g_loss
    return wasserstein_d_loss, wasserstein_g_loss
