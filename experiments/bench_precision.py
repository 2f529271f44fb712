"""Train-step time under ``runtime.precision`` float32 against bfloat16, interleaved.

    python experiments/bench_precision.py [--rounds 12] [--steps 10]

For each workload, the runtime's train step (registry.build with the precision policy,
the non-finite guard, jitted over the mesh with the state donated and the run's XLA
options: experiments/runner.py runtime_step) is compiled once per precision on one random
batch of the config's shape; then rounds of ``--steps`` steps alternate between the two
(the order flips every round), each step timed to completion with keys
``fold_in(key, step)``. Prints each side's first loss (the two should agree to bfloat16's
precision), the median step time over all timed steps (n = rounds x steps per side) and
the ratio bfloat16 / float32 (> 1: bfloat16 is slower). The policy is for GPUs and TPUs,
where bfloat16 matrix units are fast; on a CPU without them it is expected to be slower.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "experiments")]

import jax  # noqa: E402
import numpy as np  # noqa: E402
import runner  # noqa: E402

from gen_jax import parallel  # noqa: E402

WORKLOADS = {"vae_digits": ("vae_digits.py", {"data.batch_size": 128}),
             "ddpm_digits": ("ddpm_digits.py", {"data.batch_size": 64})}
PRECISIONS = ("float32", "bfloat16")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()
    for name, (file, overrides) in WORKLOADS.items():
        sides = {}
        for precision in PRECISIONS:
            config = runner.config(file, overrides, {"runtime.precision": precision})
            method, fn, mesh = runner.runtime_step(config)
            rng = np.random.default_rng(0)
            lo, hi = tuple(config.data.value_range)
            host = {"x": (lo + (hi - lo) * rng.random((config.data.batch_size, *method.info.shape)))
                    .astype(np.float32)}
            if method.info.num_classes:
                host["y"] = rng.integers(0, method.info.num_classes, len(host["x"])).astype(np.int32)
            state = runner.runtime_init(method, mesh, jax.random.key(0), host)
            batch, key = parallel.shard_batch(host, mesh), jax.random.key(2)
            t0 = time.perf_counter()
            state, metrics = fn(state, batch, jax.random.fold_in(key, 0))
            first_loss = float(metrics["loss"])
            sides[precision] = {"fn": fn, "state": state, "batch": batch, "key": key, "times": [],
                                "compile_s": time.perf_counter() - t0, "first_loss": first_loss}
        for r in range(args.rounds):
            for precision in PRECISIONS if r % 2 == 0 else PRECISIONS[::-1]:
                s = sides[precision]
                for i in range(args.steps):
                    t0 = time.perf_counter()
                    s["state"], m = s["fn"](s["state"], s["batch"],
                                            jax.random.fold_in(s["key"], 1 + r * args.steps + i))
                    jax.block_until_ready(m)
                    s["times"].append(time.perf_counter() - t0)
        med = {p: 1e3 * float(np.median(sides[p]["times"])) for p in PRECISIONS}
        print(json.dumps({
            "workload": name, "n_per_side": args.rounds * args.steps,
            "median_ms": {p: round(v, 2) for p, v in med.items()},
            "bfloat16 / float32": round(med["bfloat16"] / med["float32"], 2),
            "first_loss": {p: sides[p]["first_loss"] for p in PRECISIONS},
            "compile_and_first_step_s": {p: round(sides[p]["compile_s"], 1) for p in PRECISIONS}}),
            flush=True)


if __name__ == "__main__":
    main()
