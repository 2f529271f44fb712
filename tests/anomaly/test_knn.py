"""The nearest-neighbour patch distance on frozen features (gen_jax/anomaly/knn.py): its
distance against brute force, the fit (whitening, a bank of real interior training
cells) against NumPy, the map's border geometry, the score's blur against SciPy, and
behaviour: zero distance on the training crops' own cells, the map's maximum on a
planted patch. The tiny random stand-in network (smoke config) keeps it fast."""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gen_jax import load_config, registry
from gen_jax.anomaly import knn
from gen_jax.anomaly.evaluate import smooth
from gen_jax.anomaly.feature_flow import upsample_matrix
from gen_jax.anomaly.ssim import gaussian_blur
from gen_jax.data import dataset_info, load_split
from gen_jax.errors import ConfigError

CONFIG = "configs/feature_knn_brick.py:smoke"


def test_knn_distance_is_the_brute_force_nearest_neighbour_distance(monkeypatch):
    rng = np.random.default_rng(0)
    q, bank = rng.standard_normal((37, 5)), rng.standard_normal((50, 5))
    d = np.sqrt(((q[:, None] - bank[None]) ** 2).sum(-1))
    monkeypatch.setattr(knn, "QUERY_CHUNK", 8)  # 5 chunks, the last one padded
    for k in (1, 3):
        got = knn.knn_distance(jnp.asarray(q, jnp.float32), jnp.asarray(bank, jnp.float32), k)
        np.testing.assert_allclose(got, np.sort(d, 1)[:, :k].mean(1), rtol=1e-4, atol=1e-4)


def test_whitening_inverts_the_covariance_and_the_blur_is_scipys():
    rng = np.random.default_rng(1)
    a = rng.standard_normal((6, 6))
    cov = a @ a.T + 0.1 * np.eye(6)
    w = np.asarray(knn.whitening(jnp.asarray(cov)), np.float64)
    np.testing.assert_allclose(w @ w.T, np.linalg.inv(cov), rtol=1e-3, atol=1e-4)
    maps = rng.standard_normal((2, 16, 12)).astype(np.float32)
    for sigma in (0.0, 1.0, 2.0):
        np.testing.assert_allclose(gaussian_blur(jnp.asarray(maps), sigma), smooth(maps, sigma), atol=1e-5)


@pytest.fixture(scope="module")
def fitted():
    cfg = load_config(CONFIG, **{"knn.fit_batch_size": 24, "knn.bank_size": 100, "knn.num_subsets": 1})
    method = registry.build(cfg, dataset_info(cfg.data))
    x_train = load_split(cfg, "train")[0][:40]  # 40 = 24 + 16: the fit pads its last batch
    state = jax.jit(method.fit)(jax.random.key(0), x_train)
    feats = jax.jit(method.features)(state.model_state, jnp.asarray(x_train))
    return cfg, method, x_train, state, feats


def test_fit_whitens_with_the_interior_cells_moments_and_banks_real_cells(fitted):
    cfg, method, x_train, state, feats = fitted
    (name, f), = feats.items()
    b = cfg.knn.border
    assert b == 2 and f.shape[1] > 2 * b
    cells = np.asarray(f, np.float64)[:, b:-b, b:-b].reshape(-1, f.shape[-1])
    p = {k: np.asarray(v, np.float64) for k, v in state.params[name].items()}
    np.testing.assert_allclose(p["mean"], cells.mean(0), rtol=1e-4, atol=1e-5)
    cov = np.cov(cells.T) + cfg.knn.reg * np.eye(cells.shape[1])
    np.testing.assert_allclose(p["whiten"] @ p["whiten"].T, np.linalg.inv(cov), rtol=2e-3, atol=2e-3)
    # 2 batches x ceil(100 / 2) rows, each a distinct interior cell of a training crop
    raw = p["bank"] @ np.linalg.inv(p["whiten"]) + p["mean"]
    assert raw.shape == (100, cells.shape[1])
    dist = np.sqrt(((raw[:, None] - cells[None]) ** 2).sum(-1))
    nearest = dist.argmin(1)
    assert dist.min(1).max() < 1e-3
    # drawn without replacement: no cell more often than it occurs (overlapping random
    # crops can repeat a cell exactly)
    same = np.sqrt(((cells[:, None] - cells[None]) ** 2).sum(-1)) < 1e-6
    canonical = same.argmax(1)  # the first of each group of identical cells
    ids, counts = np.unique(canonical[nearest], return_counts=True)
    assert np.all(counts <= same[ids].sum(1)) and len(ids) >= 90
    # the first 50 rows are cells of the first batch (crops 0-23), the others of the second
    crop = np.arange(len(cells)) // ((f.shape[1] - 2 * b) * (f.shape[2] - 2 * b))
    match = dist < 1e-3
    assert match[:50][:, crop < 24].any(1).all() and match[50:][:, crop >= 24].any(1).all()
    assert not match[50:][:, crop < 24].any(1).all()
    # each batch draws with its own key: the two batches' picks are not the same positions
    # (crop within the batch, location), as one key reused for every batch would make them
    cells_per_crop = (f.shape[1] - 2 * b) * (f.shape[2] - 2 * b)
    pos = [{(int(k // cells_per_crop) % 24, int(k % cells_per_crop)) for k in nearest[rows]}
           for rows in (slice(0, 50), slice(50, 100))]
    assert len(pos[0] & pos[1]) < 25, len(pos[0] & pos[1])


def test_map_is_zero_on_banked_cells_and_peaks_at_a_planted_patch(fitted):
    cfg, method, x_train, state, feats = fitted
    (name,) = feats
    # a cell that is in the bank is at distance 0 from it, every other cell further
    m = np.asarray(jax.jit(method._maps)(state, jnp.asarray(x_train))[name])
    assert m.shape[1:] == tuple(s - 4 for s in feats[name].shape[1:3])
    p = {k: np.asarray(v, np.float64) for k, v in state.params[name].items()}
    raw = p["bank"] @ np.linalg.inv(p["whiten"]) + p["mean"]
    cells = np.asarray(feats[name], np.float64)[:, 2:-2, 2:-2].reshape(-1, raw.shape[1])
    dist = np.sqrt(((cells[:, None] - raw[None]) ** 2).sum(-1))
    banked = (dist < 1e-6).any(1).reshape(m.shape)
    assert banked.sum() >= 100
    # whitened distance = Mahalanobis distance of the raw features to the nearest bank row
    prec = p["whiten"] @ p["whiten"].T
    d = cells[:, None] - raw[None]
    maha = np.sqrt(np.einsum("nmi,ij,nmj->nm", d, prec, d)).min(1).reshape(m.shape)
    np.testing.assert_allclose(m, maha, atol=6e-3)  # float32 |q|^2 - 2 q.b + |b|^2
    assert m[banked].max() < 2e-3 and np.median(m[~banked]) > 0.1
    x = load_split(cfg, "val")[0][:3].copy()
    checker = (np.add.outer(np.arange(4), np.arange(4)) % 2).astype(np.float32)
    for top, left in ((5, 8), (8, 4)):  # off the diagonal, so a transposed map misses
        xp = x.copy()
        xp[:, top:top + 4, left:left + 4, 0] = checker
        image_map = np.asarray(jax.jit(method.anomaly_map)(state, jnp.asarray(xp)))
        assert image_map.shape == (3, 16, 16)
        for mm in image_map:
            r, c = np.unravel_index(np.argmax(mm), mm.shape)
            assert top - 2 <= r <= top + 5 and left - 2 <= c <= left + 5, ((top, left), (r, c))


def test_map_geometry_and_score(fitted):
    """The interior map is upsampled on the interior's own centres (border strides in), and
    the score is the maximum of the map blurred by knn.score_sigma (SciPy)."""
    cfg, method, x_train, state, feats = fitted
    (name,) = feats
    x = jnp.asarray(load_split(cfg, "val")[0][:3])
    small = np.asarray(jax.jit(method._maps)(state, x)[name])
    image_map = np.asarray(jax.jit(method.anomaly_map)(state, x))
    first, stride = method.extractor.geometry[name]
    a = upsample_matrix(small.shape[1], first + stride * cfg.knn.border, stride, cfg.features.input_size,
                        x.shape[1])
    np.testing.assert_allclose(image_map, np.einsum("ph,nhw,qw->npq", a, small, a), rtol=1e-5, atol=1e-6)
    score = np.asarray(jax.jit(method.anomaly_score)(state, x))
    want = smooth(image_map, cfg.knn.score_sigma).reshape(3, -1).max(1)
    np.testing.assert_allclose(score, want, rtol=1e-5)
    assert not np.allclose(score, image_map.reshape(3, -1).max(1))  # the blur matters here


def test_config_errors_name_the_value():
    for key, value in (("knn.border", -1), ("knn.border", 4), ("knn.k", 0), ("knn.bank_size", 0),
                       ("knn.reg", 0.0), ("knn.score_sigma", -1.0), ("knn.fit_batch_size", 0),
                       ("knn.num_subsets", 0)):
        cfg = load_config(CONFIG, **{key: value})
        with pytest.raises(ConfigError, match=re.escape(f"{key}={value!r}")):
            registry.build(cfg, dataset_info(cfg.data))


def test_channel_subsets_each_get_their_own_whitening_and_map_and_the_maps_are_averaged():
    cfg = load_config(CONFIG, **{"knn.num_subsets": 3, "knn.bank_size": 64})
    method = registry.build(cfg, dataset_info(cfg.data))
    x_train = jnp.asarray(load_split(cfg, "train")[0][:32])
    x = jnp.asarray(load_split(cfg, "val")[0][:3])
    state = jax.jit(method.fit)(jax.random.key(0), x_train)
    channels = {k: np.asarray(v) for k, v in state.model_state["channels"].items()}
    assert sorted(channels) == ["conv1@0", "conv1@1", "conv1@2"]
    assert len({v.tobytes() for v in channels.values()}) == 3  # three different subsets
    raw = np.asarray(method.extractor.raw(state.model_state["extractor"], x_train)["conv1"], np.float64)
    for key, idx in channels.items():
        cells = raw[:, 2:-2, 2:-2][..., idx].reshape(-1, len(idx))
        p = {k: np.asarray(v, np.float64) for k, v in state.params[key].items()}
        np.testing.assert_allclose(p["mean"], cells.mean(0), rtol=1e-4, atol=1e-5)
        cov = np.cov(cells.T) + cfg.knn.reg * np.eye(len(idx))
        np.testing.assert_allclose(p["whiten"] @ p["whiten"].T, np.linalg.inv(cov), rtol=2e-3, atol=2e-3)
    small = jax.jit(method._maps)(state, x)
    first, stride = method.extractor.geometry["conv1"]
    a = upsample_matrix(3, first + 2 * stride, stride, cfg.features.input_size, 16)
    want = np.mean([np.einsum("ph,nhw,qw->npq", a, np.asarray(small[k]), a) for k in channels], axis=0)
    np.testing.assert_allclose(jax.jit(method.anomaly_map)(state, x), want, rtol=1e-5, atol=1e-6)
    with pytest.raises(ConfigError, match="knn.num_subsets=2 needs features.num_channels"):
        registry.build(load_config(CONFIG, **{"knn.num_subsets": 2, "features.num_channels": 0}),
                       dataset_info(cfg.data))
