"""Training throughput with ``train.steps_per_call`` = 1 against k, through the real loop.

    python experiments/bench_steps_per_call.py [--k 10] [--steps 1000] [--rounds 3]

Each workload's config trains ``--steps`` steps with ``python -m gen_jax``'s loop
(:func:`gen_jax.train.train_and_evaluate`: data iterator, keys, logging every 100
steps; no evaluation or checkpoint in between) three ways: one step per compiled call,
k steps per call as a ``lax.scan`` (``runtime.multi_step=scan``) and k steps unrolled
(``unroll``), in a rotating order within each round so that machine load affects all
alike. The loop logs ``steps_per_sec`` per logging interval; the first interval (it
includes compilation) is dropped and the rest's median is the round's rate. The table
gives the median over rounds, the ratios to one step per call (> 1: faster), and each
run's final logged training loss (the same batches and keys: equal up to float
rounding, which chaotic training can amplify over many steps).

``--compile`` instead times each workload's compilation (the persistent cache off):
one step, k steps scanned, k steps unrolled.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "experiments")]

import jax  # noqa: E402
import numpy as np  # noqa: E402
import runner  # noqa: E402

from gen_jax import parallel, train  # noqa: E402

# name -> (config file, overrides): small models whose step is dominated by the host's
# per-call work (2-D MLPs), and the default job (a small conv VAE on 8x8 digits).
WORKLOADS = {
    "vae_moons (MLP VAE, 2-D)": ("vae_moons.py", {}),
    "flow_toy2d (RealNVP, 2-D)": ("flow_toy2d.py", {}),
    "gan_toy2d (MLP GAN, 2-D)": ("gan_toy2d.py", {}),
    "vae_digits (conv VAE, 8x8; the default job)": ("vae_digits.py", {}),
}


def rate(config_file: str, overrides: dict, k: int, form: str, steps: int,
         workdir: Path) -> tuple[float, float]:
    """(median steps/s after the first logging interval, final logged training loss)."""
    cfg = runner.config(config_file, overrides, {
        "train.num_steps": steps, "train.log_every": 100, "train.eval_every": 0,
        "train.checkpoint_every": 0, "train.steps_per_call": k, "runtime.multi_step": form})
    train.train_and_evaluate(cfg, workdir)
    rows = [json.loads(line) for line in open(workdir / "metrics.jsonl")]
    rows = [r for r in rows if r["split"] == "train"]
    return statistics.median(r["steps_per_sec"] for r in rows[1:]), rows[-1]["loss"]


def compile_seconds(config_file: str, overrides: dict, k: int, workdir: Path) -> dict[str, float]:
    """Seconds to compile one step, k steps scanned and k steps unrolled (no cache)."""
    cfg = runner.config(config_file, overrides, {"runtime.compilation_cache": False})
    run = train.setup(cfg, workdir)
    example = train._example_batch(run)
    state = train._init_state(run, example)
    one = train.guarded_step(run.method)
    stacked = parallel.shard_batches(jax.tree.map(lambda x: np.stack([x] * k), example), run.mesh)
    out = {}
    for label, unroll in (("1", None), ("scan", False), ("unroll", True)):
        t0 = time.perf_counter()
        if unroll is None:
            parallel.jit_train_step(one, run.mesh, run.options).lower(
                state, parallel.shard_batch(example, run.mesh), run.keys["train"]).compile()
        else:
            parallel.jit_train_steps(train.scanned_steps(one, k, unroll), run.mesh, run.options).lower(
                state, stacked, run.keys["train"], 0).compile()
        out[label] = time.perf_counter() - t0
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", default="", help="substring of the workload names to run")
    parser.add_argument("--compile", action="store_true", help="time compilation instead")
    parser.add_argument("--out", default=str(REPO / "experiments/results/bench_steps_per_call.md"))
    args = parser.parse_args()
    if args.compile:
        jax.config.update("jax_enable_compilation_cache", False)
        with tempfile.TemporaryDirectory() as tmp:
            for name, (file, overrides) in WORKLOADS.items():
                if args.only in name:
                    s = compile_seconds(file, overrides, args.k, Path(tmp))
                    print(f"| {name} | " + " | ".join(f"{s[w]:.1f}" for w in ("1", "scan", "unroll")) + " |",
                          flush=True)
        return
    ways = [("1", 1, "auto"), ("scan", args.k, "scan"), ("unroll", args.k, "unroll")]
    results: dict[str, dict[str, list[float]]] = {}
    losses: dict[str, dict[str, float]] = {}
    t0 = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for name, (file, overrides) in WORKLOADS.items():
                if args.only not in name:
                    continue
                for label, k, form in ways[r % 3:] + ways[:r % 3]:
                    wd = Path(tmp) / f"{file}_{label}_{r}"
                    sps, loss = rate(file, overrides, k, form, args.steps, wd)
                    results.setdefault(name, {}).setdefault(label, []).append(sps)
                    losses.setdefault(name, {})[label] = loss
                    print(f"round {r} {name} {label}: {sps:.1f} steps/s, final loss {loss:.5f}",
                          flush=True)
    lines = [
        f"# Steps per compiled call: 1 vs {args.k}",
        "",
        f"`python experiments/bench_steps_per_call.py --k {args.k} --steps {args.steps} "
        f"--rounds {args.rounds}` ({time.strftime('%Y-%m-%d')}, {time.time() - t0:.0f} s). "
        f"Training steps/s of the runtime's loop, median over {args.rounds} interleaved rounds "
        "(each round's rate: the median logging interval after the first).",
        "",
        f"| workload | 1 step / call | {args.k}, scan | {args.k}, unrolled | scan / 1 | unrolled / 1 "
        "| final loss (1 / scan / unrolled) |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, by in results.items():
        one, scan, unroll = (statistics.median(by[w]) for w in ("1", "scan", "unroll"))
        loss = " / ".join(f"{losses[name][w]:.5f}" for w in ("1", "scan", "unroll"))
        lines.append(f"| {name} | {one:.0f} | {scan:.0f} | {unroll:.0f} | {scan / one:.2f} | "
                     f"{unroll / one:.2f} | {loss} |")
    text = "\n".join(lines) + "\n"
    print(text)
    Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
