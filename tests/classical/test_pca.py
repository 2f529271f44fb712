"""PCA both ways (covariance and Gram), probabilistic PCA, robust projection:
against scikit-learn's PCA, scipy's Gaussian density and occluded digits."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import CONFIGS
from scipy.stats import multivariate_normal
from sklearn.decomposition import PCA as SkPCA

from gen_jax import load_config, registry
from gen_jax.classical.pca import (
    explained_variance_ratio,
    fit_pca,
    pca_block_robust_project,
    pca_project,
    pca_reconstruct,
    pca_robust_project,
    ppca_log_prob,
    ppca_sample,
)
from gen_jax.data import load_split
from gen_jax.errors import ConfigError, DataError

# Jitted once (eagerly, each op would compile on its own).
_project = jax.jit(pca_project)
_reconstruct = jax.jit(pca_reconstruct)
_ppca_log_prob = jax.jit(ppca_log_prob)
_ppca_sample = jax.jit(ppca_sample, static_argnums=2, static_argnames="noise")


@pytest.fixture(scope="module")
def digits():
    """Dequantized digits in [0, 1) as (N, 64): (train, test)."""
    cfg = load_config(CONFIGS / "pca_digits.py")
    x_train, _ = load_split(cfg, "train")
    x_test, _ = load_split(cfg, "test")
    return x_train.reshape(len(x_train), -1), x_test.reshape(len(x_test), -1)


def _assert_same_up_to_sign(a, b, atol):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    signs = np.sign(np.sum(a * b, axis=1, keepdims=True))
    np.testing.assert_allclose(a * signs, b, atol=atol)


def test_matches_sklearn_pca(digits):
    x, x_test = digits
    n = len(x)
    ours = fit_pca(x, 10)
    sk = SkPCA(10).fit(x.astype(np.float64))
    _assert_same_up_to_sign(ours.components, sk.components_, atol=2e-3)
    # sklearn divides by N - 1, this module by N (the ML estimate PPCA needs).
    np.testing.assert_allclose(np.asarray(ours.explained_variance) * n / (n - 1), sk.explained_variance_,
                               rtol=1e-4)
    np.testing.assert_allclose(explained_variance_ratio(ours), sk.explained_variance_ratio_, rtol=1e-4)
    np.testing.assert_allclose(float(ours.noise_variance) * n / (n - 1), sk.noise_variance_, rtol=1e-3)
    z = np.asarray(_project(ours, jnp.asarray(x_test)))
    _assert_same_up_to_sign(z.T, sk.transform(x_test).T, atol=5e-3)
    np.testing.assert_allclose(_reconstruct(ours, jnp.asarray(z)),
                               sk.inverse_transform(sk.transform(x_test)), atol=2e-3)
    # On the training data the coefficients are uncorrelated with variances λ_i.
    z_train = np.asarray(_project(ours, jnp.asarray(x)), np.float64)
    np.testing.assert_allclose(z_train.T @ z_train / n, np.diag(ours.explained_variance), atol=1e-4)


def test_gram_path_agrees_with_covariance_path_and_sklearn(digits):
    # 40 images of 64 pixels: D > N, so "auto" takes the inner-product (Gram) path.
    x = digits[0][:40]
    auto, cov, gram = fit_pca(x, 12), fit_pca(x, 12, "covariance"), fit_pca(x, 12, "gram")
    np.testing.assert_allclose(auto.components, gram.components)  # auto chose Gram
    _assert_same_up_to_sign(gram.components, cov.components, atol=2e-3)
    np.testing.assert_allclose(gram.explained_variance, cov.explained_variance, rtol=1e-4)
    np.testing.assert_allclose(gram.noise_variance, cov.noise_variance, rtol=1e-3)
    sk = SkPCA(12).fit(x.astype(np.float64))
    _assert_same_up_to_sign(gram.components, sk.components_, atol=2e-3)
    np.testing.assert_allclose(np.asarray(gram.explained_variance) * 40 / 39, sk.explained_variance_,
                               rtol=1e-4)
    rows = np.asarray(gram.components, np.float64)
    np.testing.assert_allclose(rows @ rows.T, np.eye(12), atol=1e-4)  # u_i = X̂u'_i / sqrt(Nλ'_i) is unit


def test_ppca_log_prob_matches_scipy_and_samples_have_its_covariance(digits):
    x, x_test = digits
    params = fit_pca(x, 10)
    lam, s2 = np.asarray(params.explained_variance, np.float64), float(params.noise_variance)
    u = np.asarray(params.components, np.float64).T                     # (D, M)
    w = u * np.sqrt(lam - s2)                                           # Tipping & Bishop's W
    cov = w @ w.T + s2 * np.eye(64)
    expected = multivariate_normal(np.asarray(params.mean, np.float64), cov).logpdf(x_test[:50])
    np.testing.assert_allclose(_ppca_log_prob(params, jnp.asarray(x_test[:50])), expected, rtol=1e-4)
    # sklearn's probabilistic-PCA score (with its N-1 variances) is close but not equal.
    sk_mean = SkPCA(10).fit(x.astype(np.float64)).score(x_test)
    assert float(jnp.mean(_ppca_log_prob(params, jnp.asarray(x_test)))) == pytest.approx(sk_mean, rel=1e-2)
    s = np.asarray(_ppca_sample(params, jax.random.key(0), 40_000), np.float64)
    np.testing.assert_allclose(np.cov(s.T), cov, atol=6e-3)
    clean = np.asarray(_ppca_sample(params, jax.random.key(1), 2000, noise=False), np.float64)
    resid = (clean - np.asarray(params.mean)) @ (np.eye(64) - u @ u.T)
    assert np.abs(resid).max() < 1e-4  # noise-free draws lie in the principal subspace


def _occlude(x: np.ndarray, seed: int, value: float = 1.0,
             shapes=((4, 5), (5, 4))) -> tuple[np.ndarray, np.ndarray]:
    """A block of one of ``shapes`` (default 4x5 or 5x4: 20 of 64 pixels, 31%) set to
    ``value`` at a random place."""
    rng = np.random.default_rng(seed)
    out, known = x.reshape(-1, 8, 8).copy(), np.ones((len(x), 8, 8), bool)
    for i in range(len(x)):
        h, w = shapes[0] if len(shapes) == 1 or rng.random() < 0.5 else shapes[1]
        r, c = rng.integers(0, 9 - h), rng.integers(0, 9 - w)
        out[i, r:r + h, c:c + w] = value
        known[i, r:r + h, c:c + w] = False
    return out.reshape(len(x), -1), known.reshape(len(x), -1)


def test_robust_projection_beats_plain_projection_under_block_occlusion(digits):
    x_train, x_test = digits
    params = fit_pca(x_train, 16)
    clean = x_test[:120]
    occluded, known = _occlude(clean, seed=0)
    mse = lambda z: float(np.mean((np.asarray(_reconstruct(params, z)) - clean) ** 2))
    plain = mse(_project(params, jnp.asarray(occluded)))
    robust = mse(pca_robust_project(params, occluded, key=jax.random.key(0)))
    with_mask = mse(pca_robust_project(params, occluded, known, key=jax.random.key(1)))
    ideal = mse(_project(params, jnp.asarray(clean)))
    # Measured on these 120 images: ideal 0.0097, plain 0.079, robust 0.047,
    # with the mask 0.024.
    assert robust < 0.75 * plain, (robust, plain)
    assert with_mask < 0.5 * plain, (with_mask, plain)
    # Clean inputs keep most of their accuracy (measured 0.0125).
    unharmed = mse(pca_robust_project(params, clean, key=jax.random.key(2)))
    assert unharmed < 1.5 * ideal, (unharmed, ideal)


def test_robust_projection_behind_a_bright_3x3_block_and_given_the_block_size(digits):
    # Issue 14's case: 10 components, a 3x3 block (9 of 64 pixels) at the maximum value.
    x_train, x_test = digits
    params = fit_pca(x_train, 10)
    clean = x_test[:120]
    occluded, known = _occlude(clean, seed=3, shapes=((3, 3),))
    mse = lambda z: float(np.mean((np.asarray(_reconstruct(params, z)) - clean) ** 2))
    plain = mse(_project(params, jnp.asarray(occluded)))
    robust = mse(pca_robust_project(params, occluded, key=jax.random.key(0)))
    with_mask = mse(pca_robust_project(params, occluded, known, key=jax.random.key(1)))
    # Measured on these 120 images: plain 0.0399, robust 0.0283, with the mask 0.0208,
    # told the block size 0.0221.
    assert robust < 0.8 * plain, (robust, plain)
    assert with_mask < 0.6 * plain, (with_mask, plain)
    # Told the block's size but not its place, close to being told the pixels.
    block = mse(pca_block_robust_project(params, occluded, (8, 8), [(3, 3)]))
    assert block < 1.2 * with_mask, (block, with_mask)
    # A block that is not square (its placements are not symmetric under transposition).
    occluded, known = _occlude(clean, seed=4, shapes=((2, 4),))
    block = mse(pca_block_robust_project(params, occluded, (8, 8), [(2, 4)]))
    with_mask = mse(pca_robust_project(params, occluded, known, key=jax.random.key(1)))
    # Measured: plain 0.0364, with the mask 0.0206, told the block size 0.0201.
    assert block < 1.2 * with_mask, (block, with_mask)
    with pytest.raises(ValueError, match="same area"):
        pca_block_robust_project(params, occluded, (8, 8), [(3, 3), (2, 2)])
    with pytest.raises(ValueError, match="image_shape"):
        pca_block_robust_project(params, occluded, (8, 7), [(3, 3)])


def test_bad_input_is_rejected_clearly(digits):
    x = digits[0][:30]
    with pytest.raises(DataError, match="2-D array"):
        fit_pca(x.reshape(30, 8, 8), 3)
    with pytest.raises(DataError, match="non-finite"):
        fit_pca(np.where(np.arange(x.size).reshape(x.shape) == 5, np.nan, x), 3)
    with pytest.raises(DataError, match="at least 2"):
        fit_pca(x[:1], 1)
    with pytest.raises(ValueError, match=r"num_components must be an integer in \[1, min\(D=64, N-1=29\)\]"):
        fit_pca(x, 30)
    with pytest.raises(ValueError, match="method"):
        fit_pca(x, 3, method="svd")
    params = fit_pca(x, 3)
    with pytest.raises(ValueError, match="mask must have shape"):
        pca_robust_project(params, x, np.ones((30, 63), bool), key=jax.random.key(0))
    with pytest.raises(ValueError, match="dimension 10"):
        pca_robust_project(params, x[:, :10], key=jax.random.key(0))


def test_pca_method_reconstructs_and_reports_the_ppca_likelihood():
    cfg = load_config(CONFIGS / "pca_digits.py", **{"model.num_components": 10})
    method = registry.build(cfg)
    x_train, _ = load_split(cfg, "train")
    x_test, _ = load_split(cfg, "test")
    state = jax.jit(method.fit)(jax.random.key(0), x_train)  # as the runtime calls it
    ref = fit_pca(x_train.reshape(len(x_train), -1), 10)
    flat = x_test.reshape(len(x_test), -1)
    np.testing.assert_allclose(jax.jit(method.log_prob)(state, x_test, None),
                               _ppca_log_prob(ref, flat) + 64 * math.log(1 / 17), rtol=1e-5)
    recon = jax.jit(method.reconstruct)(state, x_test[:8])
    assert recon.shape == (8, 8, 8, 1)
    np.testing.assert_allclose(recon.reshape(8, -1),
                               np.clip(_reconstruct(ref, _project(ref, flat[:8])), 0, 1), atol=1e-4)
    assert jax.jit(method.encode)(state, x_test[:8]).shape == (8, 10)
    samples = jax.jit(method.sample, static_argnums=2)(state, jax.random.key(1), 5)
    assert samples.shape == (5, 8, 8, 1) and 0 <= float(samples.min()) and float(samples.max()) <= 1
    with pytest.raises(ConfigError, match="num_components"):
        registry.build(load_config(CONFIGS / "pca_digits.py", **{"model.num_components": 64}))
