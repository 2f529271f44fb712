"""gen_jax's own train step (the bench_vs_pytorch rows) with XLA:CPU's YNNPACK fusion on
and off, per program (``jax.jit(..., compiler_options=...)``), interleaved rounds: the
measurement behind ``runtime.cpu_conv_fusion = "auto"`` (off for images of 16+ px).

    python experiments/bench_conv_fusion.py [--rows vae_digits dcgan_digits ...] [--rounds 5]

Writes experiments/results/conv_fusion_ab.md (median ms per step; speedup = on / off).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "experiments")]

import jax  # noqa: E402
import numpy as np  # noqa: E402

from gen_jax import parallel  # noqa: E402
from gen_jax import train as train_lib  # noqa: E402

OFF = {"xla_cpu_experimental_ynn_fusion_type": ""}
ROWS = ["vae_digits", "dcgan_digits", "ddpm_digits", "vae_mnist", "dcgan_cifar10"]


def step_fn(row: str, options):
    """(call() running one train step and blocking, compile CPU-s) for a bench_vs_pytorch row."""
    import bench_vs_pytorch as b  # PyTorch is imported there but not used here

    _, config_file, overrides, kind = b.ROWS[row]
    config, info, method = b.build(config_file, overrides)
    mesh = parallel.make_mesh()
    rng = np.random.default_rng(0)
    lo, hi = tuple(config.data.value_range)
    host = {"x": (lo + (hi - lo) * rng.random((config.data.batch_size, *info.shape))).astype(np.float32)}
    if info.num_classes:
        host["y"] = rng.integers(0, info.num_classes, config.data.batch_size).astype(np.int32)
    init = jax.jit(method.init, out_shardings=parallel.replicated(mesh))
    box = {"state": init(jax.random.key(0), parallel.shard_global_batch(host, mesh)), "i": 0}
    fn = parallel.jit_train_step(train_lib.guarded_step(method), mesh, options)
    batch, key = parallel.shard_batch(host, mesh), jax.random.key(2)

    def call():
        box["state"], m = fn(box["state"], batch, jax.random.fold_in(key, box["i"]))
        box["i"] += 1
        jax.block_until_ready((box["state"], m))

    t0 = time.process_time()
    call()
    return call, time.process_time() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", nargs="+", default=ROWS)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--out", default=str(REPO / "experiments" / "results" / "conv_fusion_ab.md"))
    args = ap.parse_args()
    lines = [
        "# XLA:CPU YNNPACK fusion on / off, gen_jax train steps",
        "",
        f"- date {time.strftime('%Y-%m-%dT%H:%M:%S%z')}; jax {jax.__version__}; {os.cpu_count()} cores; "
        f"load average at start {os.getloadavg()[0]:.1f}",
        f"- command: `python experiments/bench_conv_fusion.py --rounds {args.rounds}`",
        f"- medians of {args.rounds} interleaved rounds of 2 steps per setting; ms per step",
        "",
        "| row | on ms | off ms | speedup off / on | compile CPU-s on / off |",
        "| --- | --- | --- | --- | --- |",
    ]
    for row in args.rows:
        calls = {"on": step_fn(row, None), "off": step_fn(row, OFF)}
        times = {"on": [], "off": []}
        for r in range(args.rounds):
            for lab in ("on", "off") if r % 2 == 0 else ("off", "on"):
                t = time.perf_counter()
                calls[lab][0]()
                calls[lab][0]()
                times[lab].append((time.perf_counter() - t) / 2 * 1000)
        on, off = statistics.median(times["on"]), statistics.median(times["off"])
        lines.append(f"| {row} | {on:.1f} | {off:.1f} | {on / off:.2f} | "
                     f"{calls['on'][1]:.1f} / {calls['off'][1]:.1f} |")
        print(lines[-1], flush=True)
    lines.append(f"\nload average at end {os.getloadavg()[0]:.1f}")
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("wrote", args.out)


if __name__ == "__main__":
    main()
