"""Gaussian mixtures by EM: recovery of a known mixture, monotone EM, agreement
with scikit-learn's GaussianMixture, sampling, bad input, the "gmm" Method."""

from __future__ import annotations

import math
import subprocess
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import CONFIGS, PYTHON, REPO, subprocess_env
from scipy.optimize import linear_sum_assignment
from sklearn.cluster import KMeans
from sklearn.datasets import load_digits
from sklearn.decomposition import PCA
from sklearn.mixture import GaussianMixture
from threadpoolctl import threadpool_limits

from gen_jax import load_config, registry
from gen_jax.classical.gmm import (
    GMMParams,
    fit_gmm,
    gmm_em,
    gmm_log_prob,
    gmm_predict,
    gmm_predict_proba,
    gmm_sample,
)
from gen_jax.data import load_split
from gen_jax.errors import ConfigError, DataError

# Jitted once (eagerly, each op would compile on its own).
_log_prob = jax.jit(gmm_log_prob)
_predict = jax.jit(gmm_predict)
_predict_proba = jax.jit(gmm_predict_proba)
_sample = jax.jit(gmm_sample, static_argnums=2)

TRUE_WEIGHTS = np.array([0.5, 0.3, 0.2])
TRUE_MEANS = np.array([[-4.0, 0.0], [4.0, 0.0], [0.0, 5.0]])
TRUE_VARS = np.array([[1.0, 0.5], [0.3, 1.5], [0.8, 0.8]])  # diagonal covariances


def _known_mixture(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.choice(3, size=n, p=TRUE_WEIGHTS)
    x = TRUE_MEANS[labels] + rng.normal(size=(n, 2)) * np.sqrt(TRUE_VARS[labels])
    return x.astype(np.float32), labels


@pytest.fixture(scope="module")
def digits10():
    """Dequantized digits after PCA to 10 dimensions (fitted on the training split)."""
    cfg = load_config(CONFIGS / "gmm_digits.py")
    x_train, _ = load_split(cfg, "train")
    x_test, _ = load_split(cfg, "test")
    pca = PCA(10).fit(x_train.reshape(len(x_train), -1))
    project = lambda x: pca.transform(x.reshape(len(x), -1)).astype(np.float32)
    return project(x_train), project(x_test)


def _matched(fitted_means: np.ndarray) -> np.ndarray:
    """Permutation putting fitted components in the order of TRUE_MEANS."""
    cost = ((fitted_means[:, None] - TRUE_MEANS[None]) ** 2).sum(-1)
    rows, cols = linear_sum_assignment(cost)
    return rows[np.argsort(cols)]


def test_recovers_a_known_mixture():
    x, labels = _known_mixture(1500, 0)
    params = fit_gmm(x, 3, jax.random.key(0), "full", num_restarts=3)
    order = _matched(np.asarray(params.means))
    np.testing.assert_allclose(np.asarray(params.means)[order], TRUE_MEANS, atol=0.12)
    np.testing.assert_allclose(np.asarray(params.weights)[order], TRUE_WEIGHTS, atol=0.03)
    cov = np.asarray(params.covariances)[order]
    np.testing.assert_allclose(np.diagonal(cov, axis1=1, axis2=2), TRUE_VARS, rtol=0.15)
    assert np.abs(cov[:, 0, 1]).max() < 0.1  # the true components are axis-aligned
    assert bool(params.converged) and int(params.num_iters) >= 1
    predicted = np.argsort(order)[np.asarray(_predict(params, jnp.asarray(x)))]
    assert np.mean(predicted == labels) > 0.98
    proba = np.asarray(_predict_proba(params, jnp.asarray(x[:50])))
    np.testing.assert_allclose(proba.sum(1), 1.0, atol=1e-5)
    # EM never lowers the likelihood: the recorded trace is non-decreasing.
    trace = np.asarray(params.log_likelihood_trace)[: int(params.num_iters) + 1]
    assert np.all(np.diff(trace) >= -1e-5)
    assert float(params.log_likelihood) == pytest.approx(float(jnp.mean(_log_prob(params, x))),
                                                         abs=1e-5)


def test_diag_test_likelihood_within_1pct_of_sklearn_best_of_restarts(digits10):
    x_train, x_test = digits10
    ours = fit_gmm(x_train, 10, jax.random.key(0), "diag", max_iters=300, tol=1e-4, num_restarts=10)
    sk = GaussianMixture(10, covariance_type="diag", n_init=10, max_iter=300, tol=1e-4,
                         init_params="k-means++", random_state=0).fit(x_train)
    ours_test = float(jnp.mean(_log_prob(ours, jnp.asarray(x_test))))
    assert ours_test == pytest.approx(sk.score(x_test), rel=0.01)
    assert float(ours.log_likelihood) == pytest.approx(sk.score(x_train), rel=0.01)
    trace = np.asarray(ours.log_likelihood_trace)[: int(ours.num_iters) + 1]
    assert np.all(np.diff(trace) >= -1e-5)  # EM is monotone for diagonal covariances too


def test_full_fit_reaches_sklearn_optimum_with_the_same_restarts():
    # Issue 14's setting: digits / 16, PCA to 10 dimensions, K=10 full, 5 restarts.
    # Both initialise each restart with k-means++ then Lloyd's k-means. Measured
    # (experiments/gmm_vs_sklearn.py) seeds 0/1/2: ours -3.905/-3.897/-3.896,
    # sklearn -3.903/-3.905/-3.908; with k-means++ centres alone as the start
    # (the old init) ours was -3.977/-3.960/-3.889, 0.07 below on two seeds.
    z = PCA(10).fit_transform(load_digits().data / 16.0)
    for seed in (0, 1, 2):
        ours = fit_gmm(z.astype(np.float32), 10, jax.random.key(seed), "full", max_iters=100,
                       tol=1e-3, num_restarts=5, reg_covar=1e-6)
        with threadpool_limits(1):  # sklearn's OpenMP k-means is ~20x slower on a shared 2-core box
            sk = GaussianMixture(10, covariance_type="full", n_init=5, max_iter=100, tol=1e-3,
                                 reg_covar=1e-6, random_state=seed).fit(z)
        # Restarts land in different local optima; 0.01 nats is ~1/7 of the old gap.
        assert float(ours.log_likelihood) >= sk.score(z) - 0.01, (seed, float(ours.log_likelihood),
                                                                  sk.score(z))


@pytest.fixture(scope="module")
def same_start_fits(digits10):
    """Full-covariance K=10 EM by us and by sklearn from one k-means partition."""
    x_train, _ = digits10
    labels = KMeans(10, n_init=1, random_state=0).fit_predict(x_train)
    x64 = x_train.astype(np.float64)
    weights = np.bincount(labels, minlength=10) / len(labels)
    means = np.stack([x64[labels == k].mean(0) for k in range(10)])
    covs = np.stack([np.cov(x64[labels == k].T, bias=True) + 1e-6 * np.eye(10) for k in range(10)])
    ours = gmm_em(x_train, weights, means, covs, max_iters=500, tol=1e-5)
    sk = GaussianMixture(10, covariance_type="full", weights_init=weights, means_init=means,
                         precisions_init=np.linalg.inv(covs), max_iter=500, tol=1e-5,
                         init_params="random").fit(x64)  # the *_init arguments override it
    return ours, sk


def test_full_em_matches_sklearn_from_the_same_start(digits10, same_start_fits):
    # Full-covariance K=10 fits on these data have many local optima whose test
    # likelihoods differ by several percent (for sklearn across its own seeds
    # too), so EM itself is compared: both start from the same k-means partition.
    x_train, x_test = digits10
    ours, sk = same_start_fits
    assert bool(ours.converged) and sk.converged_
    ours_test = float(jnp.mean(_log_prob(ours, jnp.asarray(x_test))))
    assert ours_test == pytest.approx(sk.score(x_test), rel=1e-3)
    assert float(ours.log_likelihood) == pytest.approx(sk.score(x_train), rel=1e-3)
    np.testing.assert_allclose(ours.means, sk.means_, atol=1e-2)


def test_em_never_decreases_the_likelihood_on_digits(same_start_fits):
    ours, _ = same_start_fits
    n = int(ours.num_iters)
    trace = np.asarray(ours.log_likelihood_trace)
    assert n >= 10  # a long run, so monotonicity says something
    assert np.all(np.isfinite(trace[: n + 1])) and np.all(np.isnan(trace[n + 1:]))
    assert np.all(np.diff(trace[: n + 1]) >= -1e-5), np.diff(trace[: n + 1]).min()
    assert trace[n] > trace[0] + 0.05


def test_log_prob_and_predictions_match_sklearn_on_its_own_fit(digits10):
    x_train, x_test = digits10
    sk = GaussianMixture(4, covariance_type="full", init_params="k-means++", random_state=0).fit(x_train)
    params = GMMParams(jnp.asarray(sk.weights_, jnp.float32), jnp.asarray(sk.means_, jnp.float32),
                       jnp.asarray(sk.covariances_, jnp.float32), *([None] * 4))
    np.testing.assert_allclose(_log_prob(params, jnp.asarray(x_test)), sk.score_samples(x_test),
                               rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(_predict_proba(params, jnp.asarray(x_test)), sk.predict_proba(x_test),
                               atol=1e-4)
    assert np.mean(np.asarray(_predict(params, jnp.asarray(x_test))) == sk.predict(x_test)) > 0.99


@pytest.mark.parametrize("covariance_type", ["full", "diag"])
def test_samples_follow_the_mixture(covariance_type):
    cov = np.stack([np.diag(v) for v in TRUE_VARS]) if covariance_type == "full" else TRUE_VARS
    params = GMMParams(*(jnp.asarray(a, jnp.float32) for a in (TRUE_WEIGHTS, TRUE_MEANS, cov)),
                       *([None] * 4))
    s = np.asarray(_sample(params, jax.random.key(0), 40_000))
    assert s.shape == (40_000, 2)
    np.testing.assert_allclose(np.bincount(np.asarray(_predict(params, jnp.asarray(s))), minlength=3)
                               / len(s), TRUE_WEIGHTS, atol=0.01)
    mean = TRUE_WEIGHTS @ TRUE_MEANS
    second = sum(w * (np.diag(v) + np.outer(m, m))
                 for w, m, v in zip(TRUE_WEIGHTS, TRUE_MEANS, TRUE_VARS, strict=True))
    np.testing.assert_allclose(s.mean(0), mean, atol=0.05)
    np.testing.assert_allclose(np.cov(s.T, bias=True), second - np.outer(mean, mean), rtol=0.03, atol=0.05)


_EIGHT_DEVICES = textwrap.dedent("""
    import jax, numpy as np
    from gen_jax import parallel
    from gen_jax.classical import fit_gmm
    rng = np.random.default_rng(0)
    x = (rng.normal(size=(1000, 32)) + 3 * rng.integers(0, 4, size=(1000, 1))).astype(np.float32)
    fit = jax.jit(lambda k: fit_gmm(x, 6, k, "full", num_restarts=4),
                  out_shardings=parallel.replicated(parallel.make_mesh()))
    print("LL", jax.device_count(), repr(float(fit(jax.random.key(0)).log_likelihood)))
""")


def test_full_covariance_fit_runs_replicated_on_eight_cpu_devices():
    # Batched LAPACK Cholesky/triangular solves inside the EM while_loop deadlocked
    # XLA's CPU thread pool at this size with 8 fake devices (the runtime jits
    # init replicated over the mesh); the fit now uses plain-jnp factorisations.
    proc = subprocess.run([PYTHON, "-c", _EIGHT_DEVICES], cwd=REPO, env=subprocess_env(8),
                          capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    _, devices, ll = proc.stdout.split()
    rng = np.random.default_rng(0)
    x = (rng.normal(size=(1000, 32)) + 3 * rng.integers(0, 4, size=(1000, 1))).astype(np.float32)
    one = fit_gmm(x, 6, jax.random.key(0), "full", num_restarts=4)
    # Same fit up to float summation order (EM stops within tol of the same optimum).
    assert devices == "8" and float(ll) == pytest.approx(float(one.log_likelihood), rel=1e-3)


def test_bad_input_is_rejected_clearly():
    key = jax.random.key(0)
    x, _ = _known_mixture(20, 1)
    with pytest.raises(DataError, match="2-D array"):
        fit_gmm(x.reshape(2, 10, 2), 2, key)
    with pytest.raises(DataError, match="non-finite"):
        fit_gmm(np.where(np.arange(40).reshape(20, 2) == 7, np.nan, x), 2, key)
    with pytest.raises(ValueError, match=r"num_components must be an integer in \[1, 20\]"):
        fit_gmm(x, 21, key)
    with pytest.raises(ValueError, match="num_components"):
        fit_gmm(x, 0, key)
    with pytest.raises(ValueError, match="covariance_type"):
        fit_gmm(x, 2, key, covariance_type="spherical")
    with pytest.raises(ValueError, match="max_iters"):
        fit_gmm(x, 2, key, max_iters=0)
    with pytest.raises(ValueError, match="inconsistent shapes"):
        gmm_em(x, np.ones(2) / 2, np.zeros((2, 3)), np.ones((2, 3)))


def test_gmm_method_fits_the_train_split_and_reports_the_discrete_likelihood():
    cfg = load_config(CONFIGS / "gmm_digits.py", **{"model.num_components": 3, "model.num_restarts": 1})
    method = registry.build(cfg)
    x_train, _ = load_split(cfg, "train")
    x_test, _ = load_split(cfg, "test")
    state = jax.jit(method.fit)(jax.random.key(0), x_train)  # as the runtime calls it
    assert state.params.means.shape == (3, 64) and bool(jnp.isfinite(state.params.log_likelihood))
    lp = jax.jit(method.log_prob)(state, x_test, None)
    expected = _log_prob(state.params, x_test.reshape(len(x_test), -1)) + 64 * math.log(1 / 17)
    np.testing.assert_allclose(lp, expected, rtol=1e-5)
    new_state, metrics = jax.jit(method.train_step)(state, {"x": x_test}, jax.random.key(1))
    assert int(new_state.step) == 1
    np.testing.assert_array_equal(new_state.params.means, state.params.means)  # fitted once
    assert float(metrics["loss"]) == pytest.approx(-float(lp.mean()), rel=1e-5)
    samples = jax.jit(method.sample, static_argnums=2)(state, jax.random.key(2), 6)
    assert samples.shape == (6, 8, 8, 1) and 0 <= float(samples.min()) and float(samples.max()) <= 1
    with pytest.raises(ConfigError, match="num_components"):  # more than the training points
        registry.build(load_config(CONFIGS / "gmm_digits.py", **{"model.num_components": 5000})
                       ).fit(jax.random.key(0), x_train)
    with pytest.raises(ConfigError, match="num_components"):
        registry.build(load_config(CONFIGS / "gmm_digits.py", **{"model.num_components": 0}))
    with pytest.raises(ConfigError, match="covariance_type"):
        registry.build(load_config(CONFIGS / "gmm_digits.py", **{"model.covariance_type": "tied"}))
