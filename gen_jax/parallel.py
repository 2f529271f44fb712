"""Data parallelism over a ("data",) mesh of all devices with jax.jit.

Batches are sharded along their leading axis, the state is replicated, and
step functions are compiled with explicit shardings and the state donated.
(``jax.pmap`` is in maintenance mode; it is not used.)
"""

from __future__ import annotations

import os
from typing import Any, Callable

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from gen_jax.errors import ConfigError

DATA_AXIS = "data"


def maybe_initialize_distributed() -> None:
    """Joins a multi-host job when its usual environment variables are set."""
    if os.environ.get("JAX_COORDINATOR_ADDRESS") or os.environ.get("SLURM_NTASKS", "1") != "1":
        if not jax.distributed.is_initialized():
            jax.distributed.initialize()


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


def shard_batch(batch: dict, mesh: jax.sharding.Mesh) -> dict:
    """Places this process's part of a global batch on the mesh, split along axis 0."""
    sharding = batch_sharding(mesh)

    def put(x):
        x = np.asarray(x)
        if jax.process_count() == 1:
            return jax.device_put(x, sharding)
        return jax.make_array_from_process_local_data(sharding, x)

    return jax.tree.map(put, batch)


def replicate(tree: Any, mesh: jax.sharding.Mesh) -> Any:
    """Places a pytree (e.g. the TrainState) on every device."""
    return jax.device_put(tree, replicated(mesh))


def jit_train_step(step: Callable, mesh: jax.sharding.Mesh) -> Callable:
    """``(state, batch, rng) -> (state, metrics)`` compiled with the state donated."""
    rep, data = replicated(mesh), batch_sharding(mesh)
    return jax.jit(step, in_shardings=(rep, data, rep), out_shardings=(rep, rep),
                   donate_argnums=0)


def jit_eval_step(step: Callable, mesh: jax.sharding.Mesh) -> Callable:
    """``(state, batch, rng) -> metrics`` compiled; the state is not donated."""
    rep, data = replicated(mesh), batch_sharding(mesh)
    return jax.jit(step, in_shardings=(rep, data, rep), out_shardings=rep)
