"""Data sources, preprocessing, the likelihood scale and the resumable iterator."""

from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import tiny_vae_config
from sklearn.datasets import load_digits

from gen_jax import data as data_lib
from gen_jax.data import BatchIterator, discrete_log_prob_offset, get_source, load_split, preprocess
from gen_jax.errors import ConfigError, DataError


def _digits_cfg(**kw):
    return tiny_vae_config(**kw)


def test_digits_split_is_fixed_disjoint_and_complete():
    cfg = _digits_cfg()
    parts = {s: get_source(cfg.data, s) for s in ("train", "val", "test")}
    assert {s: len(p) for s, p in parts.items()} == {"train": 1257, "val": 180, "test": 360}
    raw = load_digits().images.astype(np.uint8)
    seen = np.concatenate([p.get(np.arange(len(p)))[0] for p in parts.values()])
    # Same multiset of images as scikit-learn's: compare sorted flattened rows.
    key = lambda a: np.sort(a.reshape(len(a), -1).view(f"V{64}").ravel())  # noqa: E731
    assert (key(seen) == key(raw)).all()
    # The split does not move with the experiment seed.
    other = get_source(_digits_cfg(seed=5).data, "test")
    np.testing.assert_array_equal(other.get(np.arange(10))[0], parts["test"].get(np.arange(10))[0])


def test_preprocess_dequantize_scale_and_binarize():
    cfg = _digits_cfg()
    info = get_source(cfg.data, "train").info
    x_raw = get_source(cfg.data, "train").get(np.arange(200))[0]
    rng = np.random.default_rng(0)
    deq = preprocess(x_raw, info, cfg.data, rng)  # [0, 1], dequantized
    assert deq.dtype == np.float32 and deq.min() >= 0 and deq.max() < 1
    np.testing.assert_array_equal(np.floor(deq * 17).astype(int), x_raw)
    sym = _digits_cfg(**{"data.value_range": (-1.0, 1.0), "data.dequantize": "none"})
    x = preprocess(x_raw, info, sym.data, None)
    np.testing.assert_allclose(x, x_raw / 16 * 2 - 1, atol=1e-6)
    thr = _digits_cfg(**{"data.dequantize": "none", "data.binarize": "threshold"})
    np.testing.assert_array_equal(preprocess(x_raw, info, thr.data, None), (x_raw > 8).astype(np.float32))
    sto = _digits_cfg(**{"data.dequantize": "none", "data.binarize": "stochastic"})
    draws = np.mean([preprocess(x_raw, info, sto.data, np.random.default_rng(i)) for i in range(200)], 0)
    np.testing.assert_allclose(draws, x_raw / 16, atol=0.15)
    with pytest.raises(DataError, match="outside"):
        preprocess(x_raw + 17, info, cfg.data, rng)


@pytest.mark.parametrize("value_range", [(0.0, 1.0), (-1.0, 1.0), (0.0, 255.0)])
def test_uniform_density_gives_log2_17_bits_per_dim(value_range):
    """The uniform density on the value range is the uniform model over 17 levels:
    log2(17) = 4.09 bits/dim (DESIGN.md's reference point), whatever the scaling."""
    cfg = _digits_cfg(**{"data.value_range": value_range})
    info = get_source(cfg.data, "train").info
    lo, hi = value_range
    log_density = -info.dim * math.log(hi - lo)
    nats = log_density + discrete_log_prob_offset(info, cfg.data)
    assert data_lib.bits_per_dim(-nats, info.dim) == pytest.approx(math.log2(17))
    assert discrete_log_prob_offset(info, _digits_cfg(**{"data.dequantize": "none"}).data) is None


def test_iterator_is_deterministic_and_resumes_exactly():
    cfg = _digits_cfg()
    it = data_lib.make_train_iterator(cfg, seed=3)
    batches = [next(it) for _ in range(90)]  # crosses epoch boundaries (39 batches / epoch)
    assert it.batches_per_epoch == 1257 // 32 and it.epoch == 2
    again = data_lib.make_train_iterator(cfg, seed=3)
    for i in range(50):
        b = next(again)
        np.testing.assert_array_equal(b["x"], batches[i]["x"])
    resumed = data_lib.make_train_iterator(cfg, seed=3)
    resumed.set_state(again.get_state())
    for i in range(50, 90):
        b = next(resumed)
        np.testing.assert_array_equal(b["x"], batches[i]["x"])
        np.testing.assert_array_equal(b["y"], batches[i]["y"])
    other = next(data_lib.make_train_iterator(cfg, seed=4))
    assert not np.array_equal(other["x"], batches[0]["x"])
    # An epoch visits every training example once.
    labels = np.concatenate([b["y"] for b in batches[:39]])
    assert len(labels) == 39 * 32
    with pytest.raises(ConfigError, match="seed"):
        resumed.set_state({**again.get_state(), "seed": 99})


class _Indexed:
    """A source whose labels are the example indices, so batches say which examples they hold."""

    def __init__(self, source):
        self.source = source

    def __len__(self):
        return len(self.source)

    def get(self, idx):
        return self.source.get(idx)[0], np.asarray(idx)


def test_dequantization_noise_is_fresh_per_batch_and_epoch_but_reproducible():
    cfg = _digits_cfg()
    it = data_lib.make_train_iterator(cfg, seed=3)
    it.source = _Indexed(it.source)
    per_epoch = it.batches_per_epoch
    batches = [next(it) for _ in range(per_epoch + 2)]
    raw = it.source.source.get(np.arange(len(it.source)))[0].reshape(len(it.source), -1)

    def noise(b):  # x = (x_raw + u) / 17 with u ~ U[0, 1)
        u = b["x"].reshape(len(b["x"]), -1) * 17 - raw[b["y"]]
        assert u.min() >= -1e-5 and u.max() < 1 + 1e-5
        return u

    u0, u1 = noise(batches[0]), noise(batches[1])
    assert abs(u0.mean() - 0.5) < 0.02 and abs(np.concatenate([u0, u1]).std() - 12 ** -0.5) < 0.02
    assert np.abs(u0 - u1).mean() > 0.2  # independent uniforms differ by 1/3 on average
    assert np.abs(noise(batches[per_epoch]) - u0).mean() > 0.2  # same position, next epoch
    # The same examples in the next epoch get new noise.
    first = {int(i): row for b in batches[:per_epoch] for i, row in zip(b["y"], noise(b), strict=True)}
    later = [(first[int(i)], row) for b in batches[per_epoch:]
             for i, row in zip(b["y"], noise(b), strict=True) if int(i) in first]
    assert len(later) > 50 and all(np.abs(a - b).mean() > 0.1 for a, b in later)
    # ... while (seed, epoch, position) alone fixes a batch, noise included.
    again = data_lib.make_train_iterator(cfg, seed=3)
    again.set_state({"seed": 3, "epoch": 1, "position": 1})
    np.testing.assert_array_equal(next(again)["x"], batches[per_epoch + 1]["x"])


def test_process_slices_reassemble_the_global_batch():
    cfg = _digits_cfg()
    whole = next(data_lib.make_train_iterator(cfg, seed=0))
    parts = [next(data_lib.make_train_iterator(cfg, 0, process_index=i, process_count=4))
             for i in range(4)]
    np.testing.assert_array_equal(np.concatenate([p["x"] for p in parts]), whole["x"])
    with pytest.raises(ConfigError, match="divisible"):
        data_lib.make_train_iterator(_digits_cfg(**{"data.batch_size": 30}), 0, 0, 4)


def test_classes_filter_and_errors():
    cfg = _digits_cfg(**{"data.classes": (3, 7)})
    x, y = load_split(cfg, "test")
    assert set(np.unique(y)) == {3, 7} and len(x) == len(y)
    with pytest.raises(DataError, match=r"\[42\]"):
        get_source(_digits_cfg(**{"data.classes": (3, 42)}).data, "train")
    with pytest.raises(DataError, match="ring8"):
        get_source(_digits_cfg(**{"data.name": "cifar11"}).data, "train")
    with pytest.raises(DataError, match="split"):
        get_source(cfg.data, "holdout")


def test_load_split_is_deterministic_and_toy_data_is_vectors():
    cfg = _digits_cfg()
    a, ya = load_split(cfg, "val")
    b, _ = load_split(cfg, "val")
    np.testing.assert_array_equal(a, b)
    assert a.shape == (180, 8, 8, 1) and ya.shape == (180,)
    toy = _digits_cfg(**{"data.name": "ring8", "data.dequantize": "none", "data.num_eval": 500})
    x, y = load_split(toy, "test")
    assert x.shape == (500, 2) and x.dtype == np.float32 and y.max() == 7
    xt, _ = load_split(toy, "train")
    assert not np.allclose(xt[:500], x)  # splits are different draws
    with pytest.raises(ConfigError, match="continuous"):
        load_split(_digits_cfg(**{"data.name": "moons"}), "val")  # dequantize on 2-D data
    from gen_jax.data.preprocess import check_data_config

    check_data_config(get_source(toy.data, "val").info, toy.data)  # no error: nothing to undo


def test_batch_larger_than_dataset_is_a_config_error():
    cfg = _digits_cfg(**{"data.batch_size": 4096})
    with pytest.raises(ConfigError, match="exceeds"):
        BatchIterator(get_source(cfg.data, "train"), 4096, 0, lambda x, r: x)


def test_eval_batches_cover_the_split_in_order_cut_to_the_device_multiple():
    from gen_jax.data import sources
    from gen_jax.data.iterator import eval_batches

    cfg = _digits_cfg()
    src = get_source(cfg.data, "test")
    assert len(src) == sources.DIGITS_SPLIT["test"]
    prep = lambda x, rng: x.astype(np.float32)  # noqa: E731
    sizes = [len(b["x"]) for b in eval_batches(src, 100, 0, prep)]
    assert sizes == [100, 100, 100, 60]
    sizes = [len(b["x"]) for b in eval_batches(src, 96, 0, prep, multiple_of=8)]
    assert sizes == [96, 96, 96, 72]  # 360 = 3 * 96 + 72: nothing dropped
    sizes = [len(b["x"]) for b in eval_batches(src, 100, 0, prep, multiple_of=8)]
    assert sizes == [96, 96, 96, 56]  # each batch cut to a multiple of 8
    first = next(eval_batches(src, 100, 0, prep))
    np.testing.assert_array_equal(first["x"], src.get(np.arange(100))[0])


def test_digits_are_scikit_learns_in_order_without_importing_it():
    """The bundled CSV read directly equals ``load_digits`` row for row, labels included."""
    from gen_jax.data.sources import _digits_arrays

    x, y = _digits_arrays()
    ref = load_digits()
    assert x.shape == (1797, 8, 8, 1) and x.dtype == np.uint8 and y.dtype == np.int32
    np.testing.assert_array_equal(x[..., 0], ref.images.astype(np.uint8))
    np.testing.assert_array_equal(y, ref.target)
