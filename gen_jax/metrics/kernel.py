"""Kernel two-sample distances: KID, RBF MMD and the energy distance.

KID is for network features (any dimension); the RBF MMD and the energy distance
are for low-dimensional data such as the toy 2-D sets. Everything is float64
NumPy, with pairwise matrices built in row blocks so memory stays bounded.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
from numpy.typing import ArrayLike

_BLOCK = 1024  # rows per pairwise block: 1024 x 50k float64 = 400 MB at worst


def _points(x: ArrayLike, name: str) -> np.ndarray:
    a = np.asarray(x, np.float64)
    if a.ndim == 1:
        a = a[:, None]
    if a.ndim != 2 or len(a) < 2:
        raise ValueError(f"{name} must be an (n, d) array with n >= 2, got shape {a.shape}")
    if not np.isfinite(a).all():
        raise ValueError(f"{name} contains non-finite values")
    return a


def _sq_dists(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    d = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
    return np.maximum(d, 0.0)


def _kernel_sums(x: np.ndarray, y: np.ndarray, kernel: Callable[[np.ndarray, np.ndarray], np.ndarray],
                 exclude_diagonal: bool) -> float:
    """sum_{i,j} k(x_i, y_j), leaving out i == j when ``exclude_diagonal`` (x is y)."""
    total = 0.0
    for s in range(0, len(x), _BLOCK):
        block = kernel(x[s:s + _BLOCK], y)
        if exclude_diagonal:
            idx = np.arange(len(block))
            block[idx, s + idx] = 0.0
        total += float(block.sum())
    return total


def _unbiased_mmd2(x: np.ndarray, y: np.ndarray, kernel) -> float:
    """Unbiased MMD^2 U-statistic (Gretton et al., 2012, eq. 3)."""
    n, m = len(x), len(y)
    kxx = _kernel_sums(x, x, kernel, True) / (n * (n - 1))
    kyy = _kernel_sums(y, y, kernel, True) / (m * (m - 1))
    kxy = _kernel_sums(x, y, kernel, False) / (n * m)
    return kxx + kyy - 2.0 * kxy


def _indicator(subsets: np.ndarray, n: int) -> np.ndarray:
    out = np.zeros((len(subsets), n))
    np.put_along_axis(out, subsets, 1.0, axis=1)
    return out


def _subset_mmd2_from_gram(a: np.ndarray, b: np.ndarray, subsets_a: np.ndarray, subsets_b: np.ndarray,
                           kernel) -> np.ndarray:
    """The unbiased MMD^2 of every subset pair through the full kernel matrices:
    with indicator rows s of a subset, sum_{i,j in s} K_ij = s^T K s, so all
    subsets cost one pass over K (for sets not much larger than a subset)."""
    m = subsets_a.shape[1]
    sa, sb = _indicator(subsets_a, len(a)), _indicator(subsets_b, len(b))

    def quad(x, y, sx, sy, same):
        total = np.zeros(len(sx))
        for s in range(0, len(x), _BLOCK):
            block = kernel(x[s:s + _BLOCK], y)
            if same:  # drop k(x_i, x_i): the U-statistic leaves out i == j
                idx = np.arange(len(block))
                block[idx, s + idx] = 0.0
            total += ((sx[:, s:s + _BLOCK] @ block) * sy).sum(1)
        return total

    kxx = quad(a, a, sa, sa, True) / (m * (m - 1))
    kyy = quad(b, b, sb, sb, True) / (m * (m - 1))
    kxy = quad(a, b, sa, sb, False) / (m * m)
    return kxx + kyy - 2.0 * kxy


def kid(feats_a: ArrayLike, feats_b: ArrayLike, num_subsets: int = 100, subset_size: int = 1000,
        seed: int = 0) -> dict[str, float]:
    """Kernel Inception Distance (Bińkowski et al., 2018, "Demystifying MMD GANs").

    The unbiased MMD^2 with the cubic polynomial kernel k(x, y) = (x . y / d + 1)^3,
    averaged over ``num_subsets`` random subsets of ``subset_size`` examples of
    each set (drawn without replacement within a subset), as in the reference code.

    Args:
      feats_a, feats_b: (n, d) and (m, d) features.
      num_subsets: number of subset pairs.
      subset_size: examples per subset; capped at min(n, m).
      seed: seed of the subset draws.

    Returns:
      {"mean": mean MMD^2 over subsets, "std": its standard deviation, "subset_size": m}.
      The mean is unbiased, so it can be slightly negative for matching distributions.
    """
    a, b = _points(feats_a, "feats_a"), _points(feats_b, "feats_b")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"feature dimensions differ: {a.shape[1]} vs {b.shape[1]}")
    if num_subsets < 1:
        raise ValueError(f"num_subsets must be >= 1, got {num_subsets}")
    d = a.shape[1]
    m = min(subset_size, len(a), len(b))

    def cubic(u, v):
        return (u @ v.T / d + 1.0) ** 3

    rng = np.random.default_rng(seed)
    subsets_a = np.stack([rng.choice(len(a), m, replace=False) for _ in range(num_subsets)])
    subsets_b = np.stack([rng.choice(len(b), m, replace=False) for _ in range(num_subsets)])
    n_a, n_b = len(a), len(b)
    if n_a * n_a + n_b * n_b + n_a * n_b <= 3 * num_subsets * m * m:
        values = _subset_mmd2_from_gram(a, b, subsets_a, subsets_b, cubic)
    else:  # large sets: kernel matrices of the subsets only
        values = np.array([_unbiased_mmd2(a[ia], b[ib], cubic) for ia, ib in zip(subsets_a, subsets_b,
                                                                                  strict=True)])
    return {"mean": float(values.mean()), "std": float(values.std()), "subset_size": int(m)}


def median_bandwidth(x: ArrayLike, max_points: int = 2000, seed: int = 0) -> float:
    """The median heuristic: the median pairwise Euclidean distance within ``x``
    (on a random subset of ``max_points`` points)."""
    a = _points(x, "x")
    if len(a) > max_points:
        a = a[np.random.default_rng(seed).choice(len(a), max_points, replace=False)]
    d = np.sqrt(_sq_dists(a, a)[np.triu_indices(len(a), 1)])
    return float(np.median(d))


def mmd_rbf(x: ArrayLike, y: ArrayLike, bandwidth: float | None = None) -> float:
    """Unbiased MMD^2 with the Gaussian kernel k(x, y) = exp(-|x - y|^2 / (2 h^2))
    (Gretton et al., 2012).

    Args:
      x, y: (n, d) and (m, d) samples (1-D arrays are one feature).
      bandwidth: h; None = :func:`median_bandwidth` of ``x`` (pass a fixed h,
        e.g. from the real data, so values compare across models).

    Returns:
      The unbiased estimate (can be slightly negative when x and y match).
    """
    a, b = _points(x, "x"), _points(y, "y")
    h = median_bandwidth(a) if bandwidth is None else float(bandwidth)
    if not h > 0:
        raise ValueError(f"bandwidth must be positive, got {h}")

    def rbf(u, v):
        return np.exp(-_sq_dists(u, v) / (2.0 * h * h))

    return _unbiased_mmd2(a, b, rbf)


def energy_distance(x: ArrayLike, y: ArrayLike, unbiased: bool = True) -> float:
    """Squared energy distance 2 E|X - Y| - E|X - X'| - E|Y - Y'| (Székely & Rizzo, 2013).

    Args:
      x, y: (n, d) and (m, d) samples.
      unbiased: within-set means over distinct pairs (a U-statistic); False
        averages over all n^2 pairs (the V-statistic; in 1-D its square root is
        ``scipy.stats.energy_distance``).

    Returns:
      The estimate; zero iff the distributions match (in the population).
    """
    a, b = _points(x, "x"), _points(y, "y")

    def dist(u, v):
        return np.sqrt(_sq_dists(u, v))

    n, m = len(a), len(b)
    xy = _kernel_sums(a, b, dist, False) / (n * m)
    xx = _kernel_sums(a, a, dist, True) / (n * (n - 1) if unbiased else n * n)
    yy = _kernel_sums(b, b, dist, True) / (m * (m - 1) if unbiased else m * m)
    return 2.0 * xy - xx - yy


__all__ = ["energy_distance", "kid", "median_bandwidth", "mmd_rbf"]
