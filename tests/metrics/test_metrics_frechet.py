"""Fréchet distance vs an independent float64 eigen-decomposition, closed forms, and streaming stats."""

from __future__ import annotations

import numpy as np
import pytest

from gen_jax.metrics import FeatureStats, frechet_distance, frechet_distance_from_moments


def reference_fd(x: np.ndarray, y: np.ndarray) -> float:
    """tr sqrt(S1 S2) = sum sqrt(eig(S1^1/2 S2 S1^1/2)): symmetric eigensolvers only, no sqrtm."""
    m1, m2 = x.mean(0), y.mean(0)
    s1, s2 = np.atleast_2d(np.cov(x, rowvar=False)), np.atleast_2d(np.cov(y, rowvar=False))
    w, v = np.linalg.eigh(s1)
    root1 = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    inner = np.linalg.eigvalsh(root1 @ s2 @ root1)
    tr_root = np.sqrt(np.clip(inner, 0, None)).sum()
    return float(((m1 - m2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * tr_root)


def test_matches_independent_reference_and_is_zero_for_identical_sets():
    rng = np.random.default_rng(0)
    for d in (1, 5, 32):
        x = rng.normal(size=(400, d)) @ rng.normal(size=(d, d))
        y = rng.normal(0.3, 1.5, size=(300, d)) @ rng.normal(size=(d, d)) + 1.0
        got, want = frechet_distance(x, y), reference_fd(x, y)
        assert abs(got - want) / want < 1e-6
        assert frechet_distance(y, x) == pytest.approx(got, rel=1e-8)
        assert abs(frechet_distance(x, x)) < 1e-8 * np.trace(np.atleast_2d(np.cov(x, rowvar=False)))


def test_closed_form_for_known_gaussians():
    # Diagonal (commuting) covariances: d^2 = |m1 - m2|^2 + sum (s1_i - s2_i)^2 over standard deviations.
    m1, m2 = np.array([0.0, 1.0, -2.0]), np.array([1.0, 1.0, 0.0])
    sd1, sd2 = np.array([1.0, 2.0, 0.5]), np.array([3.0, 1.0, 0.5])
    want = ((m1 - m2) ** 2).sum() + ((sd1 - sd2) ** 2).sum()
    got = frechet_distance_from_moments(m1, np.diag(sd1**2), m2, np.diag(sd2**2))
    assert got == pytest.approx(want, rel=1e-12)
    # A rotated pair: the distance is invariant to rotating both Gaussians.
    q, _ = np.linalg.qr(np.random.default_rng(1).normal(size=(3, 3)))
    got = frechet_distance_from_moments(q @ m1, q @ np.diag(sd1**2) @ q.T, q @ m2, q @ np.diag(sd2**2) @ q.T)
    assert got == pytest.approx(want, rel=1e-9)
    # Features whose sample moments are exactly known: +-1 columns give mean 0 and covariance n/(n-1) I.
    x = np.array([[1.0, 1.0], [1.0, -1.0], [-1.0, 1.0], [-1.0, -1.0]])
    assert frechet_distance(x, 2 * x + 3) == pytest.approx(2 * 9 + 2 * (4 / 3) * (2 - 1) ** 2, rel=1e-12)


def test_singular_covariances_and_the_imaginary_error():
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(5, 20)), rng.normal(size=(6, 20))  # n < d: singular covariances
    assert np.isfinite(frechet_distance(x, y))
    with pytest.raises(ValueError, match="imaginary"):
        frechet_distance_from_moments(np.zeros(2), np.diag([1.0, -1.0]), np.zeros(2), np.eye(2))
    with pytest.raises(ValueError, match="non-empty"):
        frechet_distance(np.zeros((0, 3)), x[:, :3])
    with pytest.raises(ValueError, match="mismatched"):
        frechet_distance(x, y[:, :3])


def _tr_sqrt_product(s1: np.ndarray, s2: np.ndarray) -> float:
    """tr (s1 s2)^{1/2} through symmetric eigensolvers (as reference_fd), no sqrtm."""
    w, v = np.linalg.eigh(s1)
    root1 = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    return float(np.sqrt(np.clip(np.linalg.eigvalsh(root1 @ s2 @ root1), 0, None)).sum())


def test_singular_product_fallback_regularises_both_covariances(monkeypatch):
    # scipy >= 1.16's sqrtm returns a finite root for the singular products of
    # PSD matrices tried here (rank-deficient n < d covariances), which older
    # scipy (and the reference FID code's era) turned into inf/NaN; the fallback
    # is made to run by a sqrtm that fails on its first, unregularised call.
    import scipy.linalg

    real_sqrtm, calls = scipy.linalg.sqrtm, []

    def failing_first(a, *args, **kw):
        calls.append(np.array(a))
        return np.full_like(a, np.nan) if len(calls) == 1 else real_sqrtm(a, *args, **kw)

    monkeypatch.setattr(scipy.linalg, "sqrtm", failing_first)
    rng = np.random.default_rng(5)
    x, y = rng.normal(size=(4, 12)), rng.normal(1.0, 2.0, size=(7, 12))   # ranks 3 and 6 of 12
    m1, m2, s1, s2 = x.mean(0), y.mean(0), np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    eps = 1e-2  # large, so a fallback that dropped or misplaced it would show
    got = frechet_distance_from_moments(m1, s1, m2, s2, eps=eps)
    assert len(calls) == 2  # the fallback ran
    off = eps * np.eye(12)
    want = (((m1 - m2) ** 2).sum() + np.trace(s1) + np.trace(s2)
            - 2 * _tr_sqrt_product(s1 + off, s2 + off))
    assert got == pytest.approx(want, rel=1e-8)
    # eps matters here: the unregularised distance differs by far more than round-off.
    exact = ((m1 - m2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * _tr_sqrt_product(s1, s2)
    assert abs(want - exact) > 1e-4 * exact


def test_streaming_stats_equal_batch_stats():
    rng = np.random.default_rng(3)
    x = rng.normal(5.0, 2.0, size=(1000, 7)) @ rng.normal(size=(7, 7))
    stats = FeatureStats.empty(7)
    for part in np.array_split(x, [1, 10, 300, 301, 999]):  # uneven batches, including size 1
        stats = stats.update(part)
    assert stats.count == 1000
    np.testing.assert_allclose(stats.mean, x.mean(0), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(stats.covariance(), np.cov(x, rowvar=False), rtol=1e-10, atol=1e-10)
    merged = FeatureStats.from_features(x[600:]).merge(FeatureStats.from_features(x[:600]))  # either order
    np.testing.assert_allclose(merged.covariance(), stats.covariance(), rtol=1e-10, atol=1e-10)
    y = rng.normal(size=(500, 7))
    assert frechet_distance(stats, y) == pytest.approx(frechet_distance(x, y), rel=1e-9)


def test_stats_save_and_load(tmp_path):
    stats = FeatureStats.from_features(np.random.default_rng(4).normal(size=(50, 3)))
    stats.save(tmp_path / "s.npz")
    back = FeatureStats.load(tmp_path / "s.npz")
    assert back.count == 50
    np.testing.assert_array_equal(back.scatter, stats.scatter)
    with pytest.raises(ValueError, match="at least 2"):
        FeatureStats.from_features(np.ones((1, 3))).covariance()
