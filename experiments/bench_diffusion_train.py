"""Training throughput of the diffusion UNet: steps/s, images/s, FLOPs per step (from
XLA's compiled cost analysis) and, on a GPU with a known peak, model FLOPs utilisation.

Times the ddpm Method's real ``train_step`` (L_simple, Adam, EMA, gradient clipping)
as the runtime compiles it (registry.build, the non-finite guard, jitted over the
device mesh with the state donated: experiments/runner.py runtime_step), on a
synthetic batch of the config's shape, so the dataset need not be on disk (tfds
configs are built under tfds' mock data).

  # the DDPM CIFAR-10 model (35.7M parameters) at batch 128, e.g. on one GPU:
  python experiments/bench_diffusion_train.py --config=configs/ddpm_cifar10.py --batch=128 [--bf16]
  # a CPU-sized run:
  python experiments/bench_diffusion_train.py --config=configs/ddpm_cifar10.py --batch=8 \
      --override=model.ch=32 --steps=5
Appends a row to experiments/results/diffusion_train_bench.jsonl (--out).
"""

from __future__ import annotations

import argparse
import ast
import json
import time
from pathlib import Path

import jax
import numpy as np
import runner

from gen_jax import load_config, parallel
from gen_jax.errors import DataError

RESULTS = Path(__file__).resolve().parent / "results"
# Dense bf16 peak FLOP/s (no sparsity) by device kind substring; float32 runs are
# still reported against this peak (the TF32/bf16 tensor-core number MFU usually uses).
PEAK_BF16 = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "V100": 125e12, "L4": 121e12,
             "TPU v4": 275e12, "TPU v5e": 197e12, "TPU v5p": 459e12, "TPU v6": 918e12}


def peak_flops(device) -> float | None:
    kind = getattr(device, "device_kind", "")
    for key, value in PEAK_BF16.items():
        if key.lower() in kind.lower():
            return value
    return None


def parse_override(text: str) -> tuple[str, object]:
    key, _, value = text.partition("=")
    try:
        return key, ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return key, value


def build(config):
    """(method, step, mesh) as the runtime builds them; a tfds dataset that is not on
    disk is replaced by mock data (only its shapes are used: the batch is synthetic)."""
    try:
        return runner.runtime_step(config)
    except DataError:
        import tensorflow_datasets as tfds

        with tfds.testing.mock_data(num_examples=8):
            return runner.runtime_step(config)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="configs/ddpm_cifar10.py")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--steps", type=int, default=20, help="timed steps (after one warm-up)")
    p.add_argument("--bf16", action="store_true", help="networks compute in bfloat16 (runtime.precision)")
    p.add_argument("--override", action="append", default=[], help="dotted config override k=v")
    p.add_argument("--out", default=str(RESULTS / "diffusion_train_bench.jsonl"),
                   help="JSON-lines file the row is appended to")
    args = p.parse_args(argv)
    overrides = dict(parse_override(o) for o in args.override)
    overrides["data.batch_size"] = args.batch
    if args.bf16:
        overrides["runtime.precision"] = "bfloat16"
    config = load_config(args.config, **overrides)
    method, step, mesh = build(config)
    info = method.info
    rng = np.random.default_rng(0)
    lo, hi = config.data.value_range
    host_batch = {"x": rng.uniform(lo, hi, (args.batch, *info.shape)).astype(np.float32)}
    if info.num_classes:
        host_batch["y"] = rng.integers(0, info.num_classes, args.batch).astype(np.int32)
    state = runner.runtime_init(method, mesh, jax.random.key(0), host_batch)
    batch = parallel.shard_batch(host_batch, mesh)
    n_params = sum(int(a.size) for a in jax.tree.leaves(state.params))
    t0 = time.perf_counter()
    compiled = step.lower(state, batch, jax.random.key(1)).compile()
    compile_s = time.perf_counter() - t0
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    flops = float(cost.get("flops", float("nan"))) if cost else float("nan")
    state, m = compiled(state, batch, jax.random.key(2))  # warm-up
    jax.block_until_ready(m)
    t0 = time.perf_counter()
    for i in range(args.steps):
        state, m = compiled(state, batch, jax.random.fold_in(jax.random.key(3), i))
    jax.block_until_ready((state, m))
    dt = (time.perf_counter() - t0) / args.steps
    dev = jax.devices()[0]
    peak = peak_flops(dev)
    row = {"config": args.config, "overrides": {k: str(v) for k, v in overrides.items()},
           "device": getattr(dev, "device_kind", str(dev)), "num_devices": jax.device_count(),
           "params": n_params, "batch": args.batch, "bf16": args.bf16, "compile_s": compile_s,
           "step_ms": 1000 * dt, "steps_per_sec": 1 / dt, "images_per_sec": args.batch / dt,
           "flops_per_step": flops, "achieved_tflops": flops / dt / 1e12,
           "mfu": (flops / dt / peak) if peak else None, "loss": float(m["loss"]),
           "step_fn": "runtime (guarded, mesh-sharded)"}
    print(json.dumps(row, indent=2))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "a") as f:
        f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
