"""Train-step time of the conv VAE for each decoder upsampling mode, in one process.

    python experiments/upsample_bench.py [--config configs/vae_digits.py] [--batch 128]

Prints ms/step for "pixel_shuffle", "resize" and "transpose" and the ratio to
pixel_shuffle. Rounds are interleaved so machine load affects all modes alike.
Each step is the one the runtime compiles (registry.build, the non-finite guard,
jitted over the device mesh with the state donated: experiments/runner.py
runtime_step), with keys fold_in(key, step) as in training.
"""

from __future__ import annotations

import argparse
import time

import jax
import numpy as np
import runner
import tensorflow_datasets as tfds

from gen_jax import load_config, parallel
from gen_jax.nn.conv import UPSAMPLE_MODES


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/vae_digits.py")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    # Timing does not depend on pixel values: tfds configs run on tfds' mock data,
    # so they can be timed where the dataset is not on disk.
    with tfds.testing.mock_data(num_examples=args.batch):
        steps = _compile_all(args)
    _time_all(steps, args)


def _compile_all(args) -> dict:
    steps = {}
    for mode in UPSAMPLE_MODES:
        config = load_config(args.config, **{"model.upsample": mode, "data.batch_size": args.batch})
        method, fn, mesh = runner.runtime_step(config)
        host = {"x": np.random.default_rng(0).random((args.batch, *method.info.shape), np.float32)}
        state = runner.runtime_init(method, mesh, jax.random.key(0), host)
        batch = parallel.shard_batch(host, mesh)
        state, m = fn(state, batch, jax.random.key(1))  # compile
        jax.block_until_ready(m)
        steps[mode] = [fn, state, batch, []]
    return steps


def _time_all(steps: dict, args) -> None:
    for _ in range(args.rounds):
        for entry in steps.values():
            fn, state, batch, times = entry
            t0 = time.perf_counter()
            train_key = jax.random.key(2)
            for i in range(args.steps):
                state, m = fn(state, batch, jax.random.fold_in(train_key, i))
            jax.block_until_ready((state, m))
            times.append((time.perf_counter() - t0) / args.steps)
            entry[1] = state
    base = np.median(steps["pixel_shuffle"][3])
    print(f"{'mode':15s} {'ms/step':>8s} {'ratio':>6s}   ({jax.devices()[0].platform}, batch {args.batch})")
    for mode, (_, _, _, times) in steps.items():
        med = np.median(times)
        print(f"{mode:15s} {1000 * med:8.2f} {med / base:6.2f}")


if __name__ == "__main__":
    main()
