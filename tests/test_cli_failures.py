"""The command line on a full disk, a read-only workdir and unreadable checkpoints:
one line on stderr, exit 2, and nothing already written is lost. Real file
systems (tmpfs mounts; root only, as on CI), not mocks."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
from conftest import PYTHON, REPO, TINY_VAE, subprocess_env, tiny_vae_config

from gen_jax import train


def _flag(key, value):
    if isinstance(value, tuple):
        value = "(" + ",".join(map(str, value)) + ("," if len(value) == 1 else "") + ")"
    return f"--config.{key}={value}"


def _cli(workdir, *extra, overrides=None):
    return ([PYTHON, "-m", "gen_jax", f"--workdir={workdir}", "--config=configs/vae_digits.py"]
            + [_flag(k, v) for k, v in {**TINY_VAE, **(overrides or {})}.items()] + list(extra))


def _run(args):
    return subprocess.run(args, cwd=REPO, env=subprocess_env(), capture_output=True, text=True,
                          timeout=300)


@pytest.fixture
def mount(tmp_path):
    """mount(size) -> a fresh tmpfs of that size; unmounted after the test."""
    mounted = []

    def make(size: str, name: str = "fs"):
        path = tmp_path / name
        path.mkdir()
        proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                              capture_output=True, text=True)
        if proc.returncode:
            pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
        mounted.append(path)
        return path

    yield make
    for path in mounted:
        subprocess.run(["umount", "-l", str(path)], check=False)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A trained workdir (in-process: the CLI's training is tested in test_main.py)."""
    workdir = tmp_path_factory.mktemp("trained")
    train.train_and_evaluate(tiny_vae_config(**{"train.checkpoint_every": 2}), workdir)
    return workdir


def test_a_full_disk_is_one_line_naming_the_path_and_free_space(mount):
    fs = mount("3m")  # room for a few checkpoints, kept all, then full
    proc = _run(_cli(fs / "w", overrides={"train.checkpoint_every": 1, "train.num_steps": 30,
                                          "train.keep_checkpoints": 0}))
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = [line for line in proc.stderr.strip().splitlines()
             if not re.match(r"I\d{4} .*writers.py", line)]  # progress lines (no terminal)
    assert len(lines) == 1, proc.stderr[-3000:]
    assert "the disk is full" in lines[0] and f"MiB free on {fs}" in lines[0], lines[0]
    # the checkpoints written before the disk filled are intact and restorable
    assert int(train.restore(None, fs / "w").step) >= 1


def test_a_read_only_workdir_fails_before_evaluating(mount, trained):
    fs = mount("8m")
    shutil.copytree(trained, fs / "w")
    subprocess.run(["mount", "-o", "remount,ro", str(fs)], check=True)
    for mode in ("eval", "train"):
        proc = _run([PYTHON, "-m", "gen_jax", f"--workdir={fs / 'w'}", f"--mode={mode}"])
        assert proc.returncode == 2, proc.stderr[-3000:]
        assert proc.stderr.strip().count("\n") == 0, proc.stderr[-3000:]
        assert "is not writable" in proc.stderr and "Read-only file system" in proc.stderr
    out = fs.parent / "s.npy"  # reading a read-only workdir is fine: sample elsewhere
    proc = _run([PYTHON, "-m", "gen_jax", f"--workdir={fs / 'w'}", "--mode=sample", f"--out={out}"])
    assert proc.returncode == 0 and out.exists(), proc.stderr[-3000:]


def test_all_checkpoints_unreadable_is_one_line(trained, tmp_path):
    work = tmp_path / "w"
    shutil.copytree(trained, work)
    for f in (work / "checkpoints").rglob("*"):
        if f.is_file() and "state" in f.parts:
            f.write_bytes(b"garbage")
    proc = _run([PYTHON, "-m", "gen_jax", f"--workdir={work}", "--mode=eval"])
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if "gen_jax: error" in line]
    assert len(errors) == 1 and "no readable checkpoint" in errors[0]
    # one warning per unreadable checkpoint, nothing else
    assert len(proc.stderr.strip().splitlines()) <= 1 + 3, proc.stderr[-3000:]
