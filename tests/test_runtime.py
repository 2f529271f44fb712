"""The runtime's promises, tried in-process on a tiny Method: nothing written is
lost, resume refuses what it cannot honour, the non-finite guard stops real NaN
updates, every step draws a fresh key, and metrics.jsonl keeps one history."""

from __future__ import annotations

import json
import logging
import os
import subprocess

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import PYTHON, REPO, subprocess_env, tiny_vae_config

from gen_jax import registry, train
from gen_jax.checkpoint import Checkpointer, config_mismatch
from gen_jax.errors import CheckpointError, ConfigError, NonFiniteError, WorkdirError
from gen_jax.state import TrainState, make_optimizer
from gen_jax.workdir import WorkdirLock
from gen_jax.writers import repair_metrics


class _Mean:
    """A tiny Method: a per-pixel mean fitted by SGD, with two planted hooks.

    ``train_step`` reports a uniform draw from its key (to see which keys the
    runtime hands out) and, at the step given by ``model.nan_at``, has a
    finite loss whose gradient is NaN (d/dw of 0 * sqrt(0 * |w|^2)).
    """

    def __init__(self, config, info):
        self.config, self.info = config, info
        self.tx = make_optimizer(config.optim, config.train.num_steps)

    def init(self, rng, batch):
        w = 0.1 * jax.random.normal(rng, batch["x"].shape[1:])
        return TrainState.create({"w": w}, self.tx, self.config.train.ema_decay)

    def _loss(self, params, x, step):
        loss = jnp.mean((x - params["w"]) ** 2)
        hit = jnp.where(step == self.config.model.nan_at, 0.0, 1.0)
        return loss + 0.0 * jnp.sqrt(hit * jnp.sum(params["w"] ** 2))

    def train_step(self, state, batch, rng):
        loss, grads = jax.value_and_grad(self._loss)(state.params, batch["x"], state.step)
        return state.apply_gradients(grads), {"loss": loss, "draw": jax.random.uniform(rng)}

    def eval_step(self, state, batch, rng):
        return {"loss": jnp.mean((batch["x"] - state.params["w"]) ** 2)}

    def sample(self, state, rng, num, **kw):
        return jnp.broadcast_to(state.params["w"], (num, *state.params["w"].shape))


registry.register("test_mean")(_Mean)  # a name no real Method uses


def mean_config(**overrides):
    import ml_collections

    cfg = tiny_vae_config(**{"train.eval_every": 0, "train.log_every": 1,
                             "train.checkpoint_every": 2, "optim.name": "sgd",
                             "optim.learning_rate": 0.5, **overrides.pop("_base", {})})
    cfg = ml_collections.ConfigDict(cfg.to_dict())
    cfg.method = "test_mean"
    cfg.model = ml_collections.ConfigDict({"nan_at": overrides.pop("nan_at", -1)})
    for k, v in overrides.items():
        section, key = k.split(".")
        cfg[section][key] = v
    return cfg


def _rows(workdir, split="train"):
    return [json.loads(line) for line in open(workdir / "metrics.jsonl") if f'"{split}"' in line]


def _w(state):
    return np.asarray(jax.device_get(state.params["w"]))


# -- keys and the non-finite guard --------------------------------------------

def test_every_step_gets_a_fresh_key_and_resume_replays_them(tmp_path):
    train.train_and_evaluate(mean_config(), tmp_path / "a")
    draws = [r["draw"] for r in _rows(tmp_path / "a")]
    assert len(draws) == 6 and len(set(draws)) == 6  # fold_in(train_key, step), not one key
    train.train_and_evaluate(mean_config(**{"train.num_steps": 4}), tmp_path / "b")
    train.train_and_evaluate(mean_config(), tmp_path / "b")
    assert [r["draw"] for r in _rows(tmp_path / "b")] == draws


def test_a_nan_gradient_with_a_finite_loss_is_not_applied(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="gen_jax"):
        state = train.train_and_evaluate(mean_config(nan_at=2, **{"train.nonfinite": "skip"}),
                                         tmp_path)
    assert np.isfinite(_w(state)).all()
    assert [r["skipped_updates"] for r in _rows(tmp_path)] == [0, 0, 1, 0, 0, 0]
    assert "step 3: non-finite loss or update; the update was skipped (1 skipped so far)" in caplog.text
    # the skipped step left the parameters as they were after step 2
    two = train.train_and_evaluate(mean_config(**{"train.num_steps": 2}), tmp_path / "two")
    three = train.train_and_evaluate(mean_config(nan_at=2, **{"train.num_steps": 3,
                                                               "train.nonfinite": "skip"}),
                                     tmp_path / "three")
    np.testing.assert_array_equal(_w(two), _w(three))


def test_raise_mode_names_the_last_saved_step_and_how_to_resume(tmp_path):
    with pytest.raises(NonFiniteError, match=r"at step 5 .*last saved checkpoint: step 4 .*"
                                             r"--resume_step=3"):
        train.train_and_evaluate(mean_config(nan_at=4, **{"train.checkpoint_every": 1}), tmp_path)
    assert Checkpointer(tmp_path).steps() == [2, 3, 4]  # keep 3; all finite
    assert np.isfinite(_w(train.restore(None, tmp_path))).all()


def test_a_non_finite_state_is_never_saved(tmp_path):
    cfg = mean_config()
    ckpt = Checkpointer(tmp_path, async_save=False)
    good = TrainState.create({"w": jnp.ones(3)}, make_optimizer(cfg.optim, 10))
    assert ckpt.save(1, good, {}, cfg)
    with pytest.raises(NonFiniteError, match="step 2 has non-finite values.*last saved checkpoint: step 1"):
        ckpt.save(2, good.replace(params={"w": jnp.array([1.0, jnp.inf, 0.0])}), {}, cfg)
    assert ckpt.steps() == [1]
    ckpt.close()


def test_skipping_most_updates_ends_with_a_warning(tmp_path, caplog):
    cfg = mean_config(**{"train.nonfinite": "skip", "optim.learning_rate": 1e30})
    with caplog.at_level(logging.WARNING, logger="gen_jax"):
        train.train_and_evaluate(cfg, tmp_path)
    assert "of the 6 updates of this run were skipped" in caplog.text


# -- checkpoints never lose work ----------------------------------------------

def test_keep_checkpoints_zero_keeps_all_and_negative_is_refused(tmp_path):
    cfg = mean_config(**{"train.keep_checkpoints": 0, "train.checkpoint_every": 1})
    train.train_and_evaluate(cfg, tmp_path)
    assert Checkpointer(tmp_path).steps() == [1, 2, 3, 4, 5, 6]
    train.train_and_evaluate(mean_config(**{"train.keep_checkpoints": 0, "train.checkpoint_every": 1,
                                            "train.num_steps": 8}), tmp_path)
    assert Checkpointer(tmp_path).steps() == list(range(1, 9))
    with pytest.raises(ConfigError, match=r"train.keep_checkpoints=-1 .*>= 0 \(0 keeps every"):
        tiny_vae_config(**{"train.keep_checkpoints": -1})


def _corrupt(step_dir):
    for f in (step_dir / "state").rglob("*"):
        if f.is_file():
            f.write_bytes(b"garbage")


def test_an_unreadable_latest_is_moved_aside_and_its_step_saved_again(tmp_path, caplog):
    full = train.train_and_evaluate(mean_config(), tmp_path / "full")
    work = tmp_path / "w"
    train.train_and_evaluate(mean_config(**{"train.num_steps": 4}), work)
    _corrupt(work / "checkpoints" / "4")
    with caplog.at_level(logging.WARNING, logger="gen_jax"):
        state = train.train_and_evaluate(mean_config(), work)
    aside = [p.name for p in (work / "checkpoints").iterdir() if p.name.startswith("4.unreadable-")]
    assert len(aside) == 1 and f"moved aside to {aside[0]}" in caplog.text
    assert (work / "checkpoints" / aside[0] / "state").is_dir()  # the user's bytes are kept
    assert Checkpointer(work).steps() == [2, 4, 6]                # step 4 written again
    np.testing.assert_array_equal(_w(state), _w(full))
    np.testing.assert_array_equal(_w(train.restore(None, work, step=4)),
                                  _w(train.restore(None, tmp_path / "full", step=4)))
    # metrics.jsonl holds one history: steps 1..6 once each (rows 3-4 were replaced)
    assert [r["step"] for r in _rows(work)] == [1, 2, 3, 4, 5, 6]
    assert list(work.glob("metrics.replaced-*.jsonl"))


def test_with_no_readable_checkpoint_training_refuses_and_renames_nothing(tmp_path):
    train.train_and_evaluate(mean_config(**{"train.num_steps": 4}), tmp_path)
    for step in (2, 4):
        _corrupt(tmp_path / "checkpoints" / str(step))
    with pytest.raises(CheckpointError, match="no readable checkpoint"):
        train.train_and_evaluate(mean_config(), tmp_path)
    # not moved aside: a rerun must not silently start over from step 0
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["2", "4"]


def test_resume_from_a_chosen_step_moves_later_checkpoints_aside(tmp_path):
    train.train_and_evaluate(mean_config(**{"train.checkpoint_every": 1, "train.keep_checkpoints": 0}),
                             tmp_path)
    state = train.train_and_evaluate(
        mean_config(**{"train.checkpoint_every": 1, "train.keep_checkpoints": 0}), tmp_path,
        resume_step=3)
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert [n for n in names if n.isdigit()] == ["1", "2", "3", "4", "5", "6"]
    assert sum(n.startswith(("4.after-resume-from-3", "5.after", "6.after")) for n in names) == 3
    assert int(state.step) == 6
    with pytest.raises(CheckpointError, match=r"--resume_step=9: no such checkpoint .*1, 2, 3"):
        train.train_and_evaluate(mean_config(), tmp_path, resume_step=9)


def test_a_failed_first_run_leaves_no_empty_workdir(tmp_path):
    with pytest.raises(CheckpointError):
        train.train_and_evaluate(mean_config(), tmp_path / "new", resume_step=5)
    assert not (tmp_path / "new").exists()
    with pytest.raises(CheckpointError, match="no checkpoint"):
        train.restore(mean_config(), tmp_path / "new2")
    assert not (tmp_path / "new2").exists()


# -- resume refuses what it cannot honour --------------------------------------

@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("trained")
    train.train_and_evaluate(mean_config(), workdir)
    return workdir


@pytest.mark.parametrize("override, listed", [
    ({"data.batch_size": 64}, "data.batch_size: saved 32, given 64"),
    ({"optim.name": "adam"}, "optim.name: saved 'sgd', given 'adam'"),
    ({"train.ema_decay": 0.9}, "train.ema_decay: saved 0.999, given 0.9"),
    ({"data.classes": (3,)}, "data.classes: saved [], given [3]"),
])
def test_resume_refuses_a_changed_config_in_one_line(trained, override, listed):
    config_json = (trained / "config.json").read_text()
    with pytest.raises(CheckpointError) as e:
        train.train_and_evaluate(mean_config(**{"train.num_steps": 8, **override}), trained)
    assert listed in str(e.value) and "\n" not in str(e.value)
    assert (trained / "config.json").read_text() == config_json  # not replaced
    assert Checkpointer(trained).steps() == [2, 4, 6]


def test_allowed_changes_resume_and_a_longer_cosine_schedule_is_announced(tmp_path, caplog):
    base = {"optim.schedule": "cosine", "optim.name": "sgd"}
    train.train_and_evaluate(mean_config(**base), tmp_path)
    with caplog.at_level(logging.WARNING, logger="gen_jax"):
        state = train.train_and_evaluate(mean_config(**base, **{
            "train.num_steps": 8, "train.log_every": 2, "eval.max_batches": 2}), tmp_path)
    assert int(state.step) == 8
    assert "train.num_steps changed from 6 to 8: the cosine learning-rate schedule is re-stretched" \
        in caplog.text
    cfg = mean_config()
    assert config_mismatch(cfg, mean_config(**{"train.num_steps": 99, "eval.num_samples": 3})) == []


# -- one process per workdir ---------------------------------------------------

def test_a_second_training_process_is_refused_naming_the_holder(tmp_path):
    tmp_path.mkdir(exist_ok=True)
    with WorkdirLock(tmp_path):
        with pytest.raises(WorkdirError, match=rf"in use by another training process \(pid {os.getpid()}"):
            train.train_and_evaluate(mean_config(), tmp_path)
    assert not (tmp_path / "checkpoints").exists()


def test_a_killed_holder_leaves_no_stale_lock(tmp_path):
    code = ("import sys, os, signal; sys.path.insert(0, %r); from gen_jax.workdir import WorkdirLock; "
            "l = WorkdirLock(%r).__enter__(); os.kill(os.getpid(), signal.SIGKILL)"
            % (str(REPO), str(tmp_path)))
    proc = subprocess.run([PYTHON, "-c", code], env=subprocess_env(), timeout=120)
    assert proc.returncode == -9 and (tmp_path / ".lock").exists()
    with WorkdirLock(tmp_path):
        pass


# -- metrics.jsonl ---------------------------------------------------------------

def test_a_torn_last_line_is_cut_and_later_rows_moved_aside(tmp_path, caplog):
    path = tmp_path / "metrics.jsonl"
    rows = [json.dumps({"step": s, "split": "train", "loss": 1.0}) for s in (1, 2, 3)]
    path.write_text("\n".join(rows) + '\n{"step": 4, "spl')
    with caplog.at_level(logging.WARNING, logger="gen_jax"):
        repair_metrics(path, None)
    assert path.read_text() == "\n".join(rows) + "\n" and "torn last line" in caplog.text
    repair_metrics(path, 2)
    assert path.read_text() == "\n".join(rows[:2]) + "\n"
    assert next(tmp_path.glob("metrics.replaced-*.jsonl")).read_text() == rows[2] + "\n"
