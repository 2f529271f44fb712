"""gen_jax.value_range: round trips, both level conventions against the data
pipeline's output on the real digits, clipping, and numpy / jax / jit behaviour."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from conftest import tiny_vae_config

from gen_jax.data import get_source, preprocess
from gen_jax.data.sources import DataInfo
from gen_jax.value_range import ValueRange

RANGES = [(0.0, 1.0), (-1.0, 1.0), (-0.5, 3.0)]


@pytest.mark.parametrize("lo,hi", RANGES)
@pytest.mark.parametrize("levels", [2, 17, 256])
def test_levels_round_trip_and_sit_on_the_documented_grid(lo, hi, levels):
    vr = ValueRange(lo, hi, levels)
    k = np.arange(levels)
    x = vr.from_levels(k)
    assert x.dtype == np.float32
    # x_k = lo + (hi - lo) k / (L - 1): the ends are lo and hi, the spacing is level_spacing
    np.testing.assert_allclose(x, lo + (hi - lo) * k / (levels - 1), rtol=1e-6, atol=1e-6)
    assert (x[0], x[-1]) == (np.float32(lo), np.float32(hi))
    assert vr.level_spacing == pytest.approx((hi - lo) / (levels - 1))
    np.testing.assert_array_equal(vr.levels(x), k)
    # anything within less than half a spacing of a level rounds to it; beyond the ends, clipped
    off = 0.49 * vr.level_spacing * np.where(k % 2, 1.0, -1.0)
    np.testing.assert_array_equal(vr.levels(x + off), k)
    np.testing.assert_array_equal(vr.levels(np.array([lo - 5.0, hi + 5.0])), [0, levels - 1])
    np.testing.assert_allclose(vr.level_to_unit(k), k / (levels - 1), rtol=1e-6)


@pytest.mark.parametrize("lo,hi", RANGES)
@pytest.mark.parametrize("levels", [2, 17, 256])
def test_dequantized_bins_tile_the_range_and_round_trip(lo, hi, levels):
    vr = ValueRange(lo, hi, levels)
    k = np.arange(levels)
    assert vr.bin_width == pytest.approx((hi - lo) / levels)
    for u in (0.001, 0.25, 0.5, 0.999):  # (u = 0 exactly may round into the bin below)
        y = vr.dequantized(k, u)
        np.testing.assert_allclose(y, lo + (hi - lo) * (k + u) / levels, rtol=1e-6, atol=1e-6)
        np.testing.assert_array_equal(vr.dequantized_levels(y), k)
    # bin k is [lo + k w, lo + (k + 1) w): its left edge belongs to it, the right one not
    edges = lo + vr.bin_width * np.arange(levels + 1)
    np.testing.assert_array_equal(vr.dequantized_levels(edges[:-1] + 1e-6 * (hi - lo)), k)
    np.testing.assert_array_equal(vr.dequantized_levels(np.array([lo - 1.0, hi, hi + 1.0])),
                                  [0, levels - 1, levels - 1])


@pytest.mark.parametrize("lo,hi", RANGES)
def test_unit_interval_round_trip_affine_tanh_and_clip(lo, hi):
    vr = ValueRange(lo, hi)
    x = np.linspace(lo - 1.0, hi + 1.0, 41)
    np.testing.assert_allclose(vr.from_unit(vr.to_unit(x)), x, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(vr.to_unit(np.array([lo, hi])), [0.0, 1.0])
    scale, shift = vr.unit_affine()
    np.testing.assert_allclose(scale * x + shift, vr.to_unit(x), rtol=1e-12, atol=1e-12)
    c = vr.clip(x)
    assert c.min() == lo and c.max() == hi
    np.testing.assert_array_equal(c, np.minimum(np.maximum(x, lo), hi))
    h = np.array([-30.0, -1.0, 0.0, 1.0, 30.0])
    t = vr.from_tanh(h)
    np.testing.assert_allclose(t, lo + (hi - lo) * (np.tanh(h) + 1.0) / 2.0, rtol=1e-12)
    assert t[2] == pytest.approx((lo + hi) / 2) and t[0] == pytest.approx(lo) and t[-1] == pytest.approx(hi)
    assert vr.width == hi - lo


@pytest.mark.parametrize("value_range", [(0.0, 1.0), (-1.0, 1.0)])
def test_both_conventions_are_what_the_data_pipeline_gives_on_real_digits(value_range):
    cfg = tiny_vae_config(**{"data.value_range": value_range})
    source = get_source(cfg.data, "train")
    info, raw = source.info, source.get(np.arange(300))[0]
    lo, hi = value_range
    levels = info.num_levels
    assert levels == 17

    # plain levels: x = lo + (hi - lo) k / (L - 1), bit for bit what ValueRange computes
    plain_cfg = tiny_vae_config(**{"data.value_range": value_range, "data.dequantize": "none"})
    vr = ValueRange.from_config(plain_cfg.data, info)
    assert vr == ValueRange(lo, hi, 17)
    x = preprocess(raw, info, plain_cfg.data, None)
    np.testing.assert_allclose(x, lo + (hi - lo) * raw / 16.0, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(x, vr.from_levels(raw))
    np.testing.assert_array_equal(vr.levels(x), raw)

    # dequantized: y = lo + (hi - lo)(k + u) / L with the pipeline's own u
    deq_cfg = tiny_vae_config(**{"data.value_range": value_range, "data.dequantize": "uniform"})
    y = preprocess(raw, info, deq_cfg.data, np.random.default_rng(7))
    u = np.random.default_rng(7).random(raw.shape, dtype=np.float32)
    np.testing.assert_allclose(y, lo + (hi - lo) * (raw + u) / 17.0, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(y, vr.dequantized(raw, u))
    np.testing.assert_array_equal(vr.dequantized_levels(y), raw)
    # the two conventions differ (k / 16 vs (k + u) / 17) but name the same level
    assert not np.allclose(x, y)
    np.testing.assert_array_equal(vr.levels(vr.from_levels(vr.dequantized_levels(y))), raw)

    # binarized: two levels, the range's ends
    bin_cfg = tiny_vae_config(**{"data.value_range": value_range, "data.dequantize": "none",
                                 "data.binarize": "threshold"})
    vb = ValueRange.from_config(bin_cfg.data, info)
    assert vb.num_levels == 2
    b = preprocess(raw, info, bin_cfg.data, None)
    assert set(np.unique(b)) <= {np.float32(lo), np.float32(hi)}
    np.testing.assert_array_equal(vb.levels(b), raw / 16.0 > 0.5)


def test_from_config_levels_and_continuous_data():
    data = ml_collections.ConfigDict({"value_range": (0, 1), "binarize": "none"})
    image = DataInfo("digits", "image", (8, 8, 1), 17, 10)
    vector = DataInfo("ring8", "vector", (2,), None, None)
    assert ValueRange.from_config(data, image) == ValueRange(0.0, 1.0, 17)
    vr = ValueRange.from_config(data, vector)
    assert vr.num_levels is None and isinstance(vr.lo, float)
    with pytest.raises(ValueError, match="no num_levels"):
        vr.levels(np.zeros(3))
    with pytest.raises(ValueError, match="hi > lo"):
        ValueRange(1.0, 1.0)
    with pytest.raises(ValueError, match="num_levels"):
        ValueRange(0.0, 1.0, 1)
    # the discrete-likelihood offset is D log(bin_width)
    assert math.log(ValueRange(-1.0, 1.0, 256).bin_width) == pytest.approx(math.log(2 / 256))


def test_numpy_in_numpy_out_jax_in_jax_out_and_under_jit():
    vr = ValueRange(-1.0, 1.0, 17)
    k = np.arange(17, dtype=np.int32)
    assert isinstance(vr.from_levels(k), np.ndarray)
    assert isinstance(vr.levels(np.zeros(3, np.float32)), np.ndarray)
    kj = jnp.asarray(k)
    xj = vr.from_levels(kj)
    assert isinstance(xj, jax.Array) and xj.dtype == jnp.float32
    np.testing.assert_array_equal(np.asarray(xj), vr.from_levels(k))

    @jax.jit
    def f(k, u):
        y = vr.dequantized(k, u)
        return vr.levels(vr.from_levels(k)), vr.dequantized_levels(y), vr.clip(y * 3.0)

    u = jax.random.uniform(jax.random.key(0), (17,))
    a, b, c = f(kj, u)
    np.testing.assert_array_equal(np.asarray(a), k)
    np.testing.assert_array_equal(np.asarray(b), k)
    assert float(c.min()) >= -1.0 and float(c.max()) <= 1.0
