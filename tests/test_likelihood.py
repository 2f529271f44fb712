"""gen_jax.likelihood against independent references (scipy, closed forms, Monte Carlo)."""

from __future__ import annotations

import math

import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from scipy import stats

from gen_jax import likelihood as lk
from gen_jax.data.sources import DataInfo


def test_gaussian_log_densities_match_scipy():
    rng = np.random.default_rng(0)
    x, mean = rng.normal(size=(4, 3, 2)), rng.normal(size=(4, 3, 2))
    log_std = rng.normal(size=(4, 3, 2)) * 0.3
    want = stats.norm.logpdf(x, mean, np.exp(log_std)).reshape(4, -1).sum(1)
    np.testing.assert_allclose(lk.gaussian_log_prob(jnp.asarray(x), mean, log_std), want, rtol=1e-5)
    z, m, lv = rng.normal(size=(5, 6)), rng.normal(size=(5, 6)), rng.normal(size=(5, 6))
    want = [stats.multivariate_normal(m[i], np.diag(np.exp(lv[i]))).logpdf(z[i]) for i in range(5)]
    np.testing.assert_allclose(lk.diag_gaussian_log_prob(jnp.asarray(z), m, lv), want, rtol=1e-5)
    np.testing.assert_allclose(lk.gaussian_log_prob_elementwise(jnp.asarray(z), m, lv),
                               stats.norm.logpdf(z, m, np.exp(0.5 * lv)), rtol=1e-5)
    np.testing.assert_allclose(lk.standard_normal_log_prob(jnp.asarray(x)),
                               stats.norm.logpdf(x).reshape(4, -1).sum(1), rtol=1e-5)


def test_bernoulli_log_prob_matches_scipy():
    rng = np.random.default_rng(1)
    logits, b = rng.normal(size=(3, 7)) * 3, rng.integers(0, 2, size=(3, 7)).astype(np.float32)
    want = stats.bernoulli.logpmf(b, 1 / (1 + np.exp(-logits))).sum(1)
    np.testing.assert_allclose(lk.bernoulli_log_prob(jnp.asarray(b), logits), want, rtol=1e-5)


def test_gaussian_kl_matches_monte_carlo():
    mean, logvar = np.array([[0.5, -1.0, 0.2]]), np.array([[0.3, -0.7, 0.1]])
    z = mean + np.exp(0.5 * logvar) * np.random.default_rng(2).normal(size=(200_000, 3))
    mc = np.mean(stats.norm.logpdf(z, mean, np.exp(0.5 * logvar)).sum(1) - stats.norm.logpdf(z).sum(1))
    assert float(lk.gaussian_kl(jnp.asarray(mean), logvar)[0]) == pytest.approx(mc, abs=0.01)


def test_uniform_density_on_dequantized_levels_is_log2_levels_bits_per_dim():
    """A uniform density on [lo, hi]^D: log p = -D log(hi - lo); with the offset it is the
    uniform distribution over L levels, log2(L) bits/dim."""
    info = DataInfo("digits", "image", (8, 8, 1), 17, 10)
    data = ml_collections.ConfigDict({"value_range": (-1.0, 1.0), "binarize": "none",
                                      "dequantize": "uniform"})
    log_p = -64 * math.log(2.0) + lk.discrete_log_prob_offset(info, data)
    assert float(lk.bits_per_dim(-log_p, 64)) == pytest.approx(math.log2(17))
    undequantized = ml_collections.ConfigDict({**data.to_dict(), "dequantize": "none"})
    assert lk.discrete_log_prob_offset(info, undequantized) is None
    assert lk.discrete_log_prob_offset(DataInfo("moons", "vector", (2,), None, None), data) == 0.0
    assert lk.LOG_2PI == pytest.approx(math.log(2 * math.pi))
