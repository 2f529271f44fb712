"""Precision/recall, density/coverage and the Inception Score against brute force and sklearn."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.neighbors import NearestNeighbors

from gen_jax.metrics import density_coverage, inception_score, knn_radii, precision_recall


def brute(real, fake, k_pr, k_dc):
    """The papers' definitions as explicit loops."""
    def radius(s, i, k):
        return sorted(np.linalg.norm(s[i] - s[j]) for j in range(len(s)) if j != i)[k - 1]

    rr = [radius(real, i, k_pr) for i in range(len(real))]
    rf = [radius(fake, j, k_pr) for j in range(len(fake))]
    prec = np.mean([any(np.linalg.norm(f - real[i]) <= rr[i] for i in range(len(real))) for f in fake])
    rec = np.mean([any(np.linalg.norm(r - fake[j]) <= rf[j] for j in range(len(fake))) for r in real])
    rd = [radius(real, i, k_dc) for i in range(len(real))]
    hits = sum(np.linalg.norm(f - real[i]) < rd[i] for f in fake for i in range(len(real)))
    dens = hits / (k_dc * len(fake))
    cov = np.mean([min(np.linalg.norm(real[i] - f) for f in fake) < rd[i] for i in range(len(real))])
    return prec, rec, dens, cov


def test_against_the_definitions_and_sklearn_neighbours():
    rng = np.random.default_rng(0)
    real, fake = rng.normal(size=(40, 3)), rng.normal(0.4, 1.3, size=(30, 3))
    pr, dc = precision_recall(real, fake, k=3), density_coverage(real, fake, k=5)
    want = brute(real, fake, 3, 5)
    assert (pr["precision"], pr["recall"], dc["density"], dc["coverage"]) == pytest.approx(want, abs=1e-12)
    dist, _ = NearestNeighbors(n_neighbors=4).fit(real).kneighbors(real)  # column 0 is the point itself
    np.testing.assert_allclose(knn_radii(real, 3), dist[:, 3], rtol=1e-10)


def test_a_set_against_itself_is_perfect_and_a_shifted_set_lowers_both():
    rng = np.random.default_rng(1)
    real = rng.normal(size=(500, 8))
    assert precision_recall(real, real) == {"precision": 1.0, "recall": 1.0}
    assert density_coverage(real, real)["coverage"] == 1.0
    fresh = precision_recall(real, rng.normal(size=(500, 8)))
    shifted = precision_recall(real, rng.normal(size=(500, 8)) + 1.5)
    assert fresh["precision"] > 0.6 and fresh["recall"] > 0.6
    assert shifted["precision"] < fresh["precision"] - 0.3 and shifted["recall"] < fresh["recall"] - 0.3
    # Mode dropping: samples from part of the support keep precision and lose recall.
    part = real[real[:, 0] > 0.5]  # ~30% of the points
    dropped = precision_recall(real, part)
    assert dropped["precision"] == 1.0 and dropped["recall"] < 0.65
    with pytest.raises(ValueError, match="more than k"):
        precision_recall(real[:3], real, k=3)


def test_inception_score():
    c = 10
    assert inception_score(np.full((100, c), 1 / c))["mean"] == pytest.approx(1.0)  # no confidence
    one_hot = np.eye(c)[np.arange(100) % c]
    assert inception_score(one_hot)["mean"] == pytest.approx(c)                    # confident, balanced
    assert inception_score(np.eye(c)[np.zeros(100, int)])["mean"] == pytest.approx(1.0)  # collapsed
    p = np.random.default_rng(2).dirichlet(np.ones(c) * 0.3, size=50)
    py = p.mean(0)
    want = np.exp(np.mean([(q * np.log(q / py)).sum() for q in p]))
    got = inception_score(p, num_splits=1)
    assert got["mean"] == pytest.approx(want, rel=1e-10) and got["std"] == 0.0
    with pytest.raises(ValueError, match="probability"):
        inception_score(np.ones((20, c)))
