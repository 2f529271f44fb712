"""Deterministic numpy generators for toy 2-D distributions.

These datasets are used to train and evaluate generative models on problems
small enough to plot.  Every generator draws all of its randomness from
``np.random.default_rng(seed)``, so a given ``(name, n, seed)`` always yields
bit-identical arrays.  All datasets are scaled to lie roughly within
``[-4, 4]^2`` so that a single model/plot scale fits every one of them.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from gen_jax.errors import DataError

TOY2D_NAMES: tuple[str, ...] = (
    "ring8",
    "grid25",
    "moons",
    "checkerboard",
    "swissroll",
    "pinwheel",
    "spirals",
)

# Mixture datasets, with the geometry of the mode-collapse benchmarks (VEEGAN,
# PacGAN): ring8 = 8 Gaussians on a circle of radius 1 with std 0.01, grid25 =
# means {-4,-2,0,2,4}^2 with std 0.05. Components are tight relative to their
# spacing so that mode coverage is unambiguous to measure.
_MIXTURE_STD = {"ring8": 0.01, "grid25": 0.05}
_RING_RADIUS = 1.0
_RING_K = 8
_GRID_VALUES = (-4.0, -2.0, 0.0, 2.0, 4.0)

_MOONS_NOISE = 0.05
_SWISSROLL_NOISE = 0.1
_SWISSROLL_RADIUS = 2.5
_PINWHEEL_ARMS = 5
_PINWHEEL_SCALE = 1.5
_SPIRALS_TURNS = 1.5
_SPIRALS_NOISE = 0.08
_SPIRALS_RADIUS = 3.0

_Sampler = Callable[[np.random.Generator, int], tuple[np.ndarray, np.ndarray | None]]


def _ring8_modes() -> np.ndarray:
    angles = 2.0 * np.pi * np.arange(_RING_K) / _RING_K
    return _RING_RADIUS * np.stack([np.cos(angles), np.sin(angles)], axis=1)


def _grid25_modes() -> np.ndarray:
    # Row-major: component k sits at (values[k // 5], values[k % 5]).
    vals = np.asarray(_GRID_VALUES)
    gx, gy = np.meshgrid(vals, vals, indexing="ij")
    return np.stack([gx.ravel(), gy.ravel()], axis=1)


_MODES: dict[str, Callable[[], np.ndarray]] = {
    "ring8": _ring8_modes,
    "grid25": _grid25_modes,
}


def _sample_mixture(
    rng: np.random.Generator, n: int, means: np.ndarray, std: float
) -> tuple[np.ndarray, np.ndarray]:
    # Components are drawn i.i.d. rather than in equal blocks so that the
    # dataset is a genuine sample from the uniform mixture.
    y = rng.integers(0, means.shape[0], size=n)
    x = means[y] + std * rng.standard_normal((n, 2))
    return x, y


def _sample_ring8(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    return _sample_mixture(rng, n, _ring8_modes(), _MIXTURE_STD["ring8"])


def _sample_grid25(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    return _sample_mixture(rng, n, _grid25_modes(), _MIXTURE_STD["grid25"])


def _sample_moons(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    # Same geometry as sklearn.datasets.make_moons, but with angles drawn at
    # random instead of on a linspace so that samples are i.i.d.
    y = rng.integers(0, 2, size=n)
    t = np.pi * rng.random(n)
    outer = np.stack([np.cos(t), np.sin(t)], axis=1)
    inner = np.stack([1.0 - np.cos(t), 0.5 - np.sin(t)], axis=1)
    x = np.where(y[:, None] == 0, outer, inner)
    x = x + _MOONS_NOISE * rng.standard_normal((n, 2))
    # Raw extent is [-1, 2] x [-0.5, 1]; centre it and map x to [-2, 2].
    x = (x - np.array([0.5, 0.25])) * (4.0 / 3.0)
    return x, y


def _sample_checkerboard(rng: np.random.Generator, n: int) -> tuple[np.ndarray, None]:
    # Unit cells with lower-left corner (i, j), i, j in {-2..1}; "black" cells
    # are those with i + j even, i.e. floor(x) + floor(y) is even.
    corners = np.array(
        [(i, j) for i in range(-2, 2) for j in range(-2, 2) if (i + j) % 2 == 0],
        dtype=np.float64,
    )
    cell = rng.integers(0, corners.shape[0], size=n)
    lo = corners[cell]
    x = (lo + rng.random((n, 2))).astype(np.float32)
    # Rounding to float32 can push a point that was just below the upper cell
    # edge onto it, which would flip its square's colour; clamp it back.
    hi = np.nextafter((lo + 1.0).astype(np.float32), np.float32(-np.inf))
    return np.minimum(x, hi), None


def _sample_swissroll(rng: np.random.Generator, n: int) -> tuple[np.ndarray, None]:
    # sklearn.datasets.make_swiss_roll restricted to its 2-D (x, z) plane.
    t = 1.5 * np.pi * (1.0 + 2.0 * rng.random(n))
    x = np.stack([t * np.cos(t), t * np.sin(t)], axis=1)
    x = x + _SWISSROLL_NOISE * rng.standard_normal((n, 2))
    # The largest radius is t_max = 4.5 pi; map it to _SWISSROLL_RADIUS.
    return x * (_SWISSROLL_RADIUS / (4.5 * np.pi)), None


def _sample_pinwheel(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    # Johnson et al. (2016), "Composing graphical models with neural networks
    # for structured representations and fast inference", with arms chosen
    # i.i.d. instead of in equal blocks.
    radial_std, tangential_std, rate = 0.3, 0.05, 0.25
    y = rng.integers(0, _PINWHEEL_ARMS, size=n)
    rads = np.linspace(0.0, 2.0 * np.pi, _PINWHEEL_ARMS, endpoint=False)
    feats = rng.standard_normal((n, 2)) * np.array([radial_std, tangential_std])
    feats[:, 0] += 1.0
    # The twist grows with radius, which is what bends each arm.
    angles = rads[y] + rate * np.exp(feats[:, 0])
    cos, sin = np.cos(angles), np.sin(angles)
    x = np.stack(
        [feats[:, 0] * cos + feats[:, 1] * sin, feats[:, 1] * cos - feats[:, 0] * sin],
        axis=1,
    )
    # Typical radius is 1 +- 0.3; a factor 1.5 puts ~3 std at about 3.
    return _PINWHEEL_SCALE * x, y


def _sample_spirals(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    y = rng.integers(0, 2, size=n)
    t_max = 2.0 * np.pi * _SPIRALS_TURNS
    # sqrt makes the density along the arc roughly uniform, since arc length
    # of an Archimedean spiral grows ~ t^2.
    t = t_max * np.sqrt(rng.random(n))
    x = np.stack([-t * np.cos(t), t * np.sin(t)], axis=1) * (_SPIRALS_RADIUS / t_max)
    # The second spiral is the first rotated by pi, which interleaves them.
    x = np.where(y[:, None] == 0, x, -x)
    x = x + _SPIRALS_NOISE * rng.standard_normal((n, 2))
    return x, y


_SAMPLERS: dict[str, _Sampler] = {
    "ring8": _sample_ring8,
    "grid25": _sample_grid25,
    "moons": _sample_moons,
    "checkerboard": _sample_checkerboard,
    "swissroll": _sample_swissroll,
    "pinwheel": _sample_pinwheel,
    "spirals": _sample_spirals,
}


def _check_name(name: str) -> None:
    if name not in _SAMPLERS:
        raise DataError(
            f"unknown toy2d dataset {name!r}; known names: {', '.join(TOY2D_NAMES)}"
        )


def sample_toy2d(name: str, n: int, seed: int) -> tuple[np.ndarray, np.ndarray | None]:
    """Draw ``n`` i.i.d. samples from a toy 2-D distribution.

    Args:
        name: Dataset name, one of ``TOY2D_NAMES``.
        n: Number of samples; must be a positive integer.
        seed: Seed for ``np.random.default_rng``; the same ``(name, n, seed)``
            always gives bit-identical output.

    Returns:
        ``(x, y)`` where ``x`` is a float32 array of shape ``(n, 2)`` and ``y``
        is an int32 array of shape ``(n,)`` with the component / arm / class
        index, or ``None`` for unlabelled datasets (checkerboard, swissroll).

    Raises:
        DataError: If ``name`` is unknown or ``n`` is not a positive integer.
    """
    _check_name(name)
    # bool is an int subclass, but n=True is almost certainly a bug.
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n <= 0:
        raise DataError(f"n must be a positive integer, got {n!r}")
    rng = np.random.default_rng(seed)
    x, y = _SAMPLERS[name](rng, int(n))
    x = np.ascontiguousarray(x, dtype=np.float32)
    if y is not None:
        y = np.ascontiguousarray(y, dtype=np.int32)
    return x, y


def toy2d_modes(name: str) -> np.ndarray | None:
    """Return the mixture means of a mixture dataset.

    Args:
        name: Dataset name, one of ``TOY2D_NAMES``.

    Returns:
        A fresh float32 array of shape ``(K, 2)`` whose row ``k`` is the mean of
        the component labelled ``k`` by ``sample_toy2d``, for the mixture
        datasets (ring8, grid25); ``None`` for every other dataset.

    Raises:
        DataError: If ``name`` is unknown.
    """
    _check_name(name)
    if name not in _MODES:
        return None
    return _MODES[name]().astype(np.float32)


def toy2d_mode_std(name: str) -> float | None:
    """The per-coordinate std of each component of a mixture dataset (ring8, grid25).

    Returns ``None`` for the datasets that are not Gaussian mixtures.

    Raises:
        DataError: If ``name`` is unknown.
    """
    _check_name(name)
    return _MIXTURE_STD.get(name)
