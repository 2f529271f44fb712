"""Maximum-likelihood Gaussian: against numpy moments, scipy densities and the
closed-form maximised likelihood; the "gaussian" Method on digits."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import CONFIGS
from scipy.stats import multivariate_normal

from gen_jax import load_config, registry
from gen_jax.classical.gaussian import fit_gaussian, gaussian_log_prob, gaussian_sample
from gen_jax.classical.methods import ClassicalState
from gen_jax.data import load_split
from gen_jax.errors import ConfigError, DataError


def _correlated(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    a = np.array([[1.0, 0.0, 0.0], [0.8, 0.5, 0.0], [-0.3, 0.2, 0.3]])
    return (rng.normal(size=(n, 3)) @ a.T + np.array([1.0, -2.0, 0.5])).astype(np.float32)


def test_full_mle_matches_numpy_and_scipy():
    x, x_new = _correlated(500, 0), _correlated(50, 1)
    params = fit_gaussian(x, "full")
    np.testing.assert_allclose(params.mean, x.astype(np.float64).mean(0), atol=1e-5)
    cov = np.cov(x.astype(np.float64).T, bias=True)  # the ML (1/N) estimate
    np.testing.assert_allclose(params.covariance, cov, rtol=1e-4, atol=1e-6)
    expected = multivariate_normal(x.mean(0), cov).logpdf(x_new)
    np.testing.assert_allclose(gaussian_log_prob(params, jnp.asarray(x_new)), expected, rtol=1e-4)


def test_diag_mle_matches_scipy_and_regularisation_adds_to_the_diagonal():
    x, x_new = _correlated(500, 2), _correlated(50, 3)
    params = fit_gaussian(x, "diag")
    var = x.astype(np.float64).var(0)
    np.testing.assert_allclose(params.covariance, var, rtol=1e-4)
    expected = multivariate_normal(x.mean(0), np.diag(var)).logpdf(x_new)
    np.testing.assert_allclose(gaussian_log_prob(params, jnp.asarray(x_new)), expected, rtol=1e-4)
    reg = fit_gaussian(x, "full", reg_covar=0.5)
    np.testing.assert_allclose(np.diag(reg.covariance), np.diag(fit_gaussian(x).covariance) + 0.5,
                               rtol=1e-5)


def test_maximised_likelihood_has_its_closed_form():
    # At the ML estimate, mean log-likelihood = -D/2 (1 + log 2π) - ½ log|Σ̂|.
    x = _correlated(400, 4)
    params = fit_gaussian(x)
    d = x.shape[1]
    closed = -0.5 * d * (1 + math.log(2 * math.pi)) - 0.5 * np.linalg.slogdet(
        np.cov(x.astype(np.float64).T, bias=True))[1]
    assert float(jnp.mean(gaussian_log_prob(params, jnp.asarray(x)))) == pytest.approx(closed, abs=1e-4)
    # Any other Gaussian does worse on the same data.
    shifted = params._replace(mean=params.mean + 0.1)
    assert float(jnp.mean(gaussian_log_prob(shifted, jnp.asarray(x)))) < closed - 1e-3


def test_samples_have_the_fitted_moments():
    params = fit_gaussian(_correlated(500, 5))
    s = np.asarray(gaussian_sample(params, jax.random.key(0), 40_000), np.float64)
    np.testing.assert_allclose(s.mean(0), params.mean, atol=0.02)
    np.testing.assert_allclose(np.cov(s.T), params.covariance, atol=0.02)
    d = np.asarray(gaussian_sample(fit_gaussian(_correlated(500, 5), "diag"), jax.random.key(1), 40_000))
    assert abs(np.corrcoef(d[:, 0], d[:, 1])[0, 1]) < 0.03  # diagonal: uncorrelated draws


def test_bad_input_is_rejected_clearly():
    with pytest.raises(DataError, match="2-D array"):
        fit_gaussian(np.zeros(5))
    with pytest.raises(DataError, match="non-finite"):
        fit_gaussian(np.array([[0.0, 1.0], [np.nan, 2.0]]))
    with pytest.raises(ValueError, match="covariance_type"):
        fit_gaussian(np.zeros((4, 2)), "spherical")


def test_gaussian_method_on_digits_reports_the_discrete_likelihood():
    cfg = load_config(CONFIGS / "gaussian_digits.py")
    method = registry.build(cfg)
    x_train, _ = load_split(cfg, "train")
    x_test, _ = load_split(cfg, "test")
    state = jax.jit(method.fit)(jax.random.key(0), x_train)  # as the runtime calls it
    assert isinstance(state, ClassicalState) and int(state.step) == 0
    ref = fit_gaussian(x_train.reshape(len(x_train), -1), "full", cfg.model.reg_covar)
    offset = 64 * math.log(1.0 / 17)  # density of (x + u) / 17 -> probability of the level
    lp = jax.jit(method.log_prob)(state, x_test, None)
    np.testing.assert_allclose(lp, gaussian_log_prob(ref, x_test.reshape(len(x_test), -1)) + offset,
                               rtol=1e-5)
    metrics = jax.jit(method.eval_step)(state, {"x": x_test}, jax.random.key(1))
    assert float(metrics["nll_bpd"]) == pytest.approx(-float(lp.mean()) / (64 * math.log(2)), rel=1e-5)
    assert 2.0 < float(metrics["nll_bpd"]) < math.log2(17)  # better than uniform over 17 levels
    samples = method.sample(state, jax.random.key(2), 8)
    assert samples.shape == (8, 8, 8, 1) and float(samples.min()) >= 0 and float(samples.max()) <= 1
    with pytest.raises(ConfigError, match="dequantize"):
        registry.build(load_config(CONFIGS / "gaussian_digits.py", **{"data.dequantize": "none"}))
