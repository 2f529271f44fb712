"""FID reference statistics files (python -m gen_jax.metrics.fid_stats) and eval reading them.

A stand-in replaces the Inception network (a fixed random projection of the pixels
to POOL_DIM = 16 features): what is tested is the streaming, the file and eval's use
of it, which do not depend on the network (test_inception_reference.py checks that).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from gen_jax import data as data_lib
from gen_jax import evaluate
from gen_jax.config import load_config
from gen_jax.errors import ConfigError
from gen_jax.metrics import FeatureStats, fid_stats, frechet_distance, to_unit_interval
from gen_jax.metrics import inception as inc
from gen_jax.metrics import inception_weights as iw

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "configs" / "vae_digits.py"
DIM = 16


@pytest.fixture
def stand_in(monkeypatch):
    monkeypatch.setattr(inc, "POOL_DIM", DIM)
    proj = np.random.default_rng(0).normal(size=(64, DIM))

    def apply(x):
        return {"pool": np.asarray(x, np.float64).reshape(len(x), -1) @ proj, "logits": None}

    monkeypatch.setattr(inc, "load_weights", lambda path="": ({}, "stand-in sha256:" + "ab" * 32))
    monkeypatch.setattr(inc, "load_inception_variables", lambda path="": {})
    monkeypatch.setattr(inc, "inception_apply_fn", lambda variables, resize=True: apply)
    return apply


def test_stats_file_round_trip_and_eval_uses_it(stand_in, tmp_path):
    cfg = load_config(CONFIG)
    summary = fid_stats.compute(cfg, "test", tmp_path / "s.npz", batch_size=64, keep_features=100)
    test01 = np.asarray(data_lib.get_source(cfg.data, "test").get(np.arange(360))[0], np.float64) / 16
    feats = stand_in(test01)["pool"]
    assert summary["n"] == 360 and summary["features_kept"] == 100
    ref = fid_stats.load(tmp_path / "s.npz", DIM)
    assert ref.n == 360 and ref.source == "digits:test" and ref.weights.startswith("stand-in")
    np.testing.assert_allclose(ref.mu, feats.mean(0), rtol=1e-10)
    np.testing.assert_allclose(ref.sigma, np.cov(feats, rowvar=False), rtol=1e-9, atol=1e-12)
    assert ref.features.shape == (100, DIM) and np.isin(ref.features.astype(np.float32),
                                                        feats.astype(np.float32)).all()
    # Eval against the file: the digits data read through the generic image path.
    cfg.unlock()
    cfg.eval.fid_reference_stats = str(tmp_path / "s.npz")
    info = data_lib.DataInfo("tfds:stand_in", "image", (8, 8, 1), 17, 10)
    run = type("Run", (), {"config": cfg, "info": info, "workdir": tmp_path})()
    samples = data_lib.load_split(cfg, "train")[0][:150]
    out = evaluate.sample_metrics(run, samples)
    fake = stand_in(to_unit_interval(samples, cfg.data, 17))["pool"]
    assert out["fid"] == pytest.approx(frechet_distance(FeatureStats.from_features(feats), fake), rel=1e-6)
    assert out["num_samples"] == 150 and out["num_reference"] == 360 and out["reference"] == "digits:test"
    assert out["kid_reference_examples"] == 100 and np.isfinite(out["kid"])
    assert out["inception_score"] is None and "no Inception Score" in out["inception_score_note"]
    # Statistics made with other weights are refused rather than compared.
    fid_stats.save(tmp_path / "other.npz", FeatureStats.from_features(feats), None, "x",
                   "other sha256:" + "cd" * 32)
    cfg.eval.fid_reference_stats = str(tmp_path / "other.npz")
    with pytest.raises(ConfigError, match="other Inception weights"):
        evaluate.sample_metrics(run, samples)


def test_bad_statistics_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        fid_stats.load(tmp_path / "none.npz")
    np.savez(tmp_path / "x.npz", mean=np.zeros(3))
    with pytest.raises(ConfigError, match="'mu' and 'sigma'"):
        fid_stats.load(tmp_path / "x.npz")
    np.savez(tmp_path / "y.npz", mu=np.zeros(3), sigma=np.eye(3))  # TTUR-style keys, wrong dimension
    with pytest.raises(ConfigError, match="dimension 2048"):
        fid_stats.load(tmp_path / "y.npz")
    (tmp_path / "z.npz").write_bytes(b"not a zip")
    with pytest.raises(ConfigError, match="cannot read"):
        fid_stats.load(tmp_path / "z.npz")


def test_eval_without_weights_reports_unavailable(monkeypatch, tmp_path):
    monkeypatch.setattr(iw, "find_installed_archive", lambda: None)
    cfg = load_config(CONFIG)
    run = type("Run", (), {"config": cfg, "workdir": tmp_path,
                           "info": data_lib.DataInfo("tfds:cifar10", "image", (32, 32, 3), 256, 10)})()
    out = evaluate.sample_metrics(run, np.zeros((16, 32, 32, 3), np.float32))
    assert out["fid"] is None and out["kid"] is None and out["num_samples"] == 16
    assert iw.INSTALL_COMMAND in out["note"] and "\n" not in out["note"]


@pytest.mark.parametrize("args, message", [
    (["--split=bogus", "--out=x.npz"], "bogus"),
    (["--split=test", "--out=stats.txt"], "must end in .npz"),
])
def test_cli_bad_input_is_one_line_exit_2(tmp_path, args, message):
    proc = subprocess.run([sys.executable, "-m", "gen_jax.metrics.fid_stats", f"--config={CONFIG}", *args],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env={**__import__("os").environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], proc.stderr
