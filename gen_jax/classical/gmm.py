"""Gaussian mixture models fitted by expectation-maximisation, in one compiled function.

Public: :class:`GMMParams`, :func:`fit_gmm`, :func:`gmm_log_prob`,
:func:`gmm_predict`, :func:`gmm_predict_proba`, :func:`gmm_sample`, and
:func:`gmm_em` (EM from given parameters).

``fit_gmm`` runs, for each of ``num_restarts`` keys (vmapped): k-means++
seeding (Arthur & Vassilvitskii, 2007) and Lloyd's k-means iterations from
those centres (as scikit-learn's GaussianMixture initialises: hard
responsibilities from the converged k-means partition, then an M-step), then EM (Dempster, Laird & Rubin,
1977; Bishop, PRML §9.2) inside a ``lax.while_loop`` that stops when the mean
log-likelihood changes by less than ``tol`` or after ``max_iters`` iterations;
the restart with the best final likelihood is kept. Responsibilities are
computed in log space with log-sum-exp, component densities through Cholesky
factors, and ``reg_covar`` is added to every covariance's diagonal (as in
scikit-learn) so a component collapsing onto few points stays positive definite.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gen_jax.classical.gaussian import check_covariance_type, check_points, diag_log_prob
from gen_jax.likelihood import LOG_2PI

# scikit-learn adds 10 machine epsilons to each component's soft count so an
# empty component gives finite (if meaningless) parameters instead of 0/0.
_COUNT_EPS = 10.0 * float(jnp.finfo(jnp.float32).eps)
# scikit-learn's KMeans defaults, which its GaussianMixture uses for init_params="kmeans".
_KMEANS_MAX_ITERS = 300
_KMEANS_TOL = 1e-4


class GMMParams(NamedTuple):
    """A fitted mixture and how the fit went.

    Attributes:
      weights: (K,) mixing proportions, summing to 1.
      means: (K, D) component means.
      covariances: (K, D, D) ("full") or (K, D) ("diag", the variances).
      log_likelihood: () mean log-likelihood per training point (nats) at these parameters.
      num_iters: () EM iterations run (M-steps after the k-means++ initialisation).
      converged: () whether the likelihood changed by less than ``tol`` before ``max_iters``.
      log_likelihood_trace: (max_iters + 1,) mean log-likelihood after the
        initialisation (entry 0) and after each EM iteration; NaN past ``num_iters``.
    """

    weights: jax.Array
    means: jax.Array
    covariances: jax.Array
    log_likelihood: jax.Array
    num_iters: jax.Array
    converged: jax.Array
    log_likelihood_trace: jax.Array


def _cholesky(a: jax.Array) -> jax.Array:
    """Lower Cholesky factor of one SPD matrix (D, D) in plain jnp ops (NaN if not definite).

    Column j of L: l_jj = sqrt(a_jj − Σ_{k<j} l_jk²), l_ij = (a_ij − Σ_{k<j} l_ik l_jk) / l_jj
    for i > j (Golub & Van Loan, Alg. 4.2.1). Why not jnp.linalg.cholesky: on CPU
    it is a LAPACK call that, batched (components x restarts) inside the EM
    while_loop, deadlocked XLA's thread pool with 8 fake CPU devices.
    """
    d = a.shape[-1]
    idx = jnp.arange(d)

    def column(j, low):
        col = a[:, j] - low @ low[j]      # row j of L is still zero from column j on
        diag = jnp.sqrt(col[j])
        return low.at[:, j].set(jnp.where(idx > j, col / diag, jnp.where(idx == j, diag, 0.0)))

    return jax.lax.fori_loop(0, d, column, jnp.zeros_like(a))


def _tril_inverse(low: jax.Array) -> jax.Array:
    """L⁻¹ of a lower-triangular (D, D) matrix by forward substitution, row by row."""
    eye = jnp.eye(low.shape[-1], dtype=low.dtype)

    def row(i, inv):                        # rows >= i of inv are still zero
        return inv.at[i].set((eye[i] - low[i] @ inv) / low[i, i])

    return jax.lax.fori_loop(0, low.shape[-1], row, jnp.zeros_like(low))


def _component_log_probs(x: jax.Array, means: jax.Array, covariances: jax.Array) -> jax.Array:
    """log N(x_n; μ_k, Σ_k) -> (N, K).

    Full covariances: log N = -½ (D log 2π + log|Σ_k| + ‖L_k⁻¹(x_n − μ_k)‖²), the
    Mahalanobis term as one batched matrix product.
    """
    if covariances.ndim == 2:  # diagonal
        return jax.vmap(lambda m, v: diag_log_prob(x, m, v), out_axes=1)(means, covariances)
    chol = jax.vmap(_cholesky)(covariances)
    prec_chol = jax.vmap(_tril_inverse)(chol)
    log_det = 2.0 * jnp.sum(jnp.log(jnp.diagonal(chol, axis1=1, axis2=2)), axis=1)
    z = jnp.einsum("kij,knj->kni", prec_chol, x[None] - means[:, None])     # (K, N, D)
    return (-0.5 * (x.shape[-1] * LOG_2PI + log_det[:, None] + jnp.sum(z**2, axis=-1))).T


def _e_step(x: jax.Array, weights: jax.Array, means: jax.Array,
            covariances: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Log-responsibilities (N, K) and the mean log-likelihood.

    log r_nk = log π_k + log N(x_n; μ_k, Σ_k) − log Σ_j π_j N(x_n; μ_j, Σ_j),
    normalised with log-sum-exp so far-away points do not underflow to 0/0.
    """
    joint = jnp.log(weights) + _component_log_probs(x, means, covariances)
    log_px = jax.nn.logsumexp(joint, axis=1, keepdims=True)
    return joint - log_px, jnp.mean(log_px)


def _m_step(x: jax.Array, resp: jax.Array, covariance_type: str,
            reg_covar: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Maximises the expected complete-data log-likelihood given responsibilities (N, K).

    N_k = Σ_n r_nk, π_k = N_k / N, μ_k = Σ_n r_nk x_n / N_k,
    Σ_k = Σ_n r_nk (x_n − μ_k)(x_n − μ_k)ᵀ / N_k (+ reg_covar I).
    """
    nk = jnp.sum(resp, axis=0) + _COUNT_EPS
    means = (resp.T @ x) / nk[:, None]
    diff = x[None, :, :] - means[:, None, :]                       # (K, N, D)
    if covariance_type == "full":
        cov = jnp.einsum("nk,knd,kne->kde", resp, diff, diff) / nk[:, None, None]
        cov = cov + reg_covar * jnp.eye(x.shape[1], dtype=x.dtype)
    else:
        cov = jnp.einsum("nk,knd->kd", resp, diff**2) / nk[:, None] + reg_covar
    return nk / jnp.sum(nk), means, cov


def _kmeans_plus_plus(key: jax.Array, x: jax.Array, num_components: int) -> jax.Array:
    """Greedy k-means++ seeding (Arthur & Vassilvitskii, 2007; the variant
    scikit-learn uses): the first centre uniformly; then 2 + ⌊ln K⌋ candidates
    drawn with probability proportional to D(x)², the squared distance to the
    nearest centre so far, keeping the candidate that most lowers Σ_n D(x_n)².
    Returns (K, D) centres."""
    num_trials = 2 + int(np.log(num_components))
    k_first, k_rest = jax.random.split(key)
    first = x[jax.random.randint(k_first, (), 0, x.shape[0])]
    centres = jnp.zeros((num_components, x.shape[1]), x.dtype).at[0].set(first)
    d2 = jnp.sum((x - first) ** 2, axis=1)

    def body(i, carry):
        centres, d2 = carry
        # All distances zero (fewer distinct points than K): pick uniformly.
        logits = jnp.where(jnp.sum(d2) > 0, jnp.log(d2), 0.0)
        cand = x[jax.random.categorical(jax.random.fold_in(k_rest, i), logits, shape=(num_trials,))]
        cand_d2 = jnp.minimum(d2, jnp.sum((x[None] - cand[:, None]) ** 2, axis=-1))  # (trials, N)
        best = jnp.argmin(jnp.sum(cand_d2, axis=1))
        return centres.at[i].set(cand[best]), cand_d2[best]

    centres, _ = jax.lax.fori_loop(1, num_components, body, (centres, d2))
    return centres


def _em(x: jax.Array, params: tuple[jax.Array, jax.Array, jax.Array], max_iters: int,
        tol: jax.Array, reg_covar: jax.Array) -> GMMParams:
    """EM from ``(weights, means, covariances)`` until converged, in one while_loop."""
    covariance_type = "diag" if params[2].ndim == 2 else "full"
    log_resp, ll = _e_step(x, *params)
    trace = jnp.full((max_iters + 1,), jnp.nan, x.dtype).at[0].set(ll)

    def cond(carry):
        _, _, ll, prev_ll, it, _ = carry
        # NaN (a covariance that lost definiteness) compares False and stops the loop.
        return (it < max_iters) & (jnp.abs(ll - prev_ll) >= tol)

    def body(carry):
        _, log_resp, ll, _, it, trace = carry
        params = _m_step(x, jnp.exp(log_resp), covariance_type, reg_covar)
        log_resp, new_ll = _e_step(x, *params)
        return params, log_resp, new_ll, ll, it + 1, trace.at[it + 1].set(new_ll)

    init = (params, log_resp, ll, jnp.array(-jnp.inf, x.dtype), jnp.array(0, jnp.int32), trace)
    params, _, ll, prev_ll, it, trace = jax.lax.while_loop(cond, body, init)
    return GMMParams(*params, ll, it, jnp.abs(ll - prev_ll) < tol, trace)


def _nearest(x: jax.Array, centres: jax.Array) -> jax.Array:
    """Index of the nearest centre (squared Euclidean distance) for each row of ``x`` -> (N,)."""
    # ‖x‖² is the same for every centre, so argmin of ‖c‖² − 2 x·c is the nearest one.
    return jnp.argmin(jnp.sum(centres**2, axis=1) - 2.0 * x @ centres.T, axis=1)


def _lloyd(x: jax.Array, centres: jax.Array, max_iters: int = _KMEANS_MAX_ITERS,
           tol: float = _KMEANS_TOL) -> jax.Array:
    """Lloyd's k-means from ``centres`` (K, D); returns the final partition's labels (N,).

    Each iteration assigns every point to its nearest centre and moves each centre
    to the mean of its points (an empty cluster keeps its centre). Stops, as
    scikit-learn's KMeans does, when no label changes or when the centres moved
    by at most tol × (mean per-feature variance of x) in total squared distance,
    or after ``max_iters`` iterations; the labels are then those of the final centres.
    """
    k = centres.shape[0]
    tol_abs = tol * jnp.mean(jnp.var(x, axis=0))

    def cond(carry):
        _, _, shift, changed, it = carry
        return (it < max_iters) & changed & (shift > tol_abs)

    def body(carry):
        centres, labels, _, _, it = carry
        new_labels = _nearest(x, centres)
        onehot = jax.nn.one_hot(new_labels, k, dtype=x.dtype)
        counts = jnp.sum(onehot, axis=0)
        moved = (onehot.T @ x) / jnp.maximum(counts, 1.0)[:, None]
        new_centres = jnp.where(counts[:, None] > 0, moved, centres)
        shift = jnp.sum((new_centres - centres) ** 2)
        return new_centres, new_labels, shift, jnp.any(new_labels != labels), it + 1

    init = (centres, jnp.full((x.shape[0],), -1, jnp.int32), jnp.array(jnp.inf, x.dtype),
            jnp.array(True), jnp.array(0, jnp.int32))
    centres, *_ = jax.lax.while_loop(cond, body, init)
    return _nearest(x, centres)


def _fit_one(key: jax.Array, x: jax.Array, num_components: int, covariance_type: str,
             max_iters: int, tol: jax.Array, reg_covar: jax.Array) -> GMMParams:
    """One restart: k-means++ centres, Lloyd's k-means, an M-step from its partition, then EM."""
    labels = _lloyd(x, _kmeans_plus_plus(key, x, num_components))
    resp0 = jax.nn.one_hot(labels, num_components, dtype=x.dtype)
    return _em(x, _m_step(x, resp0, covariance_type, reg_covar), max_iters, tol, reg_covar)


@functools.partial(jax.jit, static_argnames=("num_components", "covariance_type", "max_iters",
                                             "num_restarts"))
def _fit(x, key, tol, reg_covar, *, num_components, covariance_type, max_iters, num_restarts):
    keys = jax.random.split(key, num_restarts)
    fits = jax.vmap(lambda k: _fit_one(k, x, num_components, covariance_type, max_iters, tol,
                                       reg_covar))(keys)
    score = jnp.where(jnp.isnan(fits.log_likelihood), -jnp.inf, fits.log_likelihood)
    best = jnp.argmax(score)
    return jax.tree.map(lambda a: a[best], fits)


def fit_gmm(x: jax.Array, num_components: int, key: jax.Array, covariance_type: str = "full",
            max_iters: int = 100, tol: float = 1e-3, num_restarts: int = 1,
            reg_covar: float = 1e-6) -> GMMParams:
    """Fits a K-component Gaussian mixture to the rows of ``x`` by EM.

    Args:
      x: (N, D) data.
      num_components: K, 1 <= K <= N.
      key: a PRNG key; restart r seeds k-means++ from ``split(key, num_restarts)[r]``,
        then runs k-means to convergence (at most 300 Lloyd iterations) and
        starts EM from the M-step of its partition.
      covariance_type: "full" ((K, D, D) covariances) or "diag" ((K, D) variances).
      max_iters: the most EM iterations per restart.
      tol: stop when the mean log-likelihood per point changes by less than this.
      num_restarts: independent initialisations, run in parallel (vmap); the one
        with the highest final log-likelihood is returned.
      reg_covar: added to each covariance's diagonal.

    Returns:
      GMMParams of the best restart.

    Raises:
      DataError: ``x`` is not a finite (N, D) array.
      ValueError: bad K (e.g. more components than points), covariance type or
        iteration settings; or, outside a jit trace, every restart diverged.
    """
    check_points(x)
    check_covariance_type(covariance_type)
    n = np.shape(x)[0]
    if not isinstance(num_components, (int, np.integer)) or not 1 <= num_components <= n:
        raise ValueError(f"num_components must be an integer in [1, {n}] (the number of points), "
                         f"got {num_components!r}")
    if max_iters < 1 or num_restarts < 1:
        raise ValueError(f"max_iters and num_restarts must be >= 1, got {max_iters} and {num_restarts}")
    if tol < 0 or reg_covar < 0:
        raise ValueError(f"tol and reg_covar must be >= 0, got {tol} and {reg_covar}")
    params = _fit(jnp.asarray(x, jnp.float32), key, jnp.float32(tol), jnp.float32(reg_covar),
                  num_components=int(num_components), covariance_type=covariance_type,
                  max_iters=int(max_iters), num_restarts=int(num_restarts))
    if not isinstance(params.log_likelihood, jax.core.Tracer) and not np.isfinite(
            float(params.log_likelihood)):
        raise ValueError("every EM restart produced a non-finite likelihood (a covariance lost "
                         f"positive definiteness): increase reg_covar (now {reg_covar})")
    return params


_em_jit = jax.jit(_em, static_argnames=("max_iters",))


def gmm_em(x: jax.Array, weights: jax.Array, means: jax.Array, covariances: jax.Array,
           max_iters: int = 100, tol: float = 1e-3, reg_covar: float = 1e-6) -> GMMParams:
    """Runs EM from given parameters (a warm start; ``fit_gmm`` seeds them itself).

    Args:
      x: (N, D) data.
      weights, means, covariances: the starting mixture, (K,), (K, D) and
        (K, D, D) (full) or (K, D) (diag); the first E-step uses them as given.
      max_iters, tol, reg_covar: as in :func:`fit_gmm`.

    Returns:
      GMMParams at convergence.
    """
    check_points(x)
    weights, means, covariances = (jnp.asarray(a, jnp.float32) for a in (weights, means, covariances))
    k, d = means.shape
    if weights.shape != (k,) or np.shape(x)[1] != d or covariances.shape not in ((k, d, d), (k, d)):
        raise ValueError(f"inconsistent shapes: x {np.shape(x)}, weights {weights.shape}, means "
                         f"{means.shape}, covariances {covariances.shape}")
    return _em_jit(jnp.asarray(x, jnp.float32), (weights, means, covariances), int(max_iters),
                   jnp.float32(tol), jnp.float32(reg_covar))


def gmm_log_prob(params: GMMParams, x: jax.Array) -> jax.Array:
    """log p(x_n) = log Σ_k π_k N(x_n; μ_k, Σ_k) in nats for each row of ``x`` (N, D) -> (N,)."""
    joint = jnp.log(params.weights) + _component_log_probs(x, params.means, params.covariances)
    return jax.nn.logsumexp(joint, axis=1)


def gmm_predict_proba(params: GMMParams, x: jax.Array) -> jax.Array:
    """Responsibilities p(k | x_n) -> (N, K)."""
    return jnp.exp(_e_step(x, params.weights, params.means, params.covariances)[0])


def gmm_predict(params: GMMParams, x: jax.Array) -> jax.Array:
    """The most responsible component of each row of ``x`` -> (N,) int32."""
    joint = jnp.log(params.weights) + _component_log_probs(x, params.means, params.covariances)
    return jnp.argmax(joint, axis=1).astype(jnp.int32)


def gmm_sample(params: GMMParams, key: jax.Array, n: int) -> jax.Array:
    """``n`` draws: k ~ Categorical(π), then x ~ N(μ_k, Σ_k) -> (n, D)."""
    k_comp, k_noise = jax.random.split(key)
    comp = jax.random.categorical(k_comp, jnp.log(params.weights), shape=(n,))
    eps = jax.random.normal(k_noise, (n, params.means.shape[1]), params.means.dtype)
    if params.covariances.ndim == 2:
        return params.means[comp] + eps * jnp.sqrt(params.covariances[comp])
    chol = jax.vmap(_cholesky)(params.covariances)
    return params.means[comp] + jnp.einsum("nij,nj->ni", chol[comp], eps)


__all__ = ["GMMParams", "fit_gmm", "gmm_em", "gmm_log_prob", "gmm_predict", "gmm_predict_proba", "gmm_sample"]
