"""Tests for gen_jax.data.toy2d."""

import numpy as np
import pytest

from gen_jax.data.toy2d import TOY2D_NAMES, sample_toy2d, toy2d_mode_std, toy2d_modes
from gen_jax.errors import DataError

# Written down independently of the module so the tests check the spec.
MIXTURE_STD = {"ring8": 0.01, "grid25": 0.05}  # the VEEGAN / PacGAN benchmark geometry
MIXTURES = {"ring8": 8, "grid25": 25}
LABELLED = {"ring8": 8, "grid25": 25, "moons": 2, "pinwheel": 5, "spirals": 2}
UNLABELLED = ("checkerboard", "swissroll")
N = 2000


def test_names_are_the_documented_ones() -> None:
    assert TOY2D_NAMES == (
        "ring8", "grid25", "moons", "checkerboard", "swissroll", "pinwheel", "spirals"
    )


@pytest.mark.parametrize("name", TOY2D_NAMES)
def test_shapes_and_dtypes(name: str) -> None:
    x, y = sample_toy2d(name, 37, seed=0)
    assert x.shape == (37, 2)
    assert x.dtype == np.float32
    assert np.all(np.isfinite(x))
    if name in UNLABELLED:
        assert y is None
    else:
        assert y is not None
        assert y.shape == (37,)
        assert y.dtype == np.int32
        assert y.min() >= 0 and y.max() < LABELLED[name]


@pytest.mark.parametrize("name", TOY2D_NAMES)
def test_deterministic(name: str) -> None:
    x1, y1 = sample_toy2d(name, 500, seed=123)
    x2, y2 = sample_toy2d(name, 500, seed=123)
    assert x1.tobytes() == x2.tobytes()
    if y1 is None:
        assert y2 is None
    else:
        assert y1.tobytes() == y2.tobytes()


@pytest.mark.parametrize("name", TOY2D_NAMES)
def test_seed_dependence(name: str) -> None:
    x1, _ = sample_toy2d(name, 500, seed=0)
    x2, _ = sample_toy2d(name, 500, seed=1)
    assert not np.array_equal(x1, x2)


@pytest.mark.parametrize("name", TOY2D_NAMES)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_within_box(name: str, seed: int) -> None:
    x, _ = sample_toy2d(name, N, seed=seed)
    assert np.all(np.abs(x) <= 4.5)  # grid25's outer means sit at +-4
    # Not degenerate: the data actually uses a good part of the box.
    assert np.abs(x).max() >= 0.9


@pytest.mark.parametrize("name", TOY2D_NAMES)
def test_modes_only_for_mixtures(name: str) -> None:
    modes = toy2d_modes(name)
    if name in MIXTURES:
        assert modes is not None
        assert modes.shape == (MIXTURES[name], 2)
        assert len(np.unique(modes, axis=0)) == MIXTURES[name]
    else:
        assert modes is None


def test_ring8_modes_geometry() -> None:
    modes = toy2d_modes("ring8")
    angles = 2 * np.pi * np.arange(8) / 8
    expected = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    np.testing.assert_allclose(modes, expected, atol=1e-6)


def test_grid25_modes_geometry() -> None:
    modes = toy2d_modes("grid25")
    vals = [-4.0, -2.0, 0.0, 2.0, 4.0]
    expected = np.array([(a, b) for a in vals for b in vals])
    np.testing.assert_allclose(modes, expected, atol=1e-6)


def test_modes_returns_fresh_copy() -> None:
    modes = toy2d_modes("ring8")
    modes[:] = 0.0
    assert np.abs(toy2d_modes("ring8")).max() > 0.5


@pytest.mark.parametrize("name", sorted(MIXTURES))
def test_mixture_samples_near_labelled_mode(name: str) -> None:
    x, y = sample_toy2d(name, N, seed=7)
    modes = toy2d_modes(name)
    offset = x - modes[y]
    # Per-coordinate 5-sigma bound: ~0.2% chance of any exceedance at n=2000,
    # whereas a radial 5-sigma bound fails for ~1% of seeds.
    std = toy2d_mode_std(name)
    assert std == MIXTURE_STD[name]
    assert np.abs(offset).max() < 5 * std
    dist = np.linalg.norm(offset, axis=1)
    # Spread matches the std: mean radius of a 2-D Gaussian is std*sqrt(pi/2).
    assert dist.mean() == pytest.approx(std * np.sqrt(np.pi / 2), rel=0.1)


@pytest.mark.parametrize("name", sorted(LABELLED))
def test_label_shares_uniform(name: str) -> None:
    k = LABELLED[name]
    _, y = sample_toy2d(name, N, seed=3)
    counts = np.bincount(y, minlength=k)
    assert len(counts) == k
    assert np.all(counts > 0)
    np.testing.assert_allclose(counts / N, 1.0 / k, atol=0.05)


def test_mixture_counts_vary_with_seed() -> None:
    # Components are drawn at random, not in fixed equal blocks.
    c0 = np.bincount(sample_toy2d("ring8", N, seed=0)[1], minlength=8)
    c1 = np.bincount(sample_toy2d("ring8", N, seed=1)[1], minlength=8)
    assert not np.array_equal(c0, c1)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_checkerboard_black_squares_only(seed: int) -> None:
    x, _ = sample_toy2d("checkerboard", N, seed=seed)
    assert np.all((x >= -2.0) & (x < 2.0))
    fl = np.floor(x).astype(np.int64)
    assert np.all((fl[:, 0] + fl[:, 1]) % 2 == 0)


def test_checkerboard_uniform() -> None:
    n = 8000
    x, _ = sample_toy2d("checkerboard", n, seed=11)
    fl = np.floor(x).astype(np.int64)
    cells = (fl[:, 0] + 2) * 4 + (fl[:, 1] + 2)
    counts = np.bincount(cells, minlength=16)
    black = [
        (i + 2) * 4 + (j + 2)
        for i in range(-2, 2) for j in range(-2, 2) if (i + j) % 2 == 0
    ]
    assert len(black) == 8
    np.testing.assert_allclose(counts[black] / n, 1 / 8, atol=0.02)
    # Within cells: quarter-cell bins on each axis are equally filled.
    frac = x - fl
    for axis in range(2):
        hist = np.bincount((frac[:, axis] * 4).astype(np.int64), minlength=4)
        np.testing.assert_allclose(hist / n, 0.25, atol=0.02)


def test_moons_shape() -> None:
    x, y = sample_toy2d("moons", N, seed=5)
    # Upper moon (0) sits higher on average than the lower moon (1).
    assert x[y == 0, 1].mean() > x[y == 1, 1].mean() + 0.5
    assert x[:, 0].min() < -1.5 and x[:, 0].max() > 1.5


def test_spirals_are_point_symmetric() -> None:
    x, y = sample_toy2d("spirals", N, seed=5)
    r0 = np.linalg.norm(x[y == 0], axis=1)
    r1 = np.linalg.norm(x[y == 1], axis=1)
    assert r0.max() > 2.5 and r1.max() > 2.5
    assert r0.mean() == pytest.approx(r1.mean(), rel=0.1)


def test_pinwheel_arms_are_angularly_separated() -> None:
    x, y = sample_toy2d("pinwheel", N, seed=5)
    # Each arm's mean direction differs from its neighbours'.
    mean_dirs = np.stack([x[y == k].mean(axis=0) for k in range(5)])
    angles = np.sort(np.arctan2(mean_dirs[:, 1], mean_dirs[:, 0]))
    gaps = np.diff(np.concatenate([angles, angles[:1] + 2 * np.pi]))
    np.testing.assert_allclose(gaps, 2 * np.pi / 5, atol=0.2)


def test_swissroll_radius() -> None:
    x, _ = sample_toy2d("swissroll", N, seed=5)
    r = np.linalg.norm(x, axis=1)
    assert 2.2 < r.max() < 2.8
    assert r.min() > 0.6


def test_unknown_name_lists_known_names() -> None:
    with pytest.raises(DataError, match="ring8"):
        sample_toy2d("nope", 10, seed=0)
    with pytest.raises(DataError, match="ring8"):
        toy2d_modes("nope")


@pytest.mark.parametrize("n", [0, -1])
def test_nonpositive_n_raises(n: int) -> None:
    with pytest.raises(DataError):
        sample_toy2d("ring8", n, seed=0)
