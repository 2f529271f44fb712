"""mode_coverage on hand-built samples from the ring of 8 Gaussians."""

from __future__ import annotations

import numpy as np
import pytest

from gen_jax.data.toy2d import toy2d_mode_std, toy2d_modes
from gen_jax.metrics.modes import mode_coverage


def test_mode_coverage_counts_quality_and_reverse_kl_by_hand():
    centers, std = toy2d_modes("ring8"), toy2d_mode_std("ring8")
    assert std == 0.01
    # 6 samples on mode 0, 2 on mode 1, 2 on mode 2 (at 2.9 std: still high quality),
    # 1 at 3.1 std of mode 3 (low quality), 1 at the origin (low quality).
    offset = np.array([0.0, 1.0])
    samples = np.concatenate([
        np.repeat(centers[:1], 6, 0), np.repeat(centers[1:2], 2, 0),
        centers[2:3] + 2.9 * std * offset, centers[2:3] - 2.9 * std * offset,
        centers[3:4] + 3.1 * std * offset, np.zeros((1, 2))])
    cov = mode_coverage(samples, centers, std)
    np.testing.assert_array_equal(cov["counts"], [6, 2, 2, 0, 0, 0, 0, 0])
    assert cov["modes"] == 3 and cov["num_modes"] == 8
    assert cov["high_quality"] == pytest.approx(10 / 12)
    q = np.array([0.6, 0.2, 0.2])
    assert cov["reverse_kl"] == pytest.approx(np.sum(q * np.log(q * 8)))
    assert mode_coverage(samples, centers, std, min_count=3)["modes"] == 1
    # A looser threshold admits the 3.1-std sample.
    assert mode_coverage(samples, centers, std, threshold=3.2)["modes"] == 4


def test_perfect_samples_have_all_modes_and_zero_reverse_kl():
    centers, std = toy2d_modes("grid25"), toy2d_mode_std("grid25")
    samples = np.repeat(centers, 4, 0) + 0.5 * std * np.random.default_rng(0).standard_normal((100, 2))
    cov = mode_coverage(samples, centers, std)
    assert (cov["modes"], cov["high_quality"]) == (25, 1.0)
    assert cov["reverse_kl"] == pytest.approx(0.0, abs=1e-12)
    far = mode_coverage(samples + 10.0, centers, std)
    assert far["modes"] == 0 and far["high_quality"] == 0.0 and far["reverse_kl"] == float("inf")
    with pytest.raises(ValueError, match="agree in D"):
        mode_coverage(np.zeros((3, 3)), centers, std)
