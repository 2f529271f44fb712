"""Streaming feature statistics and the Fréchet distance between Gaussians fitted to them.

FID (Heusel et al., 2017) and digits-FD are this distance on a network's
features. :class:`FeatureStats` keeps a running mean and scatter matrix in
float64 and merges with another (Chan, Golub & LeVeque, 1979), so features can
be accumulated batch by batch (50k samples never sit in memory at once) and
across hosts.
"""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import scipy.linalg
from numpy.typing import ArrayLike


@dataclasses.dataclass
class FeatureStats:
    """Running count, mean and scatter matrix sum((x - mean)(x - mean)^T), float64.

    Attributes:
      count: examples seen.
      mean: (d,) running mean.
      scatter: (d, d) sum of outer products of deviations from the mean.
    """

    count: int
    mean: np.ndarray
    scatter: np.ndarray

    @classmethod
    def empty(cls, dim: int) -> FeatureStats:
        """Statistics of no examples in ``dim`` dimensions."""
        return cls(0, np.zeros(dim, np.float64), np.zeros((dim, dim), np.float64))

    @classmethod
    def from_features(cls, feats: ArrayLike) -> FeatureStats:
        """Statistics of an (n, d) array of features."""
        x = _as_features(feats)
        mean = x.mean(0)
        dx = x - mean
        return cls(len(x), mean, dx.T @ dx)

    @property
    def dim(self) -> int:
        return len(self.mean)

    def merge(self, other: FeatureStats) -> FeatureStats:
        """The statistics of both sets together (Chan et al.'s pairwise update).

        Args:
          other: statistics of another set of the same dimension.

        Returns:
          New statistics; neither input is modified.
        """
        if other.dim != self.dim:
            raise ValueError(f"cannot merge feature statistics of dimension {self.dim} and {other.dim}")
        if other.count == 0:
            return dataclasses.replace(self)
        if self.count == 0:
            return dataclasses.replace(other)
        n = self.count + other.count
        delta = other.mean - self.mean
        mean = self.mean + delta * (other.count / n)
        scatter = self.scatter + other.scatter + np.outer(delta, delta) * (self.count * other.count / n)
        return FeatureStats(n, mean, scatter)

    def update(self, feats: ArrayLike) -> FeatureStats:
        """These statistics with one more (n, d) batch of features merged in."""
        return self.merge(FeatureStats.from_features(feats))

    def covariance(self) -> np.ndarray:
        """The unbiased (n - 1) sample covariance, as ``np.cov(x, rowvar=False)``."""
        if self.count < 2:
            raise ValueError(f"a covariance needs at least 2 examples, got {self.count}")
        return self.scatter / (self.count - 1)

    def save(self, path) -> None:
        """Writes the statistics to an .npz file (e.g. cached reference statistics)."""
        with open(path, "wb") as f:
            np.savez(f, count=self.count, mean=self.mean, scatter=self.scatter)

    @classmethod
    def load(cls, path) -> FeatureStats:
        """Reads statistics written by :meth:`save`."""
        with np.load(path) as z:
            return cls(int(z["count"]), z["mean"].astype(np.float64), z["scatter"].astype(np.float64))


def _as_features(feats: ArrayLike) -> np.ndarray:
    x = np.asarray(feats, np.float64)
    if x.ndim != 2 or len(x) == 0:
        raise ValueError(f"features must be a non-empty (n, d) array, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("features contain non-finite values")
    return x


def _moments(feats) -> tuple[np.ndarray, np.ndarray]:
    stats = feats if isinstance(feats, FeatureStats) else FeatureStats.from_features(feats)
    return stats.mean, stats.covariance()


def frechet_distance_from_moments(mu1: ArrayLike, sigma1: ArrayLike, mu2: ArrayLike, sigma2: ArrayLike,
                                  eps: float = 1e-6, max_imag: float = 1e-3) -> float:
    """Squared Fréchet (2-Wasserstein) distance between N(mu1, sigma1) and N(mu2, sigma2).

    d^2 = |mu1 - mu2|^2 + tr(sigma1 + sigma2 - 2 (sigma1 sigma2)^{1/2})   (Dowson & Landau, 1982)

    The matrix square root is ``scipy.linalg.sqrtm`` in float64 with the handling
    of the reference FID code (TTUR / pytorch-fid): if the product is singular
    (non-finite root) ``eps * I`` is added to both covariances; a root's
    imaginary part from round-off is dropped, and a large one is an error.

    Args:
      mu1, mu2: (d,) means.
      sigma1, sigma2: (d, d) covariances.
      eps: the diagonal offset used for near-singular products.
      max_imag: the largest |imaginary part| of the root's diagonal treated as round-off.

    Returns:
      The distance (a float >= 0 up to round-off).

    Raises:
      ValueError: mismatched shapes, or a root with a large imaginary component.
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1 = np.atleast_2d(np.asarray(sigma1, np.float64))
    sigma2 = np.atleast_2d(np.asarray(sigma2, np.float64))
    d = len(mu1)
    if mu2.shape != (d,) or sigma1.shape != (d, d) or sigma2.shape != (d, d):
        raise ValueError(f"mismatched moments: means {mu1.shape}, {mu2.shape}, covariances "
                         f"{sigma1.shape}, {sigma2.shape}")
    diff = mu1 - mu2
    with warnings.catch_warnings():  # a singular product is handled below, not worth a warning
        warnings.simplefilter("ignore", scipy.linalg.LinAlgWarning)
        covmean = scipy.linalg.sqrtm(sigma1 @ sigma2)
        if not np.isfinite(covmean).all():
            offset = np.eye(d) * eps
            covmean = scipy.linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        imag = np.max(np.abs(np.diagonal(covmean).imag))
        if imag > max_imag:
            raise ValueError(f"matrix square root has a large imaginary component {imag:.3g}: "
                             "the covariances are too ill-conditioned (too few samples for the dimension?)")
        covmean = covmean.real
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(covmean))


def frechet_distance(feats_a: ArrayLike | FeatureStats, feats_b: ArrayLike | FeatureStats) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (FID on Inception features).

    Args:
      feats_a, feats_b: (n, d) feature arrays, or their :class:`FeatureStats`
        (the streaming path). Covariances are the unbiased (n - 1) estimates.

    Returns:
      The squared Fréchet distance (see :func:`frechet_distance_from_moments`).
    """
    if not isinstance(feats_a, FeatureStats) and not isinstance(feats_b, FeatureStats):
        feats_a, feats_b = _reduce_to_span(_as_features(feats_a), _as_features(feats_b))
    mu1, s1 = _moments(feats_a)
    mu2, s2 = _moments(feats_b)
    return frechet_distance_from_moments(mu1, s1, mu2, s2)


def _reduce_to_span(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both feature sets in an orthonormal basis of the span of their deviations from
    a's mean, when that span is smaller than the dimension (n_a + n_b <= d, e.g. a
    few hundred samples of 2048-d Inception features).

    Exact: the Fréchet distance is invariant to rotations, both covariances vanish
    outside that span and the difference of the means lies in it; so the matrix
    square root is taken in n_a + n_b - 1 dimensions instead of d (a 2048-d
    ``sqrtm`` takes a minute on a small CPU).
    """
    if a.shape[1] != b.shape[1] or len(a) + len(b) > a.shape[1]:
        return a, b
    origin = a.mean(0)
    q, _ = np.linalg.qr(np.concatenate([a, b]).T - origin[:, None])  # (d, n_a + n_b)
    return (a - origin) @ q, (b - origin) @ q


__all__ = ["FeatureStats", "frechet_distance", "frechet_distance_from_moments"]
