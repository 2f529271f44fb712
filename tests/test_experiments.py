"""Experiments train through the runtime (experiments/runner.py): a finished run is
reused, a workdir trained with another config is refused, never overwritten."""

from __future__ import annotations

import importlib

import pytest
from conftest import REPO, tiny_vae_config

from gen_jax.errors import CheckpointError

EXPERIMENTS = REPO / "experiments"


@pytest.fixture
def experiments(monkeypatch):
    """Imports experiments/<name>.py as the scripts do (their directory on sys.path)."""
    monkeypatch.syspath_prepend(str(EXPERIMENTS))
    return importlib.import_module


def test_runner_reuses_a_finished_run_and_refuses_another_config(experiments, tmp_path):
    runner = experiments("runner")
    config = tiny_vae_config(**{"train.num_steps": 2, "train.checkpoint_every": 0})
    first = runner.train(config, tmp_path / "run")
    assert not first["reused"]
    records = (tmp_path / "run" / "metrics.jsonl").read_text()
    again = runner.train(config, tmp_path / "run")
    assert again == {"seconds": first["seconds"], "reused": True}
    assert (tmp_path / "run" / "metrics.jsonl").read_text() == records  # nothing retrained
    method, state, saved = runner.load(tmp_path / "run")
    assert int(state.step) == 2 and saved.model.latent_dim == config.model.latent_dim
    with pytest.raises(CheckpointError, match="model.latent_dim"):
        runner.train(tiny_vae_config(**{"train.num_steps": 2, "model.latent_dim": 3}), tmp_path / "run")
    with pytest.raises(RuntimeError, match="trained to step 2"):
        runner.train(tiny_vae_config(**{"train.num_steps": 1}), tmp_path / "run")

