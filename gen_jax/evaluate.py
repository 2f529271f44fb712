"""The sample, eval and bench modes: everything that reads a trained workdir.

Public: :func:`sample_to_file`, :func:`evaluate`, :func:`benchmark`.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np

from gen_jax import data as data_lib
from gen_jax import parallel
from gen_jax.checkpoint import Checkpointer
from gen_jax.train import Run, draw_samples, evaluate_split, guarded_step, log_prob_fn, restore_run, setup


def _atomic_write(path: Path, write) -> None:
    """Writes through a temporary file, so a failure never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    os.replace(tmp, path)


def sample_to_file(config: ml_collections.ConfigDict | None, workdir: str | Path, num: int,
                   out: str | Path, seed: int = 0) -> Path:
    """Writes ``num`` float32 samples (NHWC images or (N, D) vectors, in the data's
    value range) from the latest checkpoint to ``out`` (.npy); EMA params where kept.

    Returns:
      The path written.
    """
    if num <= 0:
        raise ValueError(f"--num must be positive, got {num}")
    run = setup(config, workdir)
    state, _ = restore_run(run)
    samples = draw_samples(run, state, num, jax.random.fold_in(run.keys["sample"], seed))
    out = Path(out)
    if out.suffix != ".npy":
        out = out.with_name(out.name + ".npy")
    def write(path: Path) -> None:
        with open(path, "wb") as f:  # a file object: np.save would append ".npy" to a path
            np.save(f, samples)

    _atomic_write(out, write)
    return out


def split_log_prob(run: Run, state: Any, split: str = "test", num_samples: int | None = None) -> dict:
    """Mean log_prob (nats per example, and bits/dim) over a whole split."""
    k = num_samples or run.config.eval.log_prob_samples
    fn = log_prob_fn(run, k)
    values = []
    for i, batch in enumerate(data_lib.make_eval_batches(run.config, split, run.mesh.devices.size)):
        rng = jax.random.fold_in(run.keys["log_prob"], i)
        values.append(np.asarray(fn(state, parallel.shard_batch({"x": batch["x"]}, run.mesh)["x"],
                                    rng)))
    lp = np.concatenate(values)
    nats = float(lp.mean())
    return {"log_prob_nats": nats, "nll_bpd": -nats / (run.info.dim * math.log(2.0)),
            "stderr_nats": float(lp.std(ddof=1) / math.sqrt(len(lp))), "num_examples": len(lp),
            "importance_samples": k}


def evaluate(config: ml_collections.ConfigDict | None, workdir: str | Path) -> dict:
    """Evaluates the latest checkpoint on the test split; writes ``workdir/eval.json``.

    Reports the Method's ``eval_step`` metrics, its ``log_prob`` (where it has one;
    a bound for latent-variable models, with ``eval.log_prob_samples`` importance
    samples) and the time to draw ``eval.num_samples`` samples.
    """
    run = setup(config, workdir)
    state, step = restore_run(run)
    result: dict[str, Any] = {"method": run.config.method, "data": run.info.name, "step": step,
                              "test": evaluate_split(run, state, "test", step)}
    if hasattr(run.method, "log_prob"):
        result["test_log_prob"] = split_log_prob(run, state)
    n = run.config.eval.num_samples
    if n:
        r_compile, r_timed = jax.random.split(run.keys["bench"])
        draw_samples(run, state, n, r_compile)  # compile
        t0 = time.perf_counter()
        samples = draw_samples(run, state, n, r_timed)
        dt = time.perf_counter() - t0
        result["sampling"] = {"num_samples": n, "seconds": dt, "samples_per_sec": n / dt,
                              "finite": bool(np.isfinite(samples).all())}
    if jax.process_index() == 0:
        _atomic_write(Path(workdir) / "eval.json",
                      lambda p: Path(p).write_text(json.dumps(result, indent=2)))
    return result


def benchmark(config: ml_collections.ConfigDict | None, workdir: str | Path,
              repeats: int = 20) -> dict:
    """Times the compiled train step and sampler on this machine; writes ``bench.json``.

    Uses the workdir's latest checkpoint when there is one, else a fresh init.
    """
    run = setup(config, workdir)
    batch = parallel.shard_batch(next(data_lib.make_train_iterator(run.config, run.config.seed)),
                                 run.mesh)
    ckpt = Checkpointer(run.workdir)
    untrained = ckpt.latest_step() is None
    ckpt.close()
    if untrained:  # an untrained model times the same
        state = jax.jit(run.method.init, out_shardings=parallel.replicated(run.mesh))(
            run.keys["init"], batch)
    else:
        state, _ = restore_run(run)
    r_steps, r_compile, r_timed = jax.random.split(run.keys["bench"], 3)
    step_fn = parallel.jit_train_step(guarded_step(run.method), run.mesh)
    compiled = step_fn.lower(state, batch, r_steps).compile()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    flops = float(cost.get("flops", float("nan"))) if cost else float("nan")
    state, m = compiled(state, batch, jax.random.fold_in(r_steps, 0))  # warm-up
    jax.block_until_ready(m)
    t0 = time.perf_counter()
    for i in range(1, repeats + 1):
        state, m = compiled(state, batch, jax.random.fold_in(r_steps, i))
    jax.block_until_ready((state, m))
    step_time = (time.perf_counter() - t0) / repeats
    n = run.config.train.num_grid_samples
    draw_samples(run, state, n, r_compile)
    t0 = time.perf_counter()
    draw_samples(run, state, n, r_timed)
    sample_time = time.perf_counter() - t0
    result = {"method": run.config.method, "data": run.info.name,
              "devices": [str(d) for d in jax.devices()],
              "batch_size": run.config.data.batch_size, "train_step_ms": 1000 * step_time,
              "train_examples_per_sec": run.config.data.batch_size / step_time,
              "train_step_flops": flops, "sample_batch": n, "sample_ms": 1000 * sample_time}
    if jax.process_index() == 0:
        _atomic_write(Path(workdir) / "bench.json",
                      lambda p: Path(p).write_text(json.dumps(result, indent=2)))
    return result


__all__ = ["benchmark", "evaluate", "sample_to_file", "split_log_prob"]
