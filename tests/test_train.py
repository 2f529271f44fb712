"""The training loop: outputs, exact resume, non-finite handling, restore/sample/eval."""

from __future__ import annotations

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import tiny_vae_config
from PIL import Image

from gen_jax import evaluate, registry, train
from gen_jax.autoencoders.vae import VAE
from gen_jax.errors import CheckpointError, NonFiniteError


def _params(state):
    return jax.tree.leaves(jax.device_get(state.params))


def test_training_writes_every_output(tmp_path):
    cfg = tiny_vae_config(**{"train.eval_every": 3})
    state = train.train_and_evaluate(cfg, tmp_path)
    assert int(state.step) == 6
    records = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    train_steps = [r["step"] for r in records if r["split"] == "train"]
    assert train_steps == [2, 4, 6]
    assert {r["step"] for r in records if r["split"] == "val"} == {3, 6}
    assert all(math.isfinite(r["loss"]) for r in records)
    assert (tmp_path / "config.json").exists()
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    for name in ("samples/step_000003.png", "samples/step_000006.png",
                 "samples/recon_step_000006.png", "loss_curves.png"):
        with Image.open(tmp_path / name) as im:
            assert im.size[0] > 32
    assert train.Checkpointer(tmp_path).steps() == [3, 6]


def test_resume_equals_uninterrupted(tmp_path):
    cfg = tiny_vae_config()
    full = train.train_and_evaluate(cfg, tmp_path / "full")
    # "Killed" after step 3: the run stops with the step-3 checkpoint only.
    train.train_and_evaluate(tiny_vae_config(**{"train.num_steps": 3}), tmp_path / "cut")
    resumed = train.train_and_evaluate(cfg, tmp_path / "cut")
    for a, b in zip(_params(full), _params(resumed), strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(jax.tree.leaves(jax.device_get(full.opt_state))[1],
                                  jax.tree.leaves(jax.device_get(resumed.opt_state))[1])
    # Restarting a finished run trains no further and keeps its files.
    again = train.train_and_evaluate(cfg, tmp_path / "cut")
    assert int(again.step) == 6


def test_restore_sample_and_eval_from_a_workdir(tmp_path):
    cfg = tiny_vae_config()
    state = train.train_and_evaluate(cfg, tmp_path)
    restored = train.restore(None, tmp_path)  # config read from the workdir
    for a, b in zip(_params(state), _params(restored), strict=True):
        np.testing.assert_array_equal(a, b)
    out = evaluate.sample_to_file(None, tmp_path, 10, tmp_path / "s.npy")
    s = np.load(out)
    assert s.shape == (10, 8, 8, 1) and s.dtype == np.float32
    assert s.min() >= 0.0 and s.max() <= 1.0
    result = evaluate.evaluate(None, tmp_path)
    saved = json.loads((tmp_path / "eval.json").read_text())
    assert saved["step"] == 6 and saved["test"]["num_examples"] == 128
    lp = result["test_log_prob"]
    assert lp["num_examples"] == 360 and lp["importance_samples"] == 8
    assert lp["nll_bpd"] == pytest.approx(-lp["log_prob_nats"] / (64 * math.log(2)))
    # IWAE-8 is (on average) at least the ELBO: allow the ELBO's sampling noise.
    assert lp["log_prob_nats"] > -saved["test"]["nelbo"] - 2.0


def test_restore_of_an_empty_workdir_is_a_clear_error(tmp_path):
    with pytest.raises(CheckpointError, match="config.json"):
        train.restore(None, tmp_path)
    with pytest.raises(CheckpointError, match="no checkpoint"):
        train.restore(tiny_vae_config(), tmp_path)


class _NanAtStep3(VAE):
    """A VAE whose loss is NaN at its 3rd update."""

    def train_step(self, state, batch, rng):
        new, metrics = super().train_step(state, batch, rng)
        bad = state.step == 2
        return new, {**metrics, "loss": jnp.where(bad, jnp.nan, metrics["loss"])}


@pytest.fixture
def nan_method():
    registry.register("test_nan_vae")(_NanAtStep3)
    yield "test_nan_vae"
    registry._FACTORIES.pop("test_nan_vae")


def test_non_finite_loss_raises_naming_step_and_checkpoint(tmp_path, nan_method):
    cfg = tiny_vae_config(**{"method": nan_method, "train.checkpoint_every": 2})
    with pytest.raises(NonFiniteError, match=r"step 3 .*step 2 in"):
        train.train_and_evaluate(cfg, tmp_path)
    # What was written before the failure is still there and restorable.
    assert train.Checkpointer(tmp_path).steps() == [2]
    assert (tmp_path / "metrics.jsonl").read_text().count("\n") >= 1
    restored = train.restore(None, tmp_path)
    assert int(restored.step) == 2


def test_non_finite_loss_skip_mode_drops_only_that_update(tmp_path, nan_method):
    cfg = tiny_vae_config(**{"method": nan_method, "train.nonfinite": "skip"})
    state = train.train_and_evaluate(cfg, tmp_path)
    assert int(state.step) == 6
    assert all(np.isfinite(p).all() for p in _params(state))
    records = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    assert [r["skipped_updates"] for r in records if r["split"] == "train"] == [0, 1, 0]


def test_bench_mode_times_the_compiled_step(tmp_path):
    result = evaluate.benchmark(tiny_vae_config(), tmp_path, repeats=2)
    assert result["train_step_ms"] > 0 and result["sample_ms"] > 0
    assert result["train_step_flops"] > 1e5  # XLA's cost analysis of the whole step
    assert json.loads((tmp_path / "bench.json").read_text())["batch_size"] == 32
