"""Principal component analysis, probabilistic PCA and robust projection.

Public: :class:`PCAParams`, :func:`fit_pca`, :func:`pca_project`,
:func:`pca_reconstruct`, :func:`explained_variance_ratio`, :func:`ppca_log_prob`,
:func:`ppca_sample`, :func:`pca_robust_project`, :func:`pca_block_robust_project`,
:func:`residual_variance`.

Conventions: ``x`` is (N, D) with rows as data points; ``components`` is
(M, D) with orthonormal rows in decreasing order of variance; variances are
those of the maximum-likelihood covariance S = (1/N) Σ_n (x_n − x̄)(x_n − x̄)ᵀ
(scikit-learn's ``explained_variance_`` divides by N − 1 instead, a factor
N / (N − 1) larger). Coefficients are z = U (x − x̄), reconstructions x̄ + Uᵀ z.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gen_jax.classical.gaussian import check_points
from gen_jax.likelihood import LOG_2PI

PCA_METHODS = ("auto", "covariance", "gram")


class PCAParams(NamedTuple):
    """A fitted PCA, which is also the ML probabilistic PCA (Tipping & Bishop, 1999).

    Attributes:
      mean: (D,) the data mean x̄.
      components: (M, D) orthonormal principal directions U, largest variance first.
      explained_variance: (M,) the eigenvalues λ_1 >= ... >= λ_M of S.
      noise_variance: () σ² = (1 / (D − M)) Σ_{i > M} λ_i, the mean discarded
        eigenvalue (PPCA's ML noise variance; 0 when M = D).
      total_variance: () trace(S) = Σ_i λ_i over all D eigenvalues.
      variance: (D,) the diagonal of S, each dimension's variance.
    """

    mean: jax.Array
    components: jax.Array
    explained_variance: jax.Array
    noise_variance: jax.Array
    total_variance: jax.Array
    variance: jax.Array


def _sign_fix(components: jax.Array) -> jax.Array:
    """Flips each component so its largest-magnitude entry is positive (deterministic signs)."""
    idx = jnp.argmax(jnp.abs(components), axis=1)
    signs = jnp.sign(components[jnp.arange(components.shape[0]), idx])
    return components * jnp.where(signs == 0, 1.0, signs)[:, None]


@functools.partial(jax.jit, static_argnames=("num_components", "use_gram"))
def _fit(x: jax.Array, num_components: int, use_gram: bool) -> PCAParams:
    n, d = x.shape
    mean = jnp.mean(x, axis=0)
    xc = x - mean
    if use_gram:
        # The inner-product trick (Turk & Pentland, 1991; the lecture's notation with
        # X̂ = xcᵀ, D × N): the N × N matrix G = X̂ᵀX̂ / N has the same non-zero
        # eigenvalues λ'_i as S = X̂X̂ᵀ / N, and if G u'_i = λ'_i u'_i then
        # u_i = X̂ u'_i / sqrt(N λ'_i) is a unit eigenvector of S.
        evals, evecs = jnp.linalg.eigh(xc @ xc.T / n)
        evals, evecs = evals[::-1][:num_components], evecs[:, ::-1][:, :num_components]
        evals = jnp.maximum(evals, 0.0)
        components = (xc.T @ evecs / jnp.sqrt(n * evals)).T
    else:
        # S is symmetric positive semi-definite, so its SVD is its eigendecomposition;
        # eigh is the cheaper and more accurate way to get it.
        evals, evecs = jnp.linalg.eigh(xc.T @ xc / n)
        evals = jnp.maximum(evals[::-1][:num_components], 0.0)
        components = evecs[:, ::-1][:, :num_components].T
    variance = jnp.mean(xc**2, axis=0)
    total = jnp.sum(variance)  # trace(S), the same for both paths
    discarded = d - num_components
    noise = jnp.maximum(total - jnp.sum(evals), 0.0) / discarded if discarded else jnp.zeros(())
    return PCAParams(mean, _sign_fix(components), evals, noise.astype(x.dtype), total, variance)


def fit_pca(x: jax.Array, num_components: int, method: str = "auto") -> PCAParams:
    """Principal components of the rows of ``x``.

    Args:
      x: (N, D) data, N >= 2.
      num_components: M, 1 <= M <= min(D, N − 1) (centred data have rank <= N − 1).
      method: "covariance" (eigendecomposition of the D × D covariance), "gram"
        (of the N × N inner-product matrix, cheaper when D > N), or "auto": the
        covariance when D <= N, else the Gram matrix.

    Returns:
      PCAParams.

    Raises:
      DataError: ``x`` is not a finite (N, D) array with N >= 2.
      ValueError: bad ``num_components`` or ``method``.
    """
    check_points(x, min_points=2)
    n, d = np.shape(x)
    if not isinstance(num_components, (int, np.integer)) or not 1 <= num_components <= min(d, n - 1):
        raise ValueError(f"num_components must be an integer in [1, min(D={d}, N-1={n - 1})], "
                         f"got {num_components!r}")
    if method not in PCA_METHODS:
        raise ValueError(f"method must be one of {PCA_METHODS}, got {method!r}")
    use_gram = method == "gram" or (method == "auto" and d > n)
    return _fit(jnp.asarray(x, jnp.float32), int(num_components), use_gram)


def pca_project(params: PCAParams, x: jax.Array) -> jax.Array:
    """Coefficients z = U (x − x̄) of the rows of ``x`` (N, D) -> (N, M)."""
    return (x - params.mean) @ params.components.T


def pca_reconstruct(params: PCAParams, z: jax.Array) -> jax.Array:
    """Data-space points x̄ + Uᵀ z from coefficients ``z`` (N, M) -> (N, D)."""
    return params.mean + z @ params.components


def explained_variance_ratio(params: PCAParams) -> jax.Array:
    """λ_i / trace(S) for the kept components -> (M,)."""
    return params.explained_variance / params.total_variance


def ppca_log_prob(params: PCAParams, x: jax.Array) -> jax.Array:
    """log N(x; x̄, W Wᵀ + σ² I) for each row of ``x`` (N, D) -> (N,), in nats.

    The ML probabilistic PCA of Tipping & Bishop (1999, "Probabilistic principal
    component analysis"): W = Uᵀ (Λ − σ² I)^{1/2} with σ² the mean discarded
    eigenvalue. C = W Wᵀ + σ² I has eigenvalue λ_i along u_i and σ² on their
    orthogonal complement, so with z = U (x − x̄) and r = x − x̄ − Uᵀ z,
    log p(x) = −½ [D log 2π + Σ_i log λ_i + (D − M) log σ² + Σ_i z_i² / λ_i + ‖r‖² / σ²].
    Needs σ² > 0 (M < D and data not confined to M dimensions).
    """
    d = params.mean.shape[-1]
    m = params.components.shape[0]
    xc = x - params.mean
    z = xc @ params.components.T
    r = xc - z @ params.components  # the residual directly: ‖xc‖² − ‖z‖² cancels in float32
    lam, s2 = params.explained_variance, params.noise_variance
    quad = jnp.sum(z**2 / lam, axis=-1) + jnp.sum(r**2, axis=-1) / s2
    log_det = jnp.sum(jnp.log(lam)) + (d - m) * jnp.log(s2)
    return -0.5 * (d * LOG_2PI + log_det + quad)


def ppca_sample(params: PCAParams, key: jax.Array, n: int, noise: bool = True) -> jax.Array:
    """``n`` draws x = x̄ + W z + σ ε with z ~ N(0, I_M), ε ~ N(0, I_D) -> (n, D).

    ``noise=False`` drops σ ε and returns the mean of p(x | z) (cleaner images).
    """
    k_z, k_eps = jax.random.split(key)
    m, d = params.components.shape
    z = jax.random.normal(k_z, (n, m)) * jnp.sqrt(
        jnp.maximum(params.explained_variance - params.noise_variance, 0.0))
    x = params.mean + z @ params.components
    if noise:
        x = x + jnp.sqrt(params.noise_variance) * jax.random.normal(k_eps, (n, d))
    return x


def residual_variance(params: PCAParams) -> jax.Array:
    """Per-dimension variance the M components leave unexplained -> (D,).

    v_j = S_jj − Σ_i λ_i u_ij², the mean squared reconstruction error of
    dimension j over the training data (floored at 1e-3 σ² so a dimension that
    was constant in training does not get infinite weight).
    """
    v = params.variance - params.explained_variance @ params.components**2
    return jnp.maximum(v, 1e-3 * params.noise_variance + 1e-12)


def _map_coeffs(params: PCAParams, xc: jax.Array, w: jax.Array, prior_weight: jax.Array) -> jax.Array:
    """argmin_a Σ_j w_j (xc_j − (Uᵀa)_j)² / v_j + prior_weight Σ_i a_i² / λ_i for one
    centred point: the posterior mean of its coefficients given the weighted pixels."""
    m = params.components.shape[0]
    uw = params.components * (w / residual_variance(params))
    gram = uw @ params.components.T + jnp.diag(prior_weight / params.explained_variance)
    # A relative 1e-6 jitter keeps plain least squares (prior_weight=0) solvable
    # when a subset does not constrain every component.
    gram = gram + 1e-6 * jnp.mean(jnp.diagonal(gram)) * jnp.eye(m, dtype=gram.dtype)
    return jnp.linalg.solve(gram, uw @ xc)


def _robust_one(params: PCAParams, xc: jax.Array, known: jax.Array, keys: jax.Array, *,
                inlier_sigmas: jax.Array, final_sigmas: jax.Array, prior_weight: jax.Array,
                subset_size: int, num_refits: int) -> jax.Array:
    """Hypothesize-and-test for one centred point (see pca_robust_project)."""
    m, d = params.components.shape
    std = jnp.sqrt(residual_variance(params))
    lam = params.explained_variance
    n_known = jnp.sum(known)
    k_subset = jnp.minimum(subset_size, n_known)
    k_trim = jnp.maximum(jnp.ceil(0.5 * k_subset), 1.0)

    def solve(w):
        return _map_coeffs(params, xc, w, prior_weight)

    def normalised_residual(a):
        return (xc - a @ params.components) / std

    def refit(a, bound):
        """Solve again on the known pixels within ``bound``; keep ``a`` if too few are."""
        inliers = known * (jnp.abs(normalised_residual(a)) < bound)
        enough = jnp.sum(inliers) >= jnp.where(prior_weight > 0, 1, m)
        return jnp.where(enough, solve(inliers), a)

    def smallest(score, k):
        """A 0/1 mask of the k entries with the smallest score."""
        return (jnp.argsort(jnp.argsort(score)) < k).astype(xc.dtype)

    def hypothesis(key, use_all):
        # 1. A random subset of the known pixels (hypothesis 0: all of them).
        draw = smallest(jnp.where(known > 0, jax.random.uniform(key, (d,)), 2.0), k_subset)
        w = jnp.where(use_all, known, draw)
        a = solve(w)
        # 2. Reduce the subset to its better-fitting half and solve again.
        res = jnp.abs(normalised_residual(a))
        a = solve(jnp.where(use_all, w, smallest(jnp.where(w > 0, res, jnp.inf), k_trim)))
        # 3. Grow to every known pixel the hypothesis explains, and solve again.
        for _ in range(num_refits):
            a = refit(a, inlier_sigmas)
        # Score: the robust negative log-posterior, a Gaussian likelihood truncated
        # at inlier_sigmas (MSAC; Torr & Zisserman, 2000) plus the prior on a.
        cost = jnp.sum(known * jnp.minimum(normalised_residual(a) ** 2, inlier_sigmas**2))
        return a, cost + prior_weight * jnp.sum(a**2 / lam)

    use_all = jnp.arange(keys.shape[0]) == 0
    coeffs, cost = jax.vmap(hypothesis)(keys, use_all)
    # A last refit with a looser bound re-admits clean pixels the strict bound
    # rejected (an occluder's pixels are typically many standard deviations off).
    return refit(coeffs[jnp.argmin(cost)], final_sigmas)


@functools.partial(jax.jit, static_argnames=("num_hypotheses", "subset_size", "num_refits"))
def _robust(params, x, known, key, inlier_sigmas, final_sigmas, prior_weight, *, num_hypotheses,
            subset_size, num_refits):
    n = x.shape[0]
    keys = jax.random.split(key, n * num_hypotheses).reshape(n, num_hypotheses)
    one = functools.partial(_robust_one, params, inlier_sigmas=inlier_sigmas, final_sigmas=final_sigmas,
                            prior_weight=prior_weight, subset_size=subset_size, num_refits=num_refits)
    return jax.vmap(one)(x - params.mean, known.astype(x.dtype), keys)


def pca_robust_project(params: PCAParams, x: jax.Array, mask: jax.Array | None = None, *,
                       key: jax.Array, num_hypotheses: int = 64, subset_size: int | None = None,
                       inlier_sigmas: float = 2.0, final_sigmas: float | None = None,
                       prior_weight: float = 2.0, num_refits: int = 2) -> jax.Array:
    """Coefficients of ``x`` estimated from the pixels that fit, ignoring occlusions.

    Hypothesize-and-test (Leonardis & Bischof, 2000, "Robust recognition using
    eigenimages"): for each point, ``num_hypotheses`` random subsets of
    ``subset_size`` known pixels each give coefficients by least squares on the
    subset; the subset is reduced to its better-fitting half and re-solved,
    then grown to all known pixels whose residual is below ``inlier_sigmas``
    standard deviations and re-solved (``num_refits`` times). The hypothesis
    with the best support wins: the smallest Σ_j min(r_j² / v_j, c²) over the
    known pixels (c = ``inlier_sigmas``) plus the prior term below, and is
    refitted once on the known pixels within ``final_sigmas``. Hypothesis 0 uses
    every known pixel, so clean inputs keep a fair chance; on clean digits the
    robust estimate still costs about a third more reconstruction error than
    the plain projection (the usual price of a robust estimator).

    Residuals are measured in units of the per-pixel residual standard deviation
    sqrt(v_j) of the training data (:func:`residual_variance`), and the least
    squares carry the prior a_i ~ N(0, λ_i) with weight ``prior_weight``: each
    solve is then the posterior mean of the coefficients given the chosen
    pixels, well posed for subsets smaller than M, and the prior makes
    coefficients that would "explain" an occluder unlikely. ``prior_weight=0``
    gives plain least squares (then ``subset_size`` should exceed M).

    Args:
      params: a fitted PCA (with M < D, so that there is a residual).
      x: (N, D) points, possibly corrupted.
      mask: (N, D) or (D,) booleans, True where a pixel is known (unknown pixels
        are never used); None = all pixels known, the corrupted ones unidentified.
      key: PRNG key for the random subsets.
      num_hypotheses: subsets tried per point.
      subset_size: pixels per random subset; None = M.
      inlier_sigmas: residual bound for inliers, in per-pixel standard deviations.
      final_sigmas: the looser bound of the last refit; None = 2 * inlier_sigmas.
      prior_weight: weight of the Gaussian prior on the coefficients. The default 2
        (the prior counted twice) shrinks the codes that would explain an occluder: on
        digits (M = 10 and 16) it lowers the error behind every occluder of
        experiments/robust_pca_occlusion.py by 2-17% against weight 1, for 2% more
        error on clean inputs.
      num_refits: grow-and-refit rounds per hypothesis.

    Returns:
      (N, M) coefficients; ``pca_reconstruct(params, coeffs)`` gives the restored points.

    Raises:
      DataError: ``x`` is not a finite (N, D) array.
      ValueError: ``x`` or ``mask`` does not match the PCA, or bad settings.
    """
    check_points(x)
    m, d = params.components.shape
    if np.shape(x)[1] != d:
        raise ValueError(f"x has dimension {np.shape(x)[1]}, the PCA was fitted on {d}")
    if mask is not None and np.shape(mask) not in (np.shape(x), (d,)):
        raise ValueError(f"mask must have shape {np.shape(x)} or ({d},), got {np.shape(mask)}")
    subset_size = m if subset_size is None else int(subset_size)
    if num_hypotheses < 1 or not 1 <= subset_size <= d or num_refits < 0:
        raise ValueError(f"need num_hypotheses >= 1, 1 <= subset_size <= {d}, num_refits >= 0; got "
                         f"{num_hypotheses}, {subset_size}, {num_refits}")
    if prior_weight == 0 and subset_size < m:
        raise ValueError(f"plain least squares (prior_weight=0) needs subset_size >= M={m}, "
                         f"got {subset_size}")
    final_sigmas = 2.0 * inlier_sigmas if final_sigmas is None else final_sigmas
    if inlier_sigmas <= 0 or final_sigmas <= 0 or prior_weight < 0:
        raise ValueError("need inlier_sigmas > 0, final_sigmas > 0 and prior_weight >= 0, got "
                         f"{inlier_sigmas}, {final_sigmas} and {prior_weight}")
    x = jnp.asarray(x, jnp.float32)
    known = jnp.ones(x.shape, bool) if mask is None else jnp.broadcast_to(jnp.asarray(mask, bool),
                                                                          x.shape)
    return _robust(params, x, known, key, jnp.float32(inlier_sigmas), jnp.float32(final_sigmas),
                   jnp.float32(prior_weight), num_hypotheses=int(num_hypotheses),
                   subset_size=subset_size, num_refits=int(num_refits))


def _block_masks(image_shape: tuple[int, ...], block_shapes) -> np.ndarray:
    """(K, D) 0/1 masks, 0 inside one placement of one block: every position of every shape."""
    h_img, w_img = image_shape[0], image_shape[1]
    channels = int(np.prod(image_shape[2:], dtype=int))
    masks = []
    for h, w in block_shapes:
        for r in range(h_img - h + 1):
            for c in range(w_img - w + 1):
                m = np.ones((h_img, w_img, channels), np.float32)
                m[r:r + h, c:c + w] = 0.0
                masks.append(m.reshape(-1))
    return np.stack(masks)


@jax.jit
def _block_robust(params, x, masks, prior_weight):
    v = residual_variance(params)

    def one(xc):
        def hypothesis(w):
            a = _map_coeffs(params, xc, w, prior_weight)
            cost = jnp.sum(w * (xc - a @ params.components) ** 2 / v)
            return a, cost + prior_weight * jnp.sum(a**2 / params.explained_variance)

        coeffs, cost = jax.vmap(hypothesis)(masks)
        return coeffs[jnp.argmin(cost)]

    return jax.vmap(one)(x - params.mean)


def pca_block_robust_project(params: PCAParams, x: jax.Array, image_shape: tuple[int, ...],
                             block_shapes, *, prior_weight: float = 2.0) -> jax.Array:
    """Coefficients of images corrupted by one block of known size at an unknown place.

    When the occluder's shape is known (say a 3x3 sticker) but not where it is, every
    placement of every shape in ``block_shapes`` is a hypothesis: the coefficients are
    solved (the MAP solve of :func:`pca_robust_project`, prior weight
    ``prior_weight``) on the pixels outside the block, and the placement whose
    visible pixels fit best (Σ r_j² / v_j over them plus the prior term) wins. All
    shapes must have the same area, so that every hypothesis leaves the same number
    of pixels to fit. On digits behind a bright block (experiments/robust_pca_occlusion.py)
    this comes close to being told the hidden pixels, where the shape-agnostic
    :func:`pca_robust_project` cannot: a blind search cannot tell a 9-pixel block
    from the digit's own variation that the components leave unexplained.

    Args:
      params: a fitted PCA of flattened images (D = prod(image_shape)).
      x: (N, D) flattened images, each with one block corrupted.
      image_shape: (H, W) or (H, W, C), the layout of the D pixels (row-major).
      block_shapes: the possible (h, w) sizes of the block, all of the same area.
      prior_weight: weight of the Gaussian prior on the coefficients.

    Returns:
      (N, M) coefficients.

    Raises:
      DataError: ``x`` is not a finite (N, D) array.
      ValueError: shapes that do not fit the PCA or each other.
    """
    check_points(x)
    d = params.components.shape[1]
    shapes = [tuple(int(s) for s in b) for b in block_shapes]
    if int(np.prod(image_shape)) != d or np.shape(x)[1] != d:
        raise ValueError(f"image_shape {tuple(image_shape)} and x of dimension {np.shape(x)[1]} "
                         f"must both match the PCA's dimension {d}")
    if not shapes or any(len(b) != 2 or not (1 <= b[0] <= image_shape[0] and 1 <= b[1] <= image_shape[1])
                         for b in shapes):
        raise ValueError(f"block_shapes must be (h, w) pairs that fit in {tuple(image_shape[:2])}, "
                         f"got {block_shapes!r}")
    if len({h * w for h, w in shapes}) != 1:
        raise ValueError(f"block_shapes must all have the same area, got {shapes}")
    if prior_weight < 0:
        raise ValueError(f"prior_weight must be >= 0, got {prior_weight}")
    masks = jnp.asarray(_block_masks(tuple(image_shape), shapes))
    return _block_robust(params, jnp.asarray(x, jnp.float32), masks, jnp.float32(prior_weight))


__all__ = ["PCAParams", "PCA_METHODS", "explained_variance_ratio", "fit_pca", "pca_block_robust_project",
           "pca_project", "pca_reconstruct", "pca_robust_project", "ppca_log_prob", "ppca_sample",
           "residual_variance"]
