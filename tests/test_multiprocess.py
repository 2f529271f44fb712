"""Multi-process training: two local CPU processes with 4 devices each, one workdir.

One module fixture runs the whole scenario once (subprocesses dominate the
time, so the cases share them):

1. ``python -m gen_jax`` as process 0 and 1 of a 2-process job (jax.distributed
   on localhost, gloo collectives) trains the tiny VAE; beside it a
   1-process 8-device run trains the same config (the reference).
2. Both processes stop after committing the step-3 checkpoint (a test-only
   hook wrapping ``Checkpointer.save``); process 1 is SIGKILLed, process 0 is let
   go and must die on its own within a bound instead of hanging in the next
   step's collective.
3. Both are relaunched in the same workdir and resume to step 6: the final
   parameters must equal the reference's.
4. The 2-process checkpoint is restored onto 8 devices of one process (the
   reference's, once it has trained) and onto this test process's single device.

The environment variables themselves are checked in-process, without jax.distributed.
"""

from __future__ import annotations

import json
import resource
import signal
import socket
import subprocess
import textwrap
import time
from pathlib import Path

import jax
import numpy as np
import pytest
from conftest import PYTHON, REPO, TINY_VAE, subprocess_env

from gen_jax import parallel, train
from gen_jax.errors import ConfigError

HEARTBEAT_S = 6  # GEN_JAX_HEARTBEAT_TIMEOUT in the job: how soon a dead peer is noticed
SURVIVOR_BOUND_S = 60
PAUSE_AT = 3  # checkpoint step at which the first launch stops (of TINY_VAE's 6 steps)

# Runs the CLI. With GJ_START set, it imports first and starts when that file
# exists (so imports overlap the test's waiting); with GJ_PAUSE_AT set, it
# blocks after that step's checkpoint is on disk (touching GJ_MARKER) until
# GJ_GO exists, so the test can kill it mid-run.
_LAUNCH = textwrap.dedent("""
    import os, sys, time
    from pathlib import Path
    from gen_jax import evaluate, main, train
    def wait_for(name):
        while not Path(os.environ[name]).exists():
            time.sleep(0.02)
    if os.environ.get("GJ_PAUSE_AT"):
        from gen_jax import checkpoint
        save = checkpoint.Checkpointer.save
        def paused_save(self, step, *args, **kwargs):
            save(self, step, *args, **kwargs)
            if step == int(os.environ["GJ_PAUSE_AT"]):
                self.wait()
                Path(os.environ["GJ_MARKER"]).touch()
                wait_for("GJ_GO")
        checkpoint.Checkpointer.save = paused_save
    if os.environ.get("GJ_START"):
        wait_for("GJ_START")
    sys.argv = ["gen_jax", *sys.argv[1:]]
    main.run()
""")

# The 1-process 8-device reference: trains in memory and dumps the final state; then,
# once the file argv[4] exists, restores the job's workdir argv[3] onto its 8 devices
# and dumps that (one interpreter for both: start-up is most of a child's cost).
_REFERENCE = textwrap.dedent("""
    import sys, time, jax, numpy as np
    from pathlib import Path
    sys.path.insert(0, "tests")
    from conftest import tiny_vae_config
    from gen_jax import train
    def dump(state, path):
        np.savez(path, *jax.tree.leaves(jax.device_get((state.params, state.opt_state))),
                 step=int(state.step))
    assert jax.process_count() == 1 and jax.device_count() == 8
    dump(train.train_and_evaluate(tiny_vae_config(), sys.argv[1]), sys.argv[2])
    while not Path(sys.argv[4]).exists():
        time.sleep(0.02)
    state = train.restore(None, sys.argv[3])
    assert all(len(a.sharding.device_set) == 8 for a in jax.tree.leaves(state.params))
    dump(state, sys.argv[5])
""")


def _flag(key, value):
    if isinstance(value, tuple):
        value = "(" + ",".join(map(str, value)) + ("," if len(value) == 1 else "") + ")"
    return f"--config.{key}={value}"


def _cli(workdir: Path) -> list[str]:
    return ([PYTHON, "-c", _LAUNCH, "--config=configs/vae_digits.py", f"--workdir={workdir}"]
            + [_flag(k, v) for k, v in TINY_VAE.items()])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Proc:
    """A child with its output in a file (no pipe to fill up)."""

    started: list[_Proc] = []  # killed by the fixture if the test fails midway

    def __init__(self, args: list[str], env: dict, log: Path):
        self.log = log
        with open(log, "w") as f:
            self.popen = subprocess.Popen(args, cwd=REPO, env=env, stdout=f,
                                          stderr=subprocess.STDOUT)
        self.started.append(self)

    def wait(self, timeout: float) -> int:
        try:
            return self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()
            pytest.fail(f"{self.log.name} ran over {timeout} s:\n{self.output()[-3000:]}")

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def check(self, timeout: float = 300) -> str:
        rc = self.wait(timeout)
        assert rc == 0, f"{self.log.name} exited {rc}:\n{self.output()[-3000:]}"
        return self.output()


def _job_env(base: dict, port: int, pid: int, **extra) -> dict:
    env = dict(base)
    env.update({parallel.ENV_COORDINATOR: f"127.0.0.1:{port}", parallel.ENV_NUM_PROCESSES: "2",
                parallel.ENV_PROCESS_ID: str(pid),
                parallel.ENV_HEARTBEAT_TIMEOUT: str(HEARTBEAT_S)}, **extra)
    return env


def _load(path: Path) -> tuple[int, list[np.ndarray]]:
    with np.load(path) as f:
        arrays = sorted((k for k in f.files if k.startswith("arr_")), key=lambda k: int(k[4:]))
        return int(f["step"]), [f[k] for k in arrays]


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    try:
        yield _scenario(tmp_path_factory.mktemp("multiprocess"))
    finally:
        for p in _Proc.started:
            if p.popen.poll() is None:
                p.popen.kill()
                p.popen.wait()
        _Proc.started.clear()


def _scenario(tmp: Path) -> dict:
    workdir, ref_dir = tmp / "job", tmp / "ref"
    workdir.mkdir()
    base = subprocess_env(4)
    # One compile cache for every child (unless the session already has one):
    # the relaunch and the restores reuse the first launch's executables.
    base.setdefault("JAX_COMPILATION_CACHE_DIR", str(tmp / "jax_cache"))
    base.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    base.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
    for name in ("SLURM_JOB_ID", "OMPI_MCA_orte_hnp_uri", parallel.ENV_MODE):
        base.pop(name, None)
    t_start = time.monotonic()
    cpu_start = resource.getrusage(resource.RUSAGE_CHILDREN)

    # 1. The 2-process job (paused at step 3) and the reference.
    port = _free_port()
    procs = [_Proc(_cli(workdir), _job_env(base, port, i, GJ_PAUSE_AT=str(PAUSE_AT),
                                           GJ_MARKER=str(tmp / f"paused{i}"), GJ_GO=str(tmp / "go")),
                   tmp / f"launch1_p{i}.log") for i in range(2)]
    ref_env = {**base, "XLA_FLAGS": base["XLA_FLAGS"].replace("count=4", "count=8")}
    ref = _Proc([PYTHON, "-c", _REFERENCE, str(ref_dir), str(tmp / "ref.npz"), str(workdir),
                 str(tmp / "restore"), str(tmp / "restore8.npz")], ref_env, tmp / "ref.log")
    deadline = time.monotonic() + 300
    while not all((tmp / f"paused{i}").exists() for i in range(2)):
        for p in procs:
            assert p.popen.poll() is None, f"{p.log.name} exited early:\n{p.output()[-3000:]}"
        assert time.monotonic() < deadline, "the 2-process job did not reach step 3 in 300 s"
        time.sleep(0.05)
    phases = {"launch": time.monotonic() - t_start}
    steps_at_kill = sorted(int(p.name) for p in (workdir / "checkpoints").iterdir()
                           if p.name.isdigit())

    # 2. Kill process 1 mid-run; process 0 goes on into step 4's collective.
    procs[1].popen.send_signal(signal.SIGKILL)
    procs[1].popen.wait()
    t_kill = time.monotonic()
    (tmp / "go").touch()
    # Meanwhile the later children import (they start on a file: jax.distributed
    # and the backends come up only then).
    port = _free_port()
    relaunched = [_Proc(_cli(workdir), _job_env(base, port, i, GJ_START=str(tmp / "relaunch")),
                        tmp / f"launch2_p{i}.log") for i in range(2)]
    survivor_rc = procs[0].wait(timeout=SURVIVOR_BOUND_S + 60)
    survivor_s = time.monotonic() - t_kill
    survivor_log = procs[0].output()
    phases["kill"] = time.monotonic() - t_start - sum(phases.values())

    # 3. Relaunch both in the same workdir; they resume from step 3.
    (tmp / "relaunch").touch()
    relaunch_logs = [p.check() for p in relaunched]
    phases["resume"] = time.monotonic() - t_start - sum(phases.values())

    # 4. Restore the 2-process (8-device) checkpoint onto the reference's 8 devices and
    # onto this process's one.
    (tmp / "restore").touch()
    assert jax.device_count() == 1
    state = train.restore(None, workdir)
    assert all(len(a.sharding.device_set) == 1 for a in jax.tree.leaves(state.params))
    restored = {1: (int(state.step), [np.asarray(a) for a in jax.tree.leaves(
        jax.device_get((state.params, state.opt_state)))])}
    ref.check()
    restored[8] = _load(tmp / "restore8.npz")
    phases["restore"] = time.monotonic() - t_start - sum(phases.values())
    cpu = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_s = cpu.ru_utime + cpu.ru_stime - cpu_start.ru_utime - cpu_start.ru_stime
    print(f"multi-process scenario: {time.monotonic() - t_start:.1f} s, {cpu_s:.0f} CPU-s ("
          + ", ".join(f"{k} {v:.1f} s" for k, v in phases.items()) + f"); survivor exited "
          f"{survivor_s:.1f} s after its peer was killed (heartbeat timeout {HEARTBEAT_S} s)")
    return {
        "workdir": workdir, "steps_at_kill": steps_at_kill,
        "survivor_rc": survivor_rc, "survivor_s": survivor_s, "survivor_log": survivor_log,
        "relaunch_logs": relaunch_logs, "reference": _load(tmp / "ref.npz"),
        "restored": restored,
        "reference_dir": ref_dir,
    }


def test_two_processes_train_like_one_process_on_eight_devices(job):
    """Each process reads its own half of every batch: the result is the 8-device one."""
    ref_step, ref = job["reference"]
    step, restored = job["restored"][1]
    assert ref_step == step == TINY_VAE["train.num_steps"]
    assert len(restored) == len(ref) > 10
    for a, b in zip(restored, ref, strict=True):
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6)


def test_checkpoint_restores_onto_one_and_eight_devices(job):
    (s1, one), (s8, eight) = job["restored"][1], job["restored"][8]
    assert s1 == s8 == TINY_VAE["train.num_steps"]
    for a, b in zip(one, eight, strict=True):
        np.testing.assert_array_equal(a, b)


def test_process_zero_alone_writes_metrics_and_config(job):
    workdir = job["workdir"]
    assert (workdir / "config.json").exists()
    rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    keys = [(r["step"], r["split"]) for r in rows]
    # Step 2 from the first launch, 4 and 6 (and the final eval) from the resumed one,
    # each once: a second writer would duplicate rows.
    assert keys == [(2, "train"), (4, "train"), (6, "train"), (6, "val")], keys
    assert sorted(p.name for p in (workdir / "checkpoints").iterdir()
                  if p.name.isdigit()) == ["3", "6"]


def test_a_killed_job_resumes_from_its_checkpoint(job):
    assert job["steps_at_kill"] == [PAUSE_AT]
    for log in job["relaunch_logs"]:
        assert f"resumed from step {PAUSE_AT}" in log, log[-2000:]


def test_survivor_of_a_killed_peer_exits_with_a_clear_error_in_bounded_time(job):
    assert job["survivor_rc"] != 0
    assert job["survivor_s"] < SURVIVOR_BOUND_S, job["survivor_s"]
    assert "another task died" in job["survivor_log"], job["survivor_log"][-3000:]


def test_validation_metrics_equal_one_process(job):
    def val(workdir):
        rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
        return [r for r in rows if r["split"] == "val"][-1]

    ref, got = val(job["reference_dir"]), val(job["workdir"])
    assert got["num_examples"] == ref["num_examples"]
    assert got["loss"] == pytest.approx(ref["loss"], rel=1e-5)


# --- The environment variables, without starting anything -------------------------------

_ALL_VARS = (parallel.ENV_COORDINATOR, parallel.ENV_NUM_PROCESSES, parallel.ENV_PROCESS_ID,
             parallel.ENV_MODE, *parallel.DEFAULT_TIMEOUTS, "SLURM_JOB_ID", "SLURM_STEP_NODELIST",
             "SLURM_NTASKS", "SLURM_PROCID", "SLURM_LOCALID", "OMPI_MCA_orte_hnp_uri",
             "OMPI_COMM_WORLD_SIZE")


@pytest.fixture
def env(monkeypatch):
    for name in _ALL_VARS:
        monkeypatch.delenv(name, raising=False)

    def set_env(**values):
        for k, v in values.items():
            monkeypatch.setenv(k, v)
        return parallel.distributed_options()

    return set_env


def test_no_variables_is_a_single_process(env):
    assert env() is None
    assert env(GEN_JAX_DISTRIBUTED="off", JAX_COORDINATOR_ADDRESS="h:1") is None


def test_explicit_variables_and_timeouts(env):
    opts = env(JAX_COORDINATOR_ADDRESS="10.0.0.1:1234", JAX_NUM_PROCESSES="4", JAX_PROCESS_ID="3",
               GEN_JAX_HEARTBEAT_TIMEOUT="7")
    assert opts == {"coordinator_address": "10.0.0.1:1234", "num_processes": 4, "process_id": 3,
                    "initialization_timeout": 300, "heartbeat_timeout_seconds": 7,
                    "shutdown_timeout_seconds": parallel.DEFAULT_TIMEOUTS[
                        parallel.ENV_SHUTDOWN_TIMEOUT]}


def test_slurm_is_left_to_jax_detection(env):
    slurm = dict(SLURM_JOB_ID="7", SLURM_STEP_NODELIST="n[1-2]", SLURM_PROCID="1", SLURM_LOCALID="0")
    opts = env(SLURM_NTASKS="2", **slurm)
    assert (opts["coordinator_address"], opts["num_processes"], opts["process_id"]) == (None,) * 3
    assert env(SLURM_NTASKS="1") is None


@pytest.mark.parametrize("values, message", [
    ({"JAX_COORDINATOR_ADDRESS": "h:1"}, "JAX_NUM_PROCESSES is not set"),
    ({"JAX_COORDINATOR_ADDRESS": "h:1", "JAX_NUM_PROCESSES": "2"}, "JAX_PROCESS_ID is not set"),
    ({"JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "0"}, "JAX_COORDINATOR_ADDRESS is not set"),
    ({"JAX_NUM_PROCESSES": "0"}, "JAX_NUM_PROCESSES='0' is not valid: use an integer >= 1"),
    ({"JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "2"},
     "JAX_PROCESS_ID='2' is not valid: use an integer in [0, 1]"),
    ({"JAX_COORDINATOR_ADDRESS": "localhost"}, "JAX_COORDINATOR_ADDRESS='localhost' is not valid: "
     "use host:port"),
    ({"JAX_COORDINATOR_ADDRESS": "h:1", "JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "0",
      "GEN_JAX_HEARTBEAT_TIMEOUT": "-1"}, "GEN_JAX_HEARTBEAT_TIMEOUT='-1' is not valid"),
    ({"GEN_JAX_DISTRIBUTED": "yes"}, "GEN_JAX_DISTRIBUTED='yes' is not valid: use one of auto, on, off"),
])
def test_bad_or_missing_variables_are_one_line_config_errors(env, values, message):
    with pytest.raises(ConfigError) as e:
        env(**values)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_training_with_a_malformed_variable_stops_at_setup(env, monkeypatch, tmp_path, tiny_config):
    assert env() is None  # the job's variables cleared
    for name, value in ((parallel.ENV_COORDINATOR, "127.0.0.1:1"), (parallel.ENV_PROCESS_ID, "0"),
                        (parallel.ENV_NUM_PROCESSES, "two")):
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=r"^JAX_NUM_PROCESSES='two' is not valid: use an integer "
                       r">= 1 \(the number of processes in the job\)$"):
        train.setup(tiny_config(), tmp_path)


def test_initialize_is_skipped_for_a_single_process(env, monkeypatch):
    called = []
    monkeypatch.setattr(parallel.jax.distributed, "initialize", lambda **kw: called.append(kw))
    env()
    parallel.maybe_initialize_distributed()
    assert called == []

