"""A single Gaussian fitted by maximum likelihood, and the Gaussian helpers the
mixture model shares (Cholesky log-densities, input checks).

Public: :class:`GaussianParams`, :func:`fit_gaussian`, :func:`gaussian_log_prob`,
:func:`gaussian_sample`. Covariances are "full" (D, D) or "diag" (D,); every
log-density goes through a Cholesky factor (log-determinant from its diagonal,
Mahalanobis term by a triangular solve), never an explicit inverse.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.linalg import solve_triangular

from gen_jax.errors import DataError
from gen_jax.likelihood import LOG_2PI

COVARIANCE_TYPES = ("full", "diag")


class GaussianParams(NamedTuple):
    """N(mean, covariance); ``covariance`` is (D, D) (full) or (D,) (diagonal variances)."""

    mean: jax.Array
    covariance: jax.Array


def check_points(x, what: str = "x", min_points: int = 1) -> None:
    """Rejects anything but a finite (N, D) array with at least ``min_points`` rows.

    Values are only checked when ``x`` is concrete (not inside a jit trace).

    Raises:
      DataError: wrong rank, too few points, or non-finite values.
    """
    shape = np.shape(x)
    if len(shape) != 2:
        raise DataError(f"{what} must be a 2-D array (num_points, dim), got shape {shape}; "
                        "flatten images first, e.g. x.reshape(len(x), -1)")
    if shape[0] < min_points or shape[1] < 1:
        raise DataError(f"{what} has shape {shape}: need at least {min_points} point(s) of "
                        "dimension >= 1")
    if not isinstance(x, jax.core.Tracer):
        bad = ~np.isfinite(np.asarray(x))
        if bad.any():
            rows = np.flatnonzero(bad.any(axis=1))
            raise DataError(f"{what} has {int(bad.sum())} non-finite value(s) (NaN or inf), "
                            f"in rows {rows[:5].tolist()}{' ...' if len(rows) > 5 else ''}")


def check_covariance_type(covariance_type: str) -> None:
    if covariance_type not in COVARIANCE_TYPES:
        raise ValueError(f"covariance_type must be one of {COVARIANCE_TYPES}, got {covariance_type!r}")


def full_log_prob(x: jax.Array, mean: jax.Array, chol: jax.Array) -> jax.Array:
    """log N(x; mean, L Lᵀ) for rows of x (N, D), given the lower Cholesky factor L.

    log N = -½ (D log 2π + log|Σ| + ‖L⁻¹(x - μ)‖²), log|Σ| = 2 Σ_i log L_ii.
    """
    z = solve_triangular(chol, (x - mean).T, lower=True)          # (D, N)
    log_det = 2.0 * jnp.sum(jnp.log(jnp.diagonal(chol)))
    return -0.5 * (x.shape[-1] * LOG_2PI + log_det + jnp.sum(z**2, axis=0))


def diag_log_prob(x: jax.Array, mean: jax.Array, var: jax.Array) -> jax.Array:
    """log N(x; mean, diag(var)) for rows of x (N, D)."""
    return -0.5 * jnp.sum(LOG_2PI + jnp.log(var) + (x - mean) ** 2 / var, axis=-1)


def fit_gaussian(x: jax.Array, covariance_type: str = "full", reg_covar: float = 0.0) -> GaussianParams:
    """The maximum-likelihood Gaussian of the rows of ``x``.

    μ = (1/N) Σ_n x_n and Σ = (1/N) Σ_n (x_n − μ)(x_n − μ)ᵀ (the biased, ML
    estimate), plus ``reg_covar`` on the diagonal so Σ stays positive definite
    when the data do not span every dimension.

    Args:
      x: (N, D) data, N >= 1 (N >= 2 for a non-degenerate covariance).
      covariance_type: "full" or "diag".
      reg_covar: added to the covariance's diagonal.

    Returns:
      GaussianParams (covariance (D, D) or (D,)).

    Raises:
      DataError: x is not a finite 2-D array.
    """
    check_points(x)
    check_covariance_type(covariance_type)
    x = jnp.asarray(x, jnp.float32)
    mean = jnp.mean(x, axis=0)
    d = x - mean  # centre first: a one-pass E[xxᵀ] − μμᵀ loses precision in float32
    if covariance_type == "full":
        cov = d.T @ d / x.shape[0] + reg_covar * jnp.eye(x.shape[1], dtype=x.dtype)
    else:
        cov = jnp.mean(d**2, axis=0) + reg_covar
    return GaussianParams(mean, cov)


def gaussian_log_prob(params: GaussianParams, x: jax.Array) -> jax.Array:
    """log N(x_n; μ, Σ) in nats for each row of ``x`` (N, D) -> (N,)."""
    if params.covariance.ndim == 1:
        return diag_log_prob(x, params.mean, params.covariance)
    return full_log_prob(x, params.mean, jnp.linalg.cholesky(params.covariance))


def gaussian_sample(params: GaussianParams, key: jax.Array, n: int) -> jax.Array:
    """``n`` draws μ + L ε, ε ~ N(0, I), L the Cholesky factor of Σ -> (n, D)."""
    eps = jax.random.normal(key, (n, params.mean.shape[-1]))
    if params.covariance.ndim == 1:
        return params.mean + eps * jnp.sqrt(params.covariance)
    return params.mean + eps @ jnp.linalg.cholesky(params.covariance).T


__all__ = ["COVARIANCE_TYPES", "GaussianParams", "fit_gaussian", "gaussian_log_prob", "gaussian_sample"]
