"""Data parallelism over a ("data",) mesh of all devices with jax.jit.

Batches are sharded along their leading axis, the state is replicated, and
step functions are compiled with explicit shardings and the state donated.
(``jax.pmap`` is in maintenance mode; it is not used.)
"""

from __future__ import annotations

import logging
import os
from typing import Any, Callable

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from gen_jax.config import conv_fusion_choice
from gen_jax.errors import ConfigError

DATA_AXIS = "data"

log = logging.getLogger(__name__)


# Multi-process jobs. jax itself reads only JAX_COORDINATOR_ADDRESS (and
# JAX_LOCAL_DEVICE_IDS); the process count and id come from these two variables
# or from a cluster jax detects (Slurm, Open MPI; with GEN_JAX_DISTRIBUTED=on
# also Cloud TPU, Kubernetes, mpi4py).
ENV_COORDINATOR = "JAX_COORDINATOR_ADDRESS"
ENV_NUM_PROCESSES = "JAX_NUM_PROCESSES"
ENV_PROCESS_ID = "JAX_PROCESS_ID"
ENV_MODE = "GEN_JAX_DISTRIBUTED"
# Seconds. A dead process is noticed within the heartbeat timeout (jax's
# default, 100 s, keeps the others waiting too long); the shutdown timeout is
# how long a finished process waits at exit for the others (process 0 may still
# be drawing the final figures), so it stays long.
ENV_INIT_TIMEOUT = "GEN_JAX_INIT_TIMEOUT"
ENV_HEARTBEAT_TIMEOUT = "GEN_JAX_HEARTBEAT_TIMEOUT"
ENV_SHUTDOWN_TIMEOUT = "GEN_JAX_SHUTDOWN_TIMEOUT"
DEFAULT_TIMEOUTS = {ENV_INIT_TIMEOUT: 300, ENV_HEARTBEAT_TIMEOUT: 30, ENV_SHUTDOWN_TIMEOUT: 300}
_MODES = ("auto", "on", "off")


def _env_int(name: str, lo: int, hi: int | None, meaning: str) -> int | None:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return None
    valid = f"an integer >= {lo}" if hi is None else f"an integer in [{lo}, {hi}]"
    try:
        value = int(raw)
    except ValueError:
        value = None
    if value is None or value < lo or (hi is not None and value > hi):
        raise ConfigError(f"{name}={raw!r} is not valid: use {valid} ({meaning})")
    return value


def _detected_cluster() -> str | None:
    """The multi-process cluster jax would detect from environment variables alone."""
    env = os.environ
    if "OMPI_MCA_orte_hnp_uri" in env and env.get("OMPI_COMM_WORLD_SIZE", "1") != "1":
        return "Open MPI"
    slurm = ("SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_NTASKS", "SLURM_PROCID", "SLURM_LOCALID")
    if all(k in env for k in slurm) and env["SLURM_NTASKS"] != "1":
        return "Slurm"
    return None


def distributed_options() -> dict | None:
    """The ``jax.distributed.initialize`` arguments the environment asks for.

    Returns:
      None for a single-process run, else the keyword arguments (explicit
      values from the environment variables; the rest left to jax's cluster
      detection).

    Raises:
      ConfigError: a variable is malformed or out of range, or the explicit
        variables are incomplete and no cluster is detected to fill them in.
    """
    mode = os.environ.get(ENV_MODE, "auto").strip().lower() or "auto"
    if mode not in _MODES:
        raise ConfigError(f"{ENV_MODE}={mode!r} is not valid: use one of {', '.join(_MODES)} "
                          "(auto: join when JAX_COORDINATOR_ADDRESS is set or Slurm/Open MPI "
                          "runs several tasks)")
    address = os.environ.get(ENV_COORDINATOR, "").strip() or None
    num = _env_int(ENV_NUM_PROCESSES, 1, None, "the number of processes in the job")
    pid = _env_int(ENV_PROCESS_ID, 0, None if num is None else num - 1,
                   "this process's rank, 0 .. JAX_NUM_PROCESSES-1")
    if address is not None:
        host, _, port = address.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(f"{ENV_COORDINATOR}={address!r} is not valid: use host:port "
                              "(process 0's address and a free port, e.g. 10.0.0.1:1234)")
    explicit = (address, num, pid)
    cluster = _detected_cluster()
    if mode == "off" or (mode == "auto" and explicit == (None,) * 3 and cluster is None):
        return None
    if mode == "auto" and cluster is None:
        for name, value in zip((ENV_COORDINATOR, ENV_NUM_PROCESSES, ENV_PROCESS_ID), explicit,
                               strict=True):
            if value is None:
                raise ConfigError(
                    f"{name} is not set: a multi-process run needs {ENV_COORDINATOR} (host:port "
                    f"of process 0), {ENV_NUM_PROCESSES} (>= 1) and {ENV_PROCESS_ID} "
                    f"(0 .. {ENV_NUM_PROCESSES}-1), or a Slurm/Open MPI launch")
    timeouts = {name: _env_int(name, 1, None, "seconds") or default
                for name, default in DEFAULT_TIMEOUTS.items()}
    return {"coordinator_address": address, "num_processes": num, "process_id": pid,
            "initialization_timeout": timeouts[ENV_INIT_TIMEOUT],
            "heartbeat_timeout_seconds": timeouts[ENV_HEARTBEAT_TIMEOUT],
            "shutdown_timeout_seconds": timeouts[ENV_SHUTDOWN_TIMEOUT]}


def maybe_initialize_distributed() -> None:
    """Joins a multi-process job when the environment describes one.

    ``JAX_COORDINATOR_ADDRESS`` (host:port of process 0), ``JAX_NUM_PROCESSES``
    and ``JAX_PROCESS_ID`` give the job explicitly; under Slurm (``srun``) or
    Open MPI (``mpirun``) jax detects them. ``GEN_JAX_DISTRIBUTED=off`` keeps a
    process single; ``=on`` lets jax detect any cluster it knows (Cloud TPU,
    Kubernetes). ``GEN_JAX_{INIT,HEARTBEAT,SHUTDOWN}_TIMEOUT`` (seconds) bound
    how long a process waits for its peers to join, a dead peer to be noticed,
    and the others at exit. On CPU, cross-process collectives use gloo.
    Does nothing when already initialized or for a single process.

    Raises:
      ConfigError: the variables are malformed or incomplete (one line naming
        the variable and its valid values).
    """
    options = distributed_options()
    if options is None or jax.distributed.is_initialized():
        return
    # CPU collectives across processes need an implementation: gloo is the
    # default of the pinned jax, older versions had none (a user's "mpi" stays).
    if getattr(jax.config, "jax_cpu_collectives_implementation", "gloo") is None:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    try:
        jax.distributed.initialize(**options)
    except ValueError as e:  # jax found no cluster to fill in what the variables left out
        raise ConfigError(f"cannot join a multi-process job: {e} Set {ENV_COORDINATOR} (host:port), "
                          f"{ENV_NUM_PROCESSES} (>= 1) and {ENV_PROCESS_ID} (0 .. N-1), or "
                          f"{ENV_MODE}=off") from None
    log.info("process %d of %d joined the job", jax.process_index(), jax.process_count())


def make_mesh() -> jax.sharding.Mesh:
    """One axis, "data", over every device of every process."""
    n = jax.device_count()
    return jax.make_mesh((n,), (DATA_AXIS,), axis_types=(jax.sharding.AxisType.Auto,))


def replicated(mesh: jax.sharding.Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def batch_sharding(mesh: jax.sharding.Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def check_batch_size(batch_size: int, mesh: jax.sharding.Mesh, what: str = "data.batch_size") -> None:
    """A ConfigError unless the batch splits evenly over the devices."""
    n = mesh.devices.size
    if batch_size % n:
        raise ConfigError(f"{what}={batch_size} is not divisible by the {n} devices; "
                          f"use a multiple of {n}")


def _put_process_data(tree: dict, sharding: NamedSharding) -> dict:
    """Each leaf, this process's rows, as a global array with ``sharding``."""

    def put(x):
        x = np.asarray(x)
        if jax.process_count() == 1:
            return jax.device_put(x, sharding)
        return jax.make_array_from_process_local_data(sharding, x)

    return jax.tree.map(put, tree)


def shard_batch(batch: dict, mesh: jax.sharding.Mesh) -> dict:
    """Places this process's part of a global batch on the mesh, split along axis 0."""
    return _put_process_data(batch, batch_sharding(mesh))


def shard_batches(batches: dict, mesh: jax.sharding.Mesh) -> dict:
    """Like :func:`shard_batch` for ``k`` stacked batches (leading axis k, each batch
    split along axis 1): the input of :func:`jit_train_steps`."""
    return _put_process_data(batches, NamedSharding(mesh, PartitionSpec(None, DATA_AXIS)))


def shard_global_batch(batch: dict, mesh: jax.sharding.Mesh) -> dict:
    """Places a global batch that every process holds in full (an eval batch, the
    init example) on the mesh, split along axis 0: each process supplies only the
    rows of its own devices, so the array is the batch itself on any number of
    processes (``shard_batch`` would stack the processes' copies)."""
    sharding = batch_sharding(mesh)

    def put(x):
        x = np.asarray(x)
        if jax.process_count() == 1:
            return jax.device_put(x, sharding)
        return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])

    return jax.tree.map(put, batch)


def compiler_options(config: Any) -> dict[str, str] | None:
    """XLA options for a run's programs (``jax.jit(..., compiler_options=...)``): with
    ``config.runtime.cpu_conv_fusion = "off"`` (the default) on the CPU backend, XLA:CPU's
    YNNPACK fusion is off; None (XLA's defaults) for "on" and on GPU/TPU.

    Measured on the idle 2-core CPU (``python experiments/bench_conv_fusion.py``: gen_jax's
    train steps, interleaved; experiments/results/conv_fusion_ab.md), off / on speed:
    28x28 VAE 1.75, 32x32 DCGAN 1.18, 8x8 DDPM 1.54-1.64, 8x8 VAE 1.20-1.30, 8x8 DCGAN
    0.87-0.90. Per program, not per process (unlike XLA_FLAGS): one run's choice does not
    change another model's programs in the same process.

    Raises:
      ConfigError: an unknown ``runtime.cpu_conv_fusion``.
    """
    if conv_fusion_choice(config) == "off" and jax.default_backend() == "cpu":
        return {"xla_cpu_experimental_ynn_fusion_type": ""}
    return None


def jit_train_step(step: Callable, mesh: jax.sharding.Mesh,
                   options: dict[str, str] | None = None) -> Callable:
    """``(state, batch, rng) -> (state, metrics)`` compiled with the state donated
    (``options``: XLA compiler options, e.g. from :func:`compiler_options`)."""
    rep, data = replicated(mesh), batch_sharding(mesh)
    return jax.jit(step, in_shardings=(rep, data, rep), out_shardings=(rep, rep),
                   donate_argnums=0, compiler_options=options)


def jit_train_steps(steps: Callable, mesh: jax.sharding.Mesh,
                    options: dict[str, str] | None = None) -> Callable:
    """``(state, batches, key, step0) -> (state, metrics)`` compiled with the state donated:
    ``batches`` stacked along a leading axis (:func:`shard_batches`), ``key`` and ``step0``
    replicated, the metrics stacked per step."""
    rep = replicated(mesh)
    stacked = NamedSharding(mesh, PartitionSpec(None, DATA_AXIS))
    return jax.jit(steps, in_shardings=(rep, stacked, rep, rep), out_shardings=(rep, rep),
                   donate_argnums=0, compiler_options=options)


def jit_eval_step(step: Callable, mesh: jax.sharding.Mesh,
                  options: dict[str, str] | None = None) -> Callable:
    """``(state, batch, rng) -> metrics`` compiled; the state is not donated."""
    rep, data = replicated(mesh), batch_sharding(mesh)
    return jax.jit(step, in_shardings=(rep, data, rep), out_shardings=rep,
                   compiler_options=options)
