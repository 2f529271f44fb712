"""Train-step time before / after the shape-dispatched convolutions (gen_jax.nn.conv)
and the unrolled GAN discriminator steps, A/B interleaved.

    git archive HEAD | (mkdir -p /tmp/gen_jax_before && tar -x -C /tmp/gen_jax_before)
    python experiments/bench_conv_steps.py --before /tmp/gen_jax_before [--rounds 7] [--steps 10]

``--before`` is a checkout of the code to compare against (e.g. the commit before the
change); "after" is this checkout. Each workload's step is compiled in two worker
processes, one per checkout, each importing its own gen_jax; the parent then asks them
in turn for a timed round of ``--steps`` steps, so machine load affects both alike, and
reports medians over ``--rounds`` rounds. Each step is the one the runtime compiles
(registry.build, the non-finite guard, jitted over the device mesh with the state
donated: experiments/runner.py runtime_step) with keys fold_in(key, step), on random
batches of the config's shape, and the first step's metrics of both sides are printed
(the same numbers up to float rounding: the change must not alter results).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
# (name, config file, overrides): the cheap rows.
WORKLOADS = {
    "dcgan_digits": ("dcgan_digits.py", {}),
    "vae_digits": ("vae_digits.py", {"data.batch_size": 128}),
    "ddpm_digits": ("ddpm_digits.py", {"data.batch_size": 64}),
}


def worker(repo: str, config_file: str, overrides: str) -> None:
    """Compiles one workload's step from ``repo``, then times rounds on request (stdin)."""
    sys.path[:0] = [repo, str(Path(repo) / "experiments")]
    import jax
    import runner

    from gen_jax import load_config, parallel

    config = load_config(Path(repo) / "configs" / config_file, **json.loads(overrides))
    method, fn, mesh = runner.runtime_step(config)
    rng = np.random.default_rng(0)
    shape = (config.data.batch_size, *method.info.shape)
    lo, hi = tuple(config.data.value_range) if method.info.kind == "image" else (-1.0, 1.0)
    host = {"x": (lo + (hi - lo) * rng.random(shape)).astype(np.float32)}
    if method.info.num_classes:
        host["y"] = rng.integers(0, method.info.num_classes, shape[0]).astype(np.int32)
    state = runner.runtime_init(method, mesh, jax.random.key(0), host)
    batch = parallel.shard_batch(host, mesh)
    key = jax.random.key(2)
    t0 = time.perf_counter()
    state, metrics = fn(state, batch, jax.random.fold_in(key, 0))
    metrics = {k: float(v) for k, v in jax.device_get(metrics).items()}
    print(json.dumps({"compile_s": time.perf_counter() - t0, "metrics": metrics}), flush=True)
    step = 1
    for line in sys.stdin:
        n = int(line)
        t0 = time.perf_counter()
        for _ in range(n):
            state, m = fn(state, batch, jax.random.fold_in(key, step))
            step += 1
        jax.block_until_ready((state, m))
        print(json.dumps({"ms": 1e3 * (time.perf_counter() - t0) / n}), flush=True)


def _start(repo: Path, config_file: str, overrides: dict) -> tuple[subprocess.Popen, dict]:
    proc = subprocess.Popen([sys.executable, __file__, "--worker", str(repo), config_file,
                             json.dumps(overrides)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True, cwd=repo)
    return proc, json.loads(proc.stdout.readline())


def _round(proc: subprocess.Popen, steps: int) -> float:
    proc.stdin.write(f"{steps}\n")
    proc.stdin.flush()
    return json.loads(proc.stdout.readline())["ms"]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", required=True, help="checkout to compare against")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--workloads", nargs="+", default=list(WORKLOADS), choices=list(WORKLOADS))
    args = parser.parse_args(argv)
    sides = {"before": Path(args.before).resolve(), "after": REPO}
    print("| workload | before ms | after ms | speed-up | before compile s | after compile s |\n"
          "| --- | --- | --- | --- | --- | --- |")
    for name in args.workloads:
        config_file, overrides = WORKLOADS[name]
        procs, first = {}, {}
        for side, repo in sides.items():  # one at a time, so compile times are comparable
            procs[side], first[side] = _start(repo, config_file, overrides)
        times = {side: [] for side in sides}
        for _ in range(args.rounds):
            for side in sides:
                times[side].append(_round(procs[side], args.steps))
        for proc in procs.values():
            proc.stdin.close()
            proc.wait()
        med = {side: float(np.median(t)) for side, t in times.items()}
        print(f"| {name} | {med['before']:.1f} | {med['after']:.1f} | "
              f"{med['before'] / med['after']:.2f}x | {first['before']['compile_s']:.1f} | "
              f"{first['after']['compile_s']:.1f} |", flush=True)
        for side in sides:
            print(f"  {side} first-step metrics: "
                  + ", ".join(f"{k}={v:.6g}" for k, v in sorted(first[side]["metrics"].items())),
                  file=sys.stderr)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        worker(*sys.argv[2:5])
    else:
        main()
