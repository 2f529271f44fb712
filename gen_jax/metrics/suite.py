"""The sample-quality metric sets that ``--mode=eval`` and the leaderboard report.

One function per data kind, so every family is measured the same way:
:func:`feature_metrics` (any feature network: Fréchet distance, KID,
precision/recall, density/coverage), :func:`digits_metrics` (the digits CNN's
features and predictions) and :func:`toy2d_metrics` (MMD, energy distance and,
for the mixtures, mode coverage).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from gen_jax.metrics.frechet import frechet_distance
from gen_jax.metrics.kernel import energy_distance, kid, median_bandwidth, mmd_rbf
from gen_jax.metrics.manifold import density_coverage, inception_score, precision_recall


def feature_metrics(real_feats: ArrayLike, fake_feats: ArrayLike, prefix: str = "fd") -> dict[str, float]:
    """Fréchet distance, KID (mean and std over subsets), precision/recall (k=3)
    and density/coverage (k=5) of samples' features against real features.

    Args:
      real_feats: (N, d) features of the reference data.
      fake_feats: (M, d) features of the samples.
      prefix: the name of the Fréchet distance entry (e.g. "digits_fd", "fid").

    Returns:
      A flat dict of floats.
    """
    k = kid(real_feats, fake_feats)
    return {prefix: frechet_distance(real_feats, fake_feats), "kid": k["mean"], "kid_std": k["std"],
            "kid_subset_size": k["subset_size"], **precision_recall(real_feats, fake_feats, k=3),
            **density_coverage(real_feats, fake_feats, k=5)}


def digits_metrics(samples01: ArrayLike, reference01: ArrayLike, net: Any = None) -> dict[str, Any]:
    """Sample metrics for 8x8 digits with the offline digits CNN.

    Args:
      samples01: (M, 8, 8, 1) samples with intensities in [0, 1] (see
        :func:`gen_jax.metrics.digits_features.to_unit_interval`).
      reference01: (N, 8, 8, 1) real images in [0, 1] (the training split).
      net: a DigitsFeatureNet; None = the shipped one.

    Returns:
      digits_fd, kid, kid_std, precision, recall, density, coverage,
      classifier_score (the Inception Score with the digits CNN, one split),
      class_shares (fraction of samples predicted as each digit) and
      class_share_tv (total variation between those shares and the reference's).
    """
    from gen_jax.metrics.digits_features import default_net

    net = net or default_net()
    fake_f, fake_p = net.features_and_probs(samples01)
    real_f, real_p = net.features_and_probs(reference01)
    shares = np.bincount(fake_p.argmax(1), minlength=fake_p.shape[1]) / len(fake_p)
    real_shares = np.bincount(real_p.argmax(1), minlength=real_p.shape[1]) / len(real_p)
    return {**feature_metrics(real_f, fake_f, prefix="digits_fd"),
            "classifier_score": inception_score(fake_p, num_splits=1)["mean"],
            "class_shares": [float(s) for s in shares],
            "class_share_tv": float(0.5 * np.abs(shares - real_shares).sum()),
            "num_samples": len(fake_f), "num_reference": len(real_f)}


def toy2d_metrics(samples: ArrayLike, reference: ArrayLike, name: str) -> dict[str, Any]:
    """Sample metrics for 2-D toy data: RBF MMD^2 (bandwidth = the median
    pairwise distance of the reference, so values compare across models),
    energy distance and, for the Gaussian mixtures, mode coverage.

    Args:
      samples: (M, 2) samples.
      reference: (N, 2) real points (e.g. the test split).
      name: the toy dataset's name (ring8, grid25, moons, ...).

    Returns:
      mmd_rbf, mmd_bandwidth, energy_distance, and mode_coverage (a dict) when
      the dataset has modes.
    """
    from gen_jax.data.toy2d import toy2d_mode_std, toy2d_modes

    h = median_bandwidth(reference)
    out: dict[str, Any] = {"mmd_rbf": mmd_rbf(reference, samples, bandwidth=h), "mmd_bandwidth": h,
                           "energy_distance": energy_distance(reference, samples),
                           "num_samples": len(samples), "num_reference": len(reference)}
    centers = toy2d_modes(name)
    if centers is not None:
        from gen_jax.metrics.modes import mode_coverage

        cov = mode_coverage(samples, centers, toy2d_mode_std(name))
        out["mode_coverage"] = {k: (np.asarray(v).tolist() if isinstance(v, np.ndarray) else v)
                                for k, v in cov.items()}
    return out


__all__ = ["digits_metrics", "feature_metrics", "toy2d_metrics"]
