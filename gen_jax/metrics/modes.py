"""Mode coverage of samples from a known mixture: the GAN mode-collapse benchmark metric.

Follows VEEGAN (Srivastava et al., 2017) and PacGAN (Lin et al., 2018) on the
2-D ring and grid mixtures: each sample is registered to its nearest mode; it is
*high quality* when its distance to that mode is below ``threshold`` (3) standard
deviations (Mahalanobis distance of an isotropic component, as in PacGAN's
evaluation code); a mode is *captured* when at least ``min_count`` (1) high-quality
samples are registered to it; and the reverse KL is KL(q || p) between q, the
histogram of high-quality samples over the modes, and p, the true (uniform)
weights of the modes.
"""

from __future__ import annotations

import numpy as np


def mode_coverage(samples, centers, std: float, threshold: float = 3.0, min_count: int = 1,
                  weights=None) -> dict:
    """Counts captured modes, the share of high-quality samples and the reverse KL over modes.

    Args:
      samples: (N, D) generated samples.
      centers: (K, D) mode centers of the target mixture.
      std: the per-coordinate standard deviation of every (isotropic) component.
      threshold: a sample is high quality within ``threshold * std`` of its nearest mode.
      min_count: high-quality samples a mode needs to count as captured.
      weights: (K,) true mode weights (summing to 1); None = uniform.

    Returns:
      dict with "modes" (number of captured modes), "num_modes" (K), "high_quality"
      (fraction of samples that are high quality, in [0, 1]), "reverse_kl" (nats;
      inf when no sample is high quality) and "counts" ((K,) high-quality samples per
      mode).
    """
    x = np.asarray(samples, np.float64)
    c = np.asarray(centers, np.float64)
    if x.ndim != 2 or c.ndim != 2 or x.shape[1] != c.shape[1]:
        raise ValueError(f"samples (N, D) and centers (K, D) must agree in D; got {x.shape}, {c.shape}")
    if std <= 0:
        raise ValueError(f"std must be positive, got {std}")
    k = len(c)
    p = np.full(k, 1.0 / k) if weights is None else np.asarray(weights, np.float64)
    d2 = ((x[:, None, :] - c[None, :, :]) ** 2).sum(-1)   # (N, K)
    nearest = d2.argmin(1)
    dist = np.sqrt(d2[np.arange(len(x)), nearest]) / std
    good = dist < threshold
    counts = np.bincount(nearest[good], minlength=k)
    total = counts.sum()
    if total == 0:
        reverse_kl = float("inf")
    else:
        q = counts / total
        nz = q > 0
        reverse_kl = float(np.sum(q[nz] * np.log(q[nz] / p[nz])))
    return {"modes": int(np.sum(counts >= min_count)), "num_modes": k,
            "high_quality": float(good.mean()) if len(x) else 0.0,
            "reverse_kl": reverse_kl, "counts": counts}
