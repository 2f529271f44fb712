"""--mode=eval's sample metrics: digits workdirs, 2-D toy data and images without FID weights."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from conftest import CONFIGS

from gen_jax import data as data_lib
from gen_jax import evaluate, train
from gen_jax.config import load_config
from gen_jax.errors import ConfigError


def test_eval_of_a_trained_digits_workdir_writes_sample_metrics(tmp_path):
    # The full-covariance Gaussian: fitted at init, so its workdir is the cheapest trained one.
    cfg = load_config(CONFIGS / "gaussian_digits.py", **{"train.num_steps": 2, "train.log_every": 2,
                                                           "eval.num_samples": 200})
    train.train_and_evaluate(cfg, tmp_path)
    result = evaluate.evaluate(None, tmp_path)
    saved = json.loads((tmp_path / "eval.json").read_text())
    assert saved["step"] == 2 and saved["sampling"]["num_samples"] == 200  # the keys other tests read
    assert saved["sampling"]["samples_per_sec"] > 0 and saved["test_log_prob"]["nll_bpd"] < 4.09
    m = saved["sample_metrics"]
    for key in ("digits_fd", "kid", "kid_std", "precision", "recall", "density", "coverage",
                "classifier_score", "class_share_tv"):
        assert np.isfinite(m[key]), key
    # A Gaussian's samples are blurry digit-like blobs: far from the data, but not noise.
    assert 0 < m["digits_fd"] and m["kid"] > 0 and 0 <= m["precision"] <= 1 and 0 < m["recall"] <= 1
    assert 1.0 < m["classifier_score"] < 10.0
    assert len(m["class_shares"]) == 10 and sum(m["class_shares"]) == pytest.approx(1.0)
    assert m["num_samples"] == 200 and m["num_reference"] == 1257 and m["reference"] == "train"
    assert result["sample_metrics"]["digits_fd"] == m["digits_fd"]


@pytest.fixture(scope="module")
def ring8_run(tmp_path_factory):
    cfg = load_config(CONFIGS / "gmm_ring8.py", **{"data.num_train": 2000, "data.num_eval": 1000})
    return train.setup(cfg, tmp_path_factory.mktemp("ring8"))


def test_toy2d_metrics_and_mode_coverage(ring8_run):
    real, _ = data_lib.load_split(ring8_run.config, "val")  # an independent draw of the data
    good = evaluate.sample_metrics(ring8_run, real)
    assert good["reference"] == "test" and good["mode_coverage"]["modes"] == 8
    assert good["mode_coverage"]["high_quality"] > 0.98
    collapsed = evaluate.sample_metrics(ring8_run, np.repeat(real[:1], 500, 0))  # one mode only
    assert collapsed["mode_coverage"]["modes"] == 1
    assert collapsed["mmd_rbf"] > 20 * abs(good["mmd_rbf"])
    assert collapsed["energy_distance"] > 20 * abs(good["energy_distance"])
    assert "note" in evaluate.sample_metrics(ring8_run, np.full((10, 2), np.nan))


def test_images_without_fid_weights_get_a_note(ring8_run, tmp_path, monkeypatch):
    monkeypatch.setattr("gen_jax.metrics.inception_weights.find_installed_archive", lambda: None)
    info = data_lib.DataInfo("tfds:cifar10", "image", (32, 32, 3), 256, 10)
    cfg = load_config(CONFIGS / "vae_digits.py")
    run = dataclasses.replace(ring8_run, config=cfg, info=info)
    out = evaluate.sample_metrics(run, np.zeros((16, 32, 32, 3), np.float32))
    assert out["fid"] is None and "eval.inception_path" in out["note"]
    cfg = load_config(CONFIGS / "vae_digits.py", **{"eval.inception_path": str(tmp_path / "missing.npz")})
    with pytest.raises(ConfigError, match="does not exist"):
        evaluate.sample_metrics(dataclasses.replace(run, config=cfg), np.zeros((16, 32, 32, 3), np.float32))


def test_fid_path_streams_and_caches_reference_statistics(ring8_run, tmp_path, monkeypatch):
    """The FID branch with a stand-in for the Inception net (the real one is too slow to compile here):
    the streamed reference statistics equal the batch ones, and a second call reads the cache."""
    from gen_jax.metrics import frechet_distance
    from gen_jax.metrics import inception as inc

    monkeypatch.setattr(inc, "POOL_DIM", 16)  # a 2048-d sqrtm alone would take most of the test budget
    proj = np.random.default_rng(0).normal(size=(64, 16))
    head = np.random.default_rng(1).normal(size=(64, inc.NUM_LOGITS))

    def fake_apply(x):
        flat = np.asarray(x, np.float64).reshape(len(x), -1)
        return {"pool": flat @ proj, "logits": flat @ head}

    monkeypatch.setattr(inc, "load_inception_variables", lambda path: {})
    shapes = set()

    def recording_apply(x):
        shapes.add(x.shape)
        return fake_apply(x)

    monkeypatch.setattr(inc, "inception_apply_fn", lambda variables: recording_apply)
    cfg = load_config(CONFIGS / "vae_digits.py", **{"eval.inception_path": "stand-in.npz",
                                                     "eval.inception_batch_size": 100})
    # Digits data read through the generic image path (as a tfds dataset would be).
    run = dataclasses.replace(ring8_run, config=cfg, workdir=tmp_path,
                              info=data_lib.DataInfo("tfds:stand_in", "image", (8, 8, 1), 17, 10))
    samples = data_lib.load_split(cfg, "test")[0][:120]
    out = evaluate.sample_metrics(run, samples)
    ref = np.asarray(data_lib.get_source(cfg.data, "train").get(np.arange(1257))[0], np.float64) / 16
    fake = fake_apply(metrics_to_unit(samples, cfg))["pool"]
    assert out["fid"] == pytest.approx(frechet_distance(fake_apply(ref)["pool"], fake), rel=1e-6)
    assert out["fid_reference_examples"] == 1257 and out["kid_subset_size"] == 120
    assert 1.0 <= out["inception_score"] <= inc.NUM_LOGITS and out["reference"] == "train"
    assert (tmp_path / "fid_reference_train_120.npz").exists()
    assert shapes == {(100, 8, 8, 1)}  # last batches padded: the network compiles once
    monkeypatch.setattr(data_lib, "get_source", lambda *a: pytest.fail("the cache was not used"))
    again = evaluate.sample_metrics(run, samples)
    assert again["fid"] == pytest.approx(out["fid"], rel=1e-12) and again["kid"] == out["kid"]


def metrics_to_unit(samples, cfg):
    from gen_jax.metrics import to_unit_interval

    return to_unit_interval(samples, cfg.data, 17)
