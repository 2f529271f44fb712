"""The training loop: outputs, exact resume, non-finite handling, restore/sample/eval."""

from __future__ import annotations

import json
import math
import types

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import CONFIGS, tiny_vae_config
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


# -- several steps per compiled call (train.steps_per_call) --------------------------


def _train_rows(workdir):
    return [r for r in map(json.loads, open(workdir / "metrics.jsonl")) if r["split"] == "train"]


@pytest.mark.parametrize("form", ["scan", "unroll"])
def test_steps_per_call_trains_the_same_steps(tmp_path, form):
    """k steps per call give the same batches, keys and updates as one step per call,
    logged at the same steps with the same means; here with k = 3, logs every 7 steps and
    a checkpoint every 5 (calls of 3 never cross them, so the steps in between run one per
    call), each run stopped at step 10 and resumed to 16 (the data position carries over)."""
    base = {"train.num_steps": 16, "train.log_every": 7, "train.checkpoint_every": 5,
            "train.ema_decay": 0.9}
    many = {**base, "train.steps_per_call": 3, "runtime.multi_step": form}
    final = {}
    for name, overrides in (("one", base), ("k", many)):  # both stopped at step 10, resumed
        train.train_and_evaluate(tiny_vae_config(**{**overrides, "train.num_steps": 10}), tmp_path / name)
        final[name] = train.train_and_evaluate(tiny_vae_config(**overrides), tmp_path / name)
    one, resumed = final["one"], final["k"]
    assert int(resumed.step) == 16
    # k steps are compiled as one program apart from the single step: float rounding differs
    # (here up to ~4e-7 absolute in Adam's first moments after 16 steps); one wrong key or
    # batch in 16 steps moves them by ~1e-3
    chex.assert_trees_all_close(jax.device_get((resumed.params, resumed.ema_params, resumed.opt_state)),
                                jax.device_get((one.params, one.ema_params, one.opt_state)),
                                rtol=1e-4, atol=1e-5)
    a, b = _train_rows(tmp_path / "one"), _train_rows(tmp_path / "k")
    assert [r["step"] for r in a] == [r["step"] for r in b] == [7, 10, 14, 16]
    for ra, rb in zip(a, b, strict=True):
        assert rb["loss"] == pytest.approx(ra["loss"], rel=1e-5)
    assert train.Checkpointer(tmp_path / "k").steps() == [10, 15, 16]


def test_steps_per_call_reports_each_steps_non_finite_update(tmp_path, nan_method):
    """The 3rd update is NaN inside a call of two steps: it alone is skipped, counted in
    its logging interval, and in raise mode the error names step 3."""
    cfg = tiny_vae_config(**{"method": nan_method, "train.nonfinite": "skip", "train.steps_per_call": 2})
    state = train.train_and_evaluate(cfg, tmp_path / "skip")
    assert int(state.step) == 6 and all(np.isfinite(p).all() for p in _params(state))
    assert [r["skipped_updates"] for r in _train_rows(tmp_path / "skip")] == [0, 1, 0]
    cfg = tiny_vae_config(**{"method": nan_method, "train.steps_per_call": 2, "train.log_every": 4,
                             "train.checkpoint_every": 0})
    with pytest.raises(NonFiniteError, match=r"at step 3 "):
        train.train_and_evaluate(cfg, tmp_path / "raise")


class _Staged:
    """A stand-in HasStages Method: stage k from step 10 * k on."""

    def stage_of(self, step):
        return step // 10

    def stage_train_step(self, stage):
        raise NotImplementedError


def test_calls_of_k_steps_stop_at_every_log_eval_checkpoint_stage_and_the_end():
    cfg = tiny_vae_config(**{"train.num_steps": 47, "train.log_every": 7, "train.eval_every": 12,
                             "train.checkpoint_every": 9, "train.steps_per_call": 4})
    run = types.SimpleNamespace(config=cfg, method=_Staged())
    programs = train._Programs(run)
    assert programs.staged
    stops = {s for s in range(1, 48) if s % 7 == 0 or s % 12 == 0 or s % 9 == 0 or s % 10 == 0} | {47}
    step, calls = 0, []
    while step < 47:
        n = programs.call_length(step)
        calls.append((step, n))
        step += n
    for start, n in calls:
        assert n in (1, 4)
        assert not any(start < s < start + n for s in stops), (start, n)  # no stop skipped
        if n == 1:  # a call of 4 would have crossed a stop or the end
            assert any(start < s < start + 4 for s in stops) or start + 4 > 47, start
    assert [s for s, n in calls if n == 4] == [0, 14, 30, 36]  # by hand


def test_dry_run_traces_the_k_step_program():
    shapes = train.dry_run(tiny_vae_config(**{"train.steps_per_call": 4}))
    assert shapes["train_steps"]["loss"].shape == (4,) and shapes["train_steps"]["finite"].dtype == bool
    assert shapes["train_step"]["loss"].shape == ()
    assert "train_steps" not in train.dry_run(tiny_vae_config())


def test_auto_multi_step_unrolls_conv_steps_and_scans_the_others(tmp_path):
    """runtime.multi_step="auto" on CPU: unrolled for the conv VAE, a scan for the MLP VAE;
    an explicit choice is kept."""
    from gen_jax import load_config

    for cfg, want in ((tiny_vae_config(**{"train.steps_per_call": 2}), True),
                      (load_config(f"{CONFIGS}/vae_moons.py:smoke", **{"train.steps_per_call": 2}), False),
                      (tiny_vae_config(**{"train.steps_per_call": 2, "runtime.multi_step": "scan"}), False)):
        run = train.setup(cfg, tmp_path)
        programs = train._Programs(run)
        programs.choose_form(train._init_state(run, train._example_batch(run)), train._example_batch(run))
        assert programs.unroll is want, cfg.model.get("arch")
