"""Classical generative models: Gaussian, Gaussian mixture (EM), PCA / probabilistic
PCA and robust PCA projection (blind, or given the occluding block's size).

The functional API works on (N, D) arrays; importing this package also
registers the runtime Methods "gaussian", "gmm" and "pca" (classical/methods.py).
"""

from gen_jax.classical import methods  # noqa: F401  (registers "gaussian", "gmm", "pca")
from gen_jax.classical.gaussian import GaussianParams, fit_gaussian, gaussian_log_prob, gaussian_sample
from gen_jax.classical.gmm import (
    GMMParams,
    fit_gmm,
    gmm_em,
    gmm_log_prob,
    gmm_predict,
    gmm_predict_proba,
    gmm_sample,
)
from gen_jax.classical.pca import (
    PCAParams,
    explained_variance_ratio,
    fit_pca,
    pca_block_robust_project,
    pca_project,
    pca_reconstruct,
    pca_robust_project,
    ppca_log_prob,
    ppca_sample,
    residual_variance,
)

__all__ = ["GMMParams", "GaussianParams", "PCAParams", "explained_variance_ratio", "fit_gaussian",
           "fit_gmm", "fit_pca", "gaussian_log_prob", "gaussian_sample", "gmm_em", "gmm_log_prob",
           "gmm_predict", "gmm_predict_proba", "gmm_sample", "pca_block_robust_project", "pca_project",
           "pca_reconstruct", "pca_robust_project", "ppca_log_prob", "ppca_sample", "residual_variance"]
