"""Shared fixtures: tiny configs so every test compiles and runs in seconds."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

# XLA's CPU backend spends most of a small test's time compiling (LLVM at -O2):
# optimization level 0 compiles 3-4x faster, and the older loop emitters in place
# of the MLIR fusion emitters compile a train step another 30-70% faster
# (measured per step, jax 0.10.2: DDPM UNet 15.1 -> 9.6 s, DCGAN 3.4 -> 1.3 s,
# Flow++ 11.1 -> 6.6 s, MAE 8.2 -> 5.8 s, VAE 3.1 -> 0.9 s); these tiny models
# run fast enough either way. The HLO verifier (XLA checking its own passes'
# output between passes, not our programs) is ~10% of a compile: off in the tests
# (compile CPU-s of three smoke configs' init and train step, interleaved pairs:
# 12.7/13.8 -> 12.0/11.2). LLVM code generation in one module instead of split into
# parts for parallel compilation (the two test workers already fill the two cores):
# six smoke runs, idle machine, interleaved, 33.0/35.8/33.6 -> 31.9/28.5/29.0 CPU-s.
# Set before jax is imported by any test module.
_FAST_COMPILE = ("--xla_backend_optimization_level=0 --xla_cpu_use_fusion_emitters=false "
                 "--xla_disable_hlo_passes=hlo-verifier --xla_cpu_parallel_codegen_split_count=1")
for _flag in _FAST_COMPILE.split():
    if _flag.split("=")[0] not in os.environ.get("XLA_FLAGS", ""):
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _flag).strip()

# JAX's persistent compilation cache, for this test session only (xdist workers
# and the CLI subprocesses share it; removed at the end, so every session starts
# cold, as CI does): many tests compile the same tiny programs.
_RUN_ID = os.environ.get("PYTEST_XDIST_TESTRUNUID") or f"pid{os.getpid()}"
CACHE_DIR = Path(tempfile.gettempdir()) / f"gen_jax_test_xla_cache_{_RUN_ID}"
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(CACHE_DIR))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")

REPO = Path(__file__).resolve().parent.parent
CONFIGS = REPO / "configs"

# Tiny-model overrides applied on top of configs/vae_digits.py in the tests.
TINY_VAE = {
    "model.latent_dim": 4, "model.channels": (8, 16), "model.hidden_sizes": (32,),
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


def _module_fixtures(item) -> list[str]:
    """The module- or session-scoped fixtures a test uses (what it shares with others)."""
    info = getattr(item, "_fixtureinfo", None)
    if info is None:
        return []
    # pytest's and plugins' own fixtures (tmp_path_factory, ...) have an empty baseid:
    # they cost nothing to share, so they do not tie tests together
    return sorted(name for name in item.fixturenames
                  if (defs := info.name2fixturedefs.get(name)) and defs[-1].baseid
                  and defs[-1].scope in ("module", "session"))


# Modules whose tests are long (subprocess jobs, whole-run smoke tests, a 40 s
# multi-process scenario): scheduled first, so the short tests fill the gaps at the
# end and the two workers finish together (longest-first scheduling). Collected in
# path order they came last, and the final long group left one worker idle.
LONG_FIRST = ("test_multiprocess.py", "test_main.py", "test_devices_equal.py",
              "test_cli_failures.py", "test_configs.py")


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """Distributes by group, not by file (``--dist loadgroup``): tests that share a
    module-scoped fixture run on one worker (it is computed once), every other
    test is scheduled on its own, so one big file no longer sits on one worker;
    the long modules (LONG_FIRST) are scheduled first."""
    for item in items:
        shared = _module_fixtures(item)
        if shared:
            item.add_marker(pytest.mark.xdist_group(f"{item.path.name}:{','.join(shared)}"))
    rank = {name: i for i, name in enumerate(LONG_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: order kept within


def pytest_sessionfinish(session, exitstatus):
    if not hasattr(session.config, "workerinput"):  # the controller (or a -n 0 run)
        shutil.rmtree(CACHE_DIR, ignore_errors=True)


@pytest.fixture(autouse=True, scope="session")
def _tempfiles_in_pytest_tmp(tmp_path_factory):
    """Python's temporary files go into pytest's own tmp area (which keeps only the last
    few sessions) instead of the system's: under ``tfds.testing.mock_data``,
    ``tfds.builder`` makes an empty ``mkdtemp("tfds")`` directory per call that it never
    removes (DatasetInfo.initialize_from_bucket, tensorflow-datasets 4.9), ~100 per suite."""
    old = tempfile.tempdir
    tempfile.tempdir = str(tmp_path_factory.mktemp("tempfile"))
    yield
    tempfile.tempdir = old
