"""SSIM (Wang et al., 2004, "Image Quality Assessment: From Error Visibility to
Structural Similarity") of NHWC image batches, differentiable, in JAX.

Local statistics under an 11x11 Gaussian window (sigma 1.5), population
(co)variances, constants C1 = (0.01 L)^2 and C2 = (0.03 L)^2 for data range L,
and only the windows wholly inside the image ('valid'), as scikit-image's
``structural_similarity(gaussian_weights=True, use_sample_covariance=False)``.
DRAEM's reconstruction loss is 1 - SSIM.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def gaussian_window(size: int = 11, sigma: float = 1.5) -> np.ndarray:
    """The normalized 1-D Gaussian window."""
    t = np.arange(size, dtype=np.float64) - (size - 1) / 2
    w = np.exp(-t ** 2 / (2 * sigma ** 2))
    return (w / w.sum()).astype(np.float32)


def _filter(x: jax.Array, w: jax.Array) -> jax.Array:
    """Separable 'valid' filtering of each channel of (N, H, W, C) by window ``w``."""
    n, h, wd, c = x.shape
    y = jnp.moveaxis(x, -1, 1).reshape(n * c, h, wd, 1)
    k = len(w)
    y = jax.lax.conv_general_dilated(y, w.reshape(k, 1, 1, 1), (1, 1), "VALID",
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
    y = jax.lax.conv_general_dilated(y, w.reshape(1, k, 1, 1), (1, 1), "VALID",
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return jnp.moveaxis(y.reshape(n, c, h - k + 1, wd - k + 1), 1, -1)


def gaussian_blur(maps: jax.Array, sigma: float, truncate: float = 4.0) -> jax.Array:
    """Gaussian smoothing of each (H, W) map of a (N, H, W) batch, ``sigma`` pixels, the
    kernel cut at ``truncate`` sigmas and the maps mirrored at their edges: the JAX twin of
    ``scipy.ndimage.gaussian_filter(maps, (0, sigma, sigma), mode="reflect")``
    (gen_jax.anomaly.evaluate.smooth). ``sigma`` <= 0: unchanged."""
    if sigma <= 0:
        return maps
    r = int(truncate * sigma + 0.5)
    padded = jnp.pad(maps, ((0, 0), (r, r), (r, r)), mode="symmetric")
    return _filter(padded[..., None], jnp.asarray(gaussian_window(2 * r + 1, sigma)))[..., 0]


def ssim_map(x: jax.Array, y: jax.Array, data_range: float, window: int = 11,
             sigma: float = 1.5) -> jax.Array:
    """Per-location, per-channel SSIM of two (N, H, W, C) batches: (N, H-w+1, W-w+1, C)."""
    if x.shape != y.shape or x.ndim != 4:
        raise ValueError(f"ssim needs two NHWC batches of one shape, got {x.shape} and {y.shape}")
    if min(x.shape[1:3]) < window:
        raise ValueError(f"ssim: images {x.shape[1:3]} are smaller than the {window}px window")
    w = jnp.asarray(gaussian_window(window, sigma))
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mu_x, mu_y = _filter(x, w), _filter(y, w)
    var_x = _filter(x * x, w) - mu_x ** 2
    var_y = _filter(y * y, w) - mu_y ** 2
    cov = _filter(x * y, w) - mu_x * mu_y
    return ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x ** 2 + mu_y ** 2 + c1) * (var_x + var_y + c2))


def ssim(x: jax.Array, y: jax.Array, data_range: float, window: int = 11, sigma: float = 1.5
         ) -> jax.Array:
    """Mean SSIM per example, (N,); 1 = identical images."""
    return jnp.mean(ssim_map(x, y, data_range, window, sigma), axis=(1, 2, 3))
