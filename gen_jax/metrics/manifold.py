"""k-NN manifold metrics on features: precision/recall, density/coverage, and
Inception-style scores from class probabilities.

Precision asks how many samples look real (fidelity), recall how much of the
real data the samples cover (diversity); both estimate each set's support as
a union of k-NN balls. Distances are float64 and built in row blocks, so sets
of tens of thousands fit in memory.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

_BLOCK = 1024


def _feats(x: ArrayLike, name: str, k: int) -> np.ndarray:
    a = np.asarray(x, np.float64)
    if a.ndim != 2:
        raise ValueError(f"{name} must be an (n, d) array, got shape {a.shape}")
    if len(a) <= k:
        raise ValueError(f"{name} needs more than k={k} examples, got {len(a)}")
    if not np.isfinite(a).all():
        raise ValueError(f"{name} contains non-finite values")
    return a


def _dists(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    d = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
    return np.sqrt(np.maximum(d, 0.0))


def knn_radii(feats: ArrayLike, k: int) -> np.ndarray:
    """Distance from each point to its k-th nearest neighbour in the same set (itself excluded).

    Args:
      feats: (n, d) features.
      k: the neighbour rank, >= 1.

    Returns:
      (n,) radii.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    a = _feats(feats, "feats", k)
    out = np.empty(len(a))
    for s in range(0, len(a), _BLOCK):
        d = _dists(a[s:s + _BLOCK], a)
        idx = np.arange(len(d))
        d[idx, s + idx] = -np.inf  # the point itself is never its own neighbour
        out[s:s + _BLOCK] = np.partition(d, k, axis=1)[:, k]  # index 0 is the -inf self
    return out


def _in_any_ball(points: np.ndarray, centers: np.ndarray, radii: np.ndarray) -> np.ndarray:
    """(n,) bool: point i lies in some closed ball B(centers_j, radii_j)."""
    out = np.zeros(len(points), bool)
    for s in range(0, len(points), _BLOCK):
        out[s:s + _BLOCK] = (_dists(points[s:s + _BLOCK], centers) <= radii[None, :]).any(1)
    return out


def precision_recall(real_feats: ArrayLike, fake_feats: ArrayLike, k: int = 3) -> dict[str, float]:
    """Improved precision and recall (Kynkäänniemi et al., 2019).

    precision = (1/M) sum_j f(fake_j, real), recall = (1/N) sum_i f(real_i, fake),
    where f(x, S) = 1 if |x - s| <= |s - NN_k(s)| for some s in S: each set's
    manifold is the union of balls reaching each point's k-th nearest neighbour.

    Args:
      real_feats: (N, d) features of real data.
      fake_feats: (M, d) features of samples.
      k: neighbourhood size (the paper uses 3).

    Returns:
      {"precision": ..., "recall": ...}, each in [0, 1].
    """
    real, fake = _feats(real_feats, "real_feats", k), _feats(fake_feats, "fake_feats", k)
    precision = _in_any_ball(fake, real, knn_radii(real, k)).mean()
    recall = _in_any_ball(real, fake, knn_radii(fake, k)).mean()
    return {"precision": float(precision), "recall": float(recall)}


def density_coverage(real_feats: ArrayLike, fake_feats: ArrayLike, k: int = 5) -> dict[str, float]:
    """Density and coverage (Naeem et al., 2020, "Reliable fidelity and diversity metrics").

    density = 1/(kM) sum_j sum_i 1[fake_j in B(real_i, NND_k(real_i))],
    coverage = 1/N sum_i 1[some fake_j in B(real_i, NND_k(real_i))];
    only real-data balls are used, so outlying real points matter less than
    in precision. Balls are open (distance < radius), as in the authors' code.

    Args:
      real_feats: (N, d) features of real data.
      fake_feats: (M, d) features of samples.
      k: neighbourhood size (the paper uses 5).

    Returns:
      {"density": ... (can exceed 1), "coverage": ... in [0, 1]}.
    """
    real, fake = _feats(real_feats, "real_feats", k), _feats(fake_feats, "fake_feats", 0)
    radii = knn_radii(real, k)
    inside = 0.0
    covered = np.zeros(len(real), bool)
    for s in range(0, len(fake), _BLOCK):
        hits = _dists(real, fake[s:s + _BLOCK]) < radii[:, None]  # (N, block)
        inside += hits.sum()
        covered |= hits.any(1)
    return {"density": float(inside / (k * len(fake))), "coverage": float(covered.mean())}


def inception_score(probs: ArrayLike, num_splits: int = 10) -> dict[str, float]:
    """Inception Score exp(E_x KL(p(y|x) || p(y))) (Salimans et al., 2016), over splits.

    With a small classifier in place of Inception this is the "classifier score".

    Args:
      probs: (n, C) class probabilities p(y|x) of the samples (rows sum to 1).
      num_splits: the samples are cut into this many equal parts; p(y) is each
        part's mean prediction (the reference code uses 10).

    Returns:
      {"mean": ..., "std": ...} over splits; between 1 and C.
    """
    p = np.asarray(probs, np.float64)
    if p.ndim != 2 or len(p) < num_splits or num_splits < 1:
        raise ValueError(f"probs must be (n, C) with n >= num_splits={num_splits}, got {p.shape}")
    if (p < 0).any() or not np.allclose(p.sum(1), 1.0, atol=1e-4):
        raise ValueError("probs rows must be probability vectors (non-negative, summing to 1)")
    scores = []
    for part in np.array_split(p, num_splits):
        py = part.mean(0, keepdims=True)
        # 0 log 0 = 0: classes a sample gives no mass add nothing to its KL.
        log_ratio = np.log(np.where(part > 0, part, 1.0)) - np.log(np.maximum(py, 1e-300))
        kl = np.where(part > 0, part * log_ratio, 0.0).sum(1)
        scores.append(np.exp(kl.mean()))
    return {"mean": float(np.mean(scores)), "std": float(np.std(scores))}


__all__ = ["density_coverage", "inception_score", "knn_radii", "precision_recall"]
