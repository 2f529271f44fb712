"""KID, RBF MMD and energy distance against brute-force double loops and scipy."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.stats

from gen_jax.metrics import energy_distance, kid, mmd_rbf


def brute_mmd2(x, y, k) -> float:
    n, m = len(x), len(y)
    kxx = sum(k(x[i], x[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    kyy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    kxy = sum(k(x[i], y[j]) for i in range(n) for j in range(m)) / (n * m)
    return kxx + kyy - 2 * kxy


def test_kid_is_the_unbiased_cubic_mmd_and_unbiased_on_one_distribution():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(25, 4)), rng.normal(0.5, 1.0, size=(20, 4))
    cubic = lambda u, v: (u @ v / 4 + 1.0) ** 3  # noqa: E731
    # Sets not much larger than a subset take the full-Gram path.
    got = kid(x, y, num_subsets=3, subset_size=15, seed=3)
    r = np.random.default_rng(3)  # the same subset draws as kid's: all of x's subsets, then y's
    sa = [r.choice(25, 15, replace=False) for _ in range(3)]
    sb = [r.choice(20, 15, replace=False) for _ in range(3)]
    ref = [brute_mmd2(x[i], y[j], cubic) for i, j in zip(sa, sb, strict=True)]
    assert got["mean"] == pytest.approx(np.mean(ref), rel=1e-10)
    assert got["std"] == pytest.approx(np.std(ref), rel=1e-8) and got["subset_size"] == 15
    # Many independent pairs from one distribution: the mean of the unbiased estimate is ~0, within
    # a few standard errors; a shifted pair is far above that.
    a, b = rng.normal(size=(4000, 8)), rng.normal(size=(4000, 8))
    same = kid(a, b, num_subsets=100, subset_size=40)  # disjoint-ish small subsets: near-independent draws
    assert abs(same["mean"]) < 3 * same["std"] / np.sqrt(100)
    shifted = kid(a, b + 0.5, num_subsets=100, subset_size=40)
    assert shifted["mean"] > 10 * same["std"] / np.sqrt(100)
    # The large-set path (per-subset kernel matrices) against brute force.
    big = kid(a, b, num_subsets=2, subset_size=40)
    r = np.random.default_rng(0)
    sa = [r.choice(4000, 40, replace=False) for _ in range(2)]
    sb = [r.choice(4000, 40, replace=False) for _ in range(2)]
    ref = [brute_mmd2(a[i], b[j], lambda u, v: (u @ v / 8 + 1.0) ** 3) for i, j in zip(sa, sb, strict=True)]
    assert big["mean"] == pytest.approx(np.mean(ref), rel=1e-9)


def test_mmd_rbf_against_brute_force():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(30, 2)), rng.normal(0.3, 1.0, size=(25, 2))
    h = 0.7
    rbf = lambda u, v: np.exp(-((u - v) ** 2).sum() / (2 * h * h))  # noqa: E731
    assert mmd_rbf(x, y, bandwidth=h) == pytest.approx(brute_mmd2(x, y, rbf), rel=1e-10)
    assert np.isfinite(mmd_rbf(x, y))  # median-heuristic bandwidth
    with pytest.raises(ValueError, match="bandwidth"):
        mmd_rbf(x, y, bandwidth=0.0)


def test_energy_distance_against_scipy_and_brute_force():
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=40), rng.exponential(size=30)
    # V-statistic in 1-D: scipy's energy_distance is its square root.
    want_v = scipy.stats.energy_distance(x, y) ** 2
    assert energy_distance(x, y, unbiased=False) == pytest.approx(want_v, rel=1e-9)
    x2, y2 = rng.normal(size=(20, 3)), rng.normal(size=(15, 3)) + 1
    dist = lambda u, v: np.sqrt(((u - v) ** 2).sum())  # noqa: E731
    want = (2 * np.mean([dist(a, b) for a in x2 for b in y2])
            - np.mean([dist(x2[i], x2[j]) for i in range(20) for j in range(20) if i != j])
            - np.mean([dist(y2[i], y2[j]) for i in range(15) for j in range(15) if i != j]))
    assert energy_distance(x2, y2) == pytest.approx(want, rel=1e-10)
    with pytest.raises(ValueError, match="non-finite"):
        energy_distance(x2, np.full((3, 3), np.nan))
