"""Checkpoints: keep-last-N, fallback from a corrupt latest one, config mismatch."""

from __future__ import annotations

import logging
import shutil

import jax
import numpy as np
import pytest
from conftest import tiny_vae_config

from gen_jax import train
from gen_jax.checkpoint import Checkpointer, config_mismatch
from gen_jax.errors import CheckpointError


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("ckpt")
    cfg = tiny_vae_config(**{"train.checkpoint_every": 1, "train.keep_checkpoints": 2,
                             "train.num_steps": 4})
    state = train.train_and_evaluate(cfg, workdir)
    return cfg, workdir, state


def test_keeps_the_last_n(trained):
    cfg, workdir, _ = trained
    assert Checkpointer(workdir).steps() == [3, 4]


def test_corrupt_latest_falls_back_to_previous_with_a_warning(trained, tmp_path, caplog):
    cfg, workdir, state = trained
    copy = tmp_path / "w"
    shutil.copytree(workdir, copy)
    for f in (copy / "checkpoints" / "4" / "state").rglob("*"):
        if f.is_file():
            f.write_bytes(b"garbage")
    with caplog.at_level(logging.WARNING):
        restored = train.restore(cfg, copy)
    assert int(restored.step) == 3
    assert "trying the previous one" in caplog.text
    assert (copy / "checkpoints" / "4").is_dir()  # restore (not training) moves nothing aside
    # Step 3's parameters, not step 4's.
    latest = jax.tree.leaves(jax.device_get(state.params))
    previous = jax.tree.leaves(jax.device_get(restored.params))
    assert not all(np.array_equal(a, b) for a, b in zip(latest, previous, strict=True))


def test_all_unreadable_is_a_checkpoint_error(trained, tmp_path):
    cfg, workdir, _ = trained
    copy = tmp_path / "w"
    shutil.copytree(workdir, copy)
    for f in (copy / "checkpoints").rglob("*"):
        if f.is_file() and "state" in f.parts:
            f.write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="no readable checkpoint"):
        train.restore(cfg, copy)


def test_mismatched_config_is_a_checkpoint_error_naming_the_key(trained):
    cfg, workdir, _ = trained
    other = tiny_vae_config(**{"model.latent_dim": 5})
    with pytest.raises(CheckpointError, match=r"model\.latent_dim: saved 4, given 5"):
        train.restore(other, workdir)
    with pytest.raises(CheckpointError, match="cannot change on resume"):
        train.train_and_evaluate(other, workdir)
    # Training settings may change between runs (e.g. more steps).
    assert config_mismatch(cfg, tiny_vae_config(**{"train.num_steps": 99})) == []
