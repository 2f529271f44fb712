"""Shared fixtures: tiny configs so every test compiles and runs in seconds."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

# XLA's CPU backend spends most of a small test's time compiling (LLVM at -O2):
# optimization level 0 compiles 3-4x faster and these tiny models run fast
# enough either way. Set before jax is imported by any test module.
_FAST_COMPILE = "--xla_backend_optimization_level=0"
if _FAST_COMPILE not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _FAST_COMPILE).strip()

REPO = Path(__file__).resolve().parent.parent
CONFIGS = REPO / "configs"

# Tiny-model overrides applied on top of configs/vae_digits.py in the tests.
TINY_VAE = {
    "model.latent_dim": 4, "model.channels": (8, 16), "model.hidden": (32,),
    "data.batch_size": 32, "data.eval_batch_size": 128,
    "train.num_steps": 6, "train.log_every": 2, "train.eval_every": 0,
    "train.checkpoint_every": 3, "train.num_grid_samples": 16, "eval.num_samples": 8,
    "eval.log_prob_samples": 8, "eval.max_batches": 1, "optim.warmup_steps": 0,
    "optim.schedule": "constant",
}


def tiny_vae_config(**overrides):
    """configs/vae_digits.py shrunk for tests, plus dotted ``overrides``."""
    from gen_jax import load_config

    return load_config(CONFIGS / "vae_digits.py", **{**TINY_VAE, **overrides})


@pytest.fixture
def tiny_config():
    return tiny_vae_config


def subprocess_env(devices: int = 1) -> dict:
    """Environment for a child python: CPU, ``devices`` fake devices, repo importable."""
    env = dict(os.environ)
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices} {_FAST_COMPILE}"
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env["PYTHONUNBUFFERED"] = "1"
    return env


PYTHON = sys.executable
