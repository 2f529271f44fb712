"""The command line, run as a user would: train, sample, eval, errors, kill and resume."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import threading
import time

import jax
import numpy as np
import pytest
from conftest import PYTHON, REPO, TINY_VAE, subprocess_env, tiny_vae_config

from gen_jax import train


def _flag(key, value):
    if isinstance(value, tuple):
        value = "(" + ",".join(map(str, value)) + ("," if len(value) == 1 else "") + ")"
    return f"--config.{key}={value}"


def _cli(workdir, *extra, overrides=None, config=True):
    args = [PYTHON, "-m", "gen_jax", f"--workdir={workdir}"]
    if config:
        args.append("--config=configs/vae_digits.py")
        args += [_flag(k, v) for k, v in {**TINY_VAE, **(overrides or {})}.items()]
    return args + list(extra)


def _run(args, timeout=240):
    return subprocess.run(args, cwd=REPO, env=subprocess_env(), capture_output=True, text=True,
                          timeout=timeout)


def test_train_then_sample_and_eval_without_config(tmp_path):
    proc = _run(_cli(tmp_path))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "trained to step 6" in proc.stdout
    out = tmp_path / "x.npy"
    proc = _run(_cli(tmp_path, "--mode=sample", "--num=7", f"--out={out}", config=False))
    assert proc.returncode == 0, proc.stderr[-2000:]
    s = np.load(out)
    assert s.shape == (7, 8, 8, 1) and s.dtype == np.float32 and 0 <= s.min() <= s.max() <= 1
    proc = _run(_cli(tmp_path, "--mode=eval", config=False))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads((tmp_path / "eval.json").read_text())["step"] == 6
    # --mode=check traces a config's programs without compiling or writing anything
    proc = _run(_cli(tmp_path / "unused", "--mode=check", overrides={"model.channels": (8, 16, 32)}))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "traced state, train_step, eval_step, sample, log_prob, reconstruct" in proc.stdout
    assert "samples (16, 8, 8, 1)" in proc.stdout and not (tmp_path / "unused").exists()


# Runs the CLI with JAX and the libraries on it made unimportable: a bad input that
# is reported before they are imported still gives its one line; one that is not
# ends in an ImportError traceback.
_WITHOUT_JAX = """
import runpy, sys
class NoJax:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("jax", "jaxlib", "flax", "optax", "orbax"):
            raise ImportError("gen_jax imported " + name + " before reporting the bad input")
sys.meta_path.insert(0, NoJax())
sys.argv = ["gen_jax"] + sys.argv[1:]
runpy.run_module("gen_jax", run_name="__main__", alter_sys=True)
"""


@pytest.mark.parametrize("extra, message, before_jax", [
    (["--config.train.nonexistent=1"], "valid keys in train: checkpoint_every", True),
    (["--config.nosection.key=1"], "has no section 'nosection'", True),
    (["--config.data.name=mnist2"], "unknown dataset 'mnist2'; known datasets: digits", False),
    (["--config.method=gan9"], "unknown method 'gan9'; known methods: ", False),
    (["--config.train.num_steps=abc"], "num_steps", True),
    (["--config.train.log_every=0"], "train.log_every=0 is out of range: must be >= 1", True),
    (["--config.data.eval_batch_size=0"], "data.eval_batch_size=0 is out of range", True),
    (["--config.optim.learning_rate=0.0"], "optim.learning_rate=0.0 is out of range: must be > 0",
     True),
    (["--config.train.keep_checkpoints=-1"], "train.keep_checkpoints=-1 is out of range", True),
    (["--mode=sample", "--num=0"], "--num=0: the number of samples must be a positive integer",
     True),
    (["--resume_step=3"], "--resume_step=3: no such checkpoint", False),
    ("file", "is not a directory", True),  # the workdir's parent is a file
])
def test_bad_input_fails_fast_with_a_clear_message(tmp_path, extra, message, before_jax):
    workdir = tmp_path / "w"
    if extra == "file":
        (tmp_path / "f").write_text("")
        extra, workdir = [], tmp_path / "f" / "w"
    args = _cli(workdir, *extra)
    if before_jax:
        args[1:3] = ["-c", _WITHOUT_JAX]
    proc = _run(args)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert message in proc.stderr
    assert proc.stderr.strip().count("\n") == 0, proc.stderr  # one line
    assert not (tmp_path / "w").exists()  # nothing written, no empty workdir


@pytest.mark.parametrize("text, message", [
    (None, "config file 'nonexistent.py' does not exist"),
    ("X = 1\n", "defines no get_config()"),
    ("def get_config(:\n    pass\n", "bad.py:1: syntax error"),
])
def test_a_bad_config_file_is_one_line(tmp_path, text, message):
    path = "nonexistent.py"
    if text is not None:
        path = tmp_path / "bad.py"
        path.write_text(text)
    proc = _run([PYTHON, "-m", "gen_jax", f"--config={path}", f"--workdir={tmp_path / 'w'}"])
    assert proc.returncode == 2 and message in proc.stderr
    assert proc.stderr.strip().count("\n") == 0, proc.stderr


def test_default_config_is_the_digits_vae():
    from gen_jax.main import DEFAULT_CONFIG

    assert DEFAULT_CONFIG == REPO / "configs" / "vae_digits.py" and DEFAULT_CONFIG.exists()


def test_sample_without_a_checkpoint_says_so(tmp_path):
    proc = _run(_cli(tmp_path, "--mode=sample"))
    assert proc.returncode == 2
    assert "no checkpoint" in proc.stderr and "train first" in proc.stderr


# -- kill and resume ----------------------------------------------------------

_LONG = {"train.num_steps": 300, "train.log_every": 5, "train.checkpoint_every": 25}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    state = train.train_and_evaluate(tiny_vae_config(**_LONG), tmp_path_factory.mktemp("full"))
    return jax.tree.leaves(jax.device_get(state.params))


def _wait_for(predicate, proc, timeout=120):
    start = time.time()
    while not predicate():
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        assert time.time() - start < timeout, "timed out"
        time.sleep(0.05)


# SIGINT (Ctrl-C) takes the SIGTERM path through the CLI; it is checked in-process
# below (a CLI run costs two interpreters and two compiles, ~16 CPU-s).
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_killed_run_resumes_to_the_same_parameters(tmp_path, uninterrupted, sig):
    args = _cli(tmp_path, overrides=_LONG)
    proc = subprocess.Popen(args, cwd=REPO, env=subprocess_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    metrics = tmp_path / "metrics.jsonl"
    # Kill mid-way, after the first periodic checkpoint is finalized (orbax renames
    # its temporary directory to the step number last).
    _wait_for(lambda: (tmp_path / "checkpoints" / "25").exists()
              and metrics.read_text().count("\n") >= 7, proc)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    steps = train.Checkpointer(tmp_path).steps()
    if sig != signal.SIGKILL:  # saves, says so, and exits 75 (not 0: the run is not finished)
        assert proc.returncode == 75, err[-2000:]
        stopped = re.search(rf"stopped by {sig.name} at step (\d+) of 300; .*rerun", err)
        assert stopped and int(stopped.group(1)) == steps[-1]  # saved where it stopped
    else:
        assert proc.returncode == -signal.SIGKILL
    assert steps and steps[-1] < 300, steps
    proc = _run(args)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"resumed from step {steps[-1]}" in proc.stderr
    resumed = jax.tree.leaves(jax.device_get(train.restore(None, tmp_path).params))
    for a, b in zip(uninterrupted, resumed, strict=True):
        np.testing.assert_array_equal(a, b)


def test_ctrl_c_saves_stops_and_resumes_to_the_same_parameters(tmp_path, uninterrupted):
    """Ctrl-C in a notebook or terminal: SIGINT to this process mid-run saves a
    checkpoint where it stopped and raises Interrupted; rerunning resumes to the
    uninterrupted run's parameters."""
    from gen_jax.errors import Interrupted

    config = tiny_vae_config(**_LONG)

    def interrupt_after_the_first_checkpoint():
        start = time.time()
        while not (tmp_path / "checkpoints" / "25").exists() and time.time() - start < 120:
            time.sleep(0.02)
        os.kill(os.getpid(), signal.SIGINT)

    class NotHandled(Exception):
        pass

    def outer(signum, frame):  # what a SIGINT the run does not handle reaches (not pytest)
        raise NotHandled

    previous = signal.signal(signal.SIGINT, outer)
    try:
        threading.Thread(target=interrupt_after_the_first_checkpoint, daemon=True).start()
        with pytest.raises(Interrupted, match=r"stopped by SIGINT at step (\d+) of 300") as stopped:
            train.train_and_evaluate(config, tmp_path)
        assert signal.getsignal(signal.SIGINT) is outer  # the run's handler is removed
    finally:
        signal.signal(signal.SIGINT, previous)
    steps = train.Checkpointer(tmp_path).steps()
    assert 25 <= steps[-1] < 300 and f"at step {steps[-1]} " in str(stopped.value)
    state = train.train_and_evaluate(config, tmp_path)
    for a, b in zip(uninterrupted, jax.tree.leaves(jax.device_get(state.params)), strict=True):
        np.testing.assert_array_equal(a, b)
