"""Schedules, forward process, posterior, parameterizations, KL / decoder terms and the
VLB, each checked against an independent reference (Gaussian conditioning, scipy,
Monte Carlo, the true NLL of Gaussian data)."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from gen_jax.diffusion import losses, process
from gen_jax.diffusion.schedules import get_schedule
from gen_jax.errors import ConfigError

MU = np.array([0.5, -0.3])
LCHOL = np.array([[0.6, 0.0], [0.3, 0.4]])
SIGMA = LCHOL @ LCHOL.T


def exact_eps(sched):
    """ε*(x_t, t) = √(1-ᾱ) (ᾱ Σ + (1-ᾱ) I)^{-1} (x_t - √ᾱ μ) for data N(MU, SIGMA)."""
    ab = jnp.asarray(sched.alphas_cumprod, jnp.float32)
    d, u = np.linalg.eigh(SIGMA)  # (a Σ + (1-a) I)^-1 = U diag(1 / (a d + 1 - a)) Uᵀ
    u, d, mu = jnp.asarray(u, jnp.float32), jnp.asarray(d, jnp.float32), jnp.asarray(MU, jnp.float32)

    def fn(x, t):
        a = ab[t][:, None]
        r = (x - jnp.sqrt(a) * mu) @ u
        return jnp.sqrt(1 - a) * (r / (a * d + 1 - a)) @ u.T

    return fn


def test_schedule_identities():
    lin = get_schedule("linear", 1000)
    assert lin.betas[0] == pytest.approx(1e-4) and lin.betas[-1] == pytest.approx(0.02)
    short = get_schedule("linear", 100)  # both ends scaled by 1000 / T
    assert short.betas[0] == pytest.approx(1e-3) and short.betas[-1] == pytest.approx(0.2)
    for s in (lin, get_schedule("cosine", 1000), short):
        np.testing.assert_allclose(s.alphas_cumprod, np.cumprod(1 - s.betas), rtol=1e-12)
        np.testing.assert_allclose(s.alphas_cumprod[1:] / s.alphas_cumprod[:-1], s.alphas[1:], rtol=1e-10)
        ab, abp = s.alphas_cumprod, s.alphas_cumprod_prev
        # Var and mean of x_{t-1} | x_t, x_0 by Gaussian conditioning of the joint
        # (x_{t-1}, x_t) | x_0: Var = 1-ᾱ_{t-1}, 1-ᾱ_t; Cov = √α_t (1-ᾱ_{t-1}).
        cov = np.sqrt(s.alphas) * (1 - abp)
        np.testing.assert_allclose(s.posterior_variance, (1 - abp) - cov**2 / (1 - ab), atol=1e-12)
        np.testing.assert_allclose(s.posterior_mean_coef2, cov / (1 - ab), rtol=1e-10)
        np.testing.assert_allclose(s.posterior_mean_coef1,
                                   np.sqrt(abp) - cov / (1 - ab) * np.sqrt(ab), atol=1e-12)
        np.testing.assert_allclose(s.log_snr, np.log(ab / (1 - ab)), rtol=1e-10)
        assert np.all(np.diff(s.log_snr) < 0)
        assert s.posterior_variance[0] == 0 and np.all(np.isfinite(s.posterior_log_variance_clipped))
    cos = get_schedule("cosine", 1000)
    f = lambda t: np.cos((t + 0.008) / 1.008 * np.pi / 2) ** 2  # noqa: E731
    assert cos.alphas_cumprod[0] == pytest.approx(f(1 / 1000) / f(0), rel=1e-9)
    assert cos.betas.max() == pytest.approx(0.999) and cos.alphas_cumprod[-1] < 1e-6
    with pytest.raises(ConfigError, match="known: linear, cosine"):
        get_schedule("sigmoid", 10)


def test_forward_moments_posterior_and_parameterizations():
    sched = get_schedule("cosine", 100)
    rng = np.random.default_rng(0)
    x0 = jnp.asarray(rng.normal(size=(3, 4)), jnp.float32)
    t = jnp.array([0, 40, 99])
    n = 40_000
    noise = jax.random.normal(jax.random.key(0), (n, 3, 4))
    xt = jax.vmap(lambda e: process.q_sample(sched, x0, t, e))(noise)
    mean, var = process.q_mean_variance(sched, x0, t)
    ab = sched.alphas_cumprod[np.asarray(t)][:, None]
    np.testing.assert_allclose(mean, np.sqrt(ab) * np.asarray(x0), rtol=1e-5)
    np.testing.assert_allclose(xt.mean(0), mean, atol=4 * np.sqrt(var.max() / n))
    np.testing.assert_allclose(xt.var(0), var, rtol=0.05, atol=1e-6)
    # Posterior mean in the ε form: μ̃ = (x_t - β_t / √(1-ᾱ_t) ε) / √α_t.
    eps = jnp.asarray(rng.normal(size=(3, 4)), jnp.float32)
    t2 = jnp.array([1, 40, 99])
    xt1 = process.q_sample(sched, x0, t2, eps)
    mu_post, _, _ = process.q_posterior(sched, x0, xt1, t2)
    b = sched.betas[np.asarray(t2)][:, None]
    a2 = sched.alphas_cumprod[np.asarray(t2)][:, None]
    want = (np.asarray(xt1) - b / np.sqrt(1 - a2) * np.asarray(eps)) / np.sqrt(1 - b)
    np.testing.assert_allclose(mu_post, want, rtol=1e-4, atol=1e-4)
    m_eps, _, _ = process.p_mean_logvar(sched, xt1, t2, eps, "beta_tilde")
    np.testing.assert_allclose(m_eps, want, rtol=1e-4, atol=1e-4)
    # ε / x0 / v conversions invert each other.
    v = process.v_from_eps(sched, xt1, t2, eps)
    np.testing.assert_allclose(v, process.target("v", sched, x0, xt1, t2, eps), atol=1e-4)
    np.testing.assert_allclose(process.to_eps("v", sched, xt1, t2, v), eps, atol=1e-4)
    np.testing.assert_allclose(process.x0_from_v(sched, xt1, t2, v), x0, atol=1e-4)
    np.testing.assert_allclose(process.to_eps("x0", sched, xt1, t2, x0), eps, atol=2e-3)
    np.testing.assert_allclose(process.x0_from_eps(sched, xt1, t2, eps), x0, atol=2e-3)


def test_kl_decoder_and_learned_variance_against_references():
    rng = np.random.default_rng(1)
    m1, m2 = rng.normal(size=5), rng.normal(size=5)
    l1, l2 = rng.normal(size=5) * 0.5, rng.normal(size=5) * 0.5
    kl = np.asarray(jax.jit(losses.normal_kl)(m1, l1, m2, l2))
    z = m1 + np.exp(0.5 * l1) * rng.normal(size=(200_000, 5))
    mc = (stats.norm.logpdf(z, m1, np.exp(0.5 * l1)) - stats.norm.logpdf(z, m2, np.exp(0.5 * l2))).mean(0)
    np.testing.assert_allclose(kl, mc, atol=0.02)
    # Discretized decoder over 17 levels in (-1, 1): bin half-width 1/16, edges open.
    levels = np.linspace(-1, 1, 17)
    mean, log_scale = 0.13, np.log(0.3)
    decoder = jax.jit(losses.discretized_gaussian_log_likelihood, static_argnums=(3, 4, 5))
    got = np.exp(np.asarray(decoder(jnp.asarray(levels), mean, log_scale, 1 / 16, -1.0, 1.0)))
    cdf = stats.norm(mean, 0.3).cdf
    want = np.array([cdf(v + 1 / 16) - (0 if i == 0 else cdf(v - 1 / 16)) if i < 16 else 1 - cdf(v - 1 / 16)
                     for i, v in enumerate(levels)])
    np.testing.assert_allclose(got, want, rtol=1e-4)
    assert got.sum() == pytest.approx(1.0, abs=1e-5)
    # A far tail stays finite (the survival-function branch).
    far = decoder(jnp.asarray([0.875, 0.0]), -0.9, np.log(0.05), 1 / 16, -1.0, 1.0)
    assert np.isfinite(far).all() and float(far[0]) < -100
    sched = get_schedule("linear", 100)
    t = jnp.array([5, 50])
    lv = process.model_log_variance(sched, "learned", t, (2, 1), jnp.array([[1.0], [-1.0]]))
    np.testing.assert_allclose(lv[:, 0], [np.log(sched.betas[5]), sched.posterior_log_variance_clipped[50]],
                               rtol=1e-5)


def test_vlb_of_exact_model_on_gaussian_data_is_close_to_true_nll():
    sched = get_schedule("linear", 1000)
    x = jnp.asarray(np.random.default_rng(2).multivariate_normal(MU, SIGMA, 500), jnp.float32)
    eps = exact_eps(sched)
    vlb = jax.jit(lambda x, scale: losses.full_vlb(
        sched, lambda xt, t: (scale * eps(xt, t), None), x, jax.random.key(0), "beta",
        losses.make_decoder("continuous")))
    nelbo = vlb(x, 1.0)
    true_nll = -stats.multivariate_normal(MU, SIGMA).logpdf(np.asarray(x))
    got, want = losses.bits(float(nelbo.mean()), 2), losses.bits(float(true_nll.mean()), 2)
    # A bound: above the true NLL, by little for the exact ε (and it cannot match a wrong model).
    assert want - 0.005 < got < want + 0.03, (got, want)
    wrong = vlb(x, 0.9)
    assert losses.bits(float(wrong.mean()), 2) > want + 0.05


def test_importance_sampler_follows_loss_history():
    hist = losses.init_loss_history(4)
    draw = jax.jit(losses.sample_timesteps, static_argnums=(1, 2))
    t, w = draw(jax.random.key(0), 20_000, 4, hist)
    np.testing.assert_allclose(w, 1.0)  # uniform until every t has 10 losses

    def push(hist, i):
        losses_i = jnp.array([1.0, 1.0, 1.0, 7.0]) * (1 + i % 2)
        return losses.update_loss_history(hist, jnp.arange(4), losses_i), None

    hist, _ = jax.jit(lambda h: jax.lax.scan(push, h, jnp.arange(10)))(hist)
    assert int(hist["count"].min()) == 10
    t, w = draw(jax.random.key(1), 20_000, 4, hist)
    frac = np.bincount(np.asarray(t), minlength=4) / 20_000
    np.testing.assert_allclose(frac, [0.1, 0.1, 0.1, 0.7], atol=0.015)
    # Weights 1 / (T p_t) make the estimate of a sum over t unbiased.
    np.testing.assert_allclose(float(jnp.mean(w * jnp.asarray([1.0, 2.0, 3.0, 4.0])[t])) * 4, 10.0, rtol=0.03)
    assert math.isclose(float(w[t == 3][0]), 1 / (4 * (0.999 * 0.7 + 0.001 / 4)), rel_tol=1e-4)


def _numpy_history_push(hist, count, t, values):
    """The loss-aware sampler's history, one example at a time (the reference)."""
    hist, count = hist.copy(), count.copy()
    for ti, v in zip(t, values, strict=True):
        hist[ti, count[ti] % losses.HISTORY] = v
        count[ti] += 1
    return hist, count


def test_loss_history_keeps_every_repeated_timestep():
    """A timestep drawn k times in one batch gets all k losses, in batch order (not one
    loss and k - 1 stale slots), including k > HISTORY and wrap-around."""
    rng = np.random.default_rng(0)
    big_t = 5
    hist = losses.init_loss_history(big_t)
    ref_h, ref_c = np.asarray(hist["hist"]), np.asarray(hist["count"])
    update = jax.jit(losses.update_loss_history)
    for batch in (np.array([0, 0, 0, 1, 2, 2]), rng.integers(0, big_t, 40), np.full(13, 3),
                  rng.integers(0, 2, 7), np.arange(big_t).repeat(3)):
        vals = rng.uniform(1.0, 2.0, len(batch)).astype(np.float32)
        hist = update(hist, jnp.asarray(batch, jnp.int32), jnp.asarray(vals))
        ref_h, ref_c = _numpy_history_push(ref_h, ref_c, batch, vals)
        np.testing.assert_array_equal(hist["count"], ref_c)
        np.testing.assert_array_equal(hist["hist"], ref_h)
