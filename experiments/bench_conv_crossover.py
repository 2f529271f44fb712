"""Which formulation of a convolution does XLA:CPU run fastest, by shape?

    python experiments/bench_conv_crossover.py [--batch 64] [--reps 7]
        [--sizes 1 2 4 8 16 32] [--channels 16 64 128] [--modes fwd fwd+bwd]
        [--out experiments/results/conv_crossover.md]

For a grid of map sizes, channel counts, kernels and strides (the convolutions the
families use: 3x3 stride 1, 3x3 and 4x4 stride 2, SAME padding), times with each
formulation of gen_jax.nn.conv.conv_general_dilated ("lax", "im2col", "lax_wdot"):
the jitted forward ("fwd"; lax_wdot's forward is lax's), the forward + backward
(gradients of sum(conv(x, w) * g) in x and w, "fwd+bwd"), and optionally the
forward + backward inside a ``lax.scan`` of two steps ("scan2"; the GAN's k
discriminator steps put conv weight gradients in a scan body). The formulations
are interleaved rep by rep so that load on the shared machine affects all alike;
medians of ``--reps``. Writes a markdown table with the fastest formulation and
the rule's choice (gen_jax.nn.conv.choose_impl), to check the rule against.
"""

from __future__ import annotations

import argparse
import itertools
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import runner  # noqa: F401  (puts the repository on sys.path)

from gen_jax.nn.conv import choose_impl, conv_general_dilated

KERNELS = ((3, 1), (3, 2), (4, 2))  # (kernel size, stride)
IMPLS = {"fwd": ("lax", "im2col"), "fwd+bwd": ("lax", "im2col", "lax_wdot"),
         "scan2": ("lax", "im2col", "lax_wdot")}


def _fn(impl: str, stride: int, mode: str):
    def conv(x, w):
        return conv_general_dilated(x, w, (stride, stride), "SAME",
                                    dimension_numbers=("NHWC", "HWIO", "NHWC"), impl=impl)

    grad = jax.grad(lambda x, w, g: jnp.sum(conv(x, w) * g), argnums=(0, 1))

    def scanned(x, w, g):
        def body(w, _):
            gx, gw = grad(x, w, g)
            return w - 1e-3 * gw, gx.sum()
        return jax.lax.scan(body, w, None, length=2)

    return jax.jit({"fwd": conv, "fwd+bwd": grad, "scan2": scanned}[mode])


def _time(fn, args) -> float:
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    return (time.perf_counter() - t0) * 1e3


def measure(batch: int, size: int, c: int, k: int, s: int, reps: int, mode: str) -> dict:
    """Median ms of each formulation for one shape and mode, interleaved."""
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((batch, size, size, c), np.float32))
    w = jnp.asarray(rng.standard_normal((k, k, c, c), np.float32) / np.sqrt(k * k * c))
    out = -(-size // s)
    g = jnp.asarray(rng.standard_normal((batch, out, out, c), np.float32))
    args = (x, w) if mode == "fwd" else (x, w, g)
    fns = {impl: _fn(impl, s, mode) for impl in IMPLS[mode]}
    times = {impl: [] for impl in fns}
    for impl in fns:  # compile + warm up
        _time(fns[impl], args)
    for _ in range(reps):
        for impl in fns:
            times[impl].append(_time(fns[impl], args))
    return {impl: float(np.median(t)) for impl, t in times.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32])
    parser.add_argument("--channels", type=int, nargs="+", default=[16, 64, 128])
    parser.add_argument("--modes", nargs="+", default=["fwd", "fwd+bwd"], choices=list(IMPLS))
    parser.add_argument("--out", default="experiments/results/conv_crossover.md")
    args = parser.parse_args(argv)
    cols = [(m, i) for m in args.modes for i in IMPLS[m]]
    lines = [f"# Convolution formulations on {jax.devices()[0].device_kind} (XLA:CPU), "
             f"jax {jax.__version__}, batch {args.batch}, medians of {args.reps} interleaved reps",
             "", "Command: `python experiments/bench_conv_crossover.py --batch "
             f"{args.batch} --reps {args.reps} --sizes {' '.join(map(str, args.sizes))} "
             f"--channels {' '.join(map(str, args.channels))} --modes {' '.join(args.modes)}`", "",
             "ms per call; C = input = output channels; rule = gen_jax.nn.conv.choose_impl; "
             "best = fastest measured (per mode).", "",
             "| map | C | kernel/stride | out | rule | " + " | ".join(f"{m} {i}" for m, i in cols)
             + " | " + " | ".join(f"{m} best" for m in args.modes) + " |",
             "|" + " --- |" * (5 + len(cols) + len(args.modes))]
    for size, c, (k, s) in itertools.product(args.sizes, args.channels, KERNELS):
        out = -(-size // s)
        res = {m: measure(args.batch, size, c, k, s, args.reps, m) for m in args.modes}
        cells = " | ".join(f"{res[m][i]:.3f}" for m, i in cols)
        best = " | ".join(min(res[m], key=res[m].get) for m in args.modes)
        line = (f"| {size}x{size} | {c} | {k}x{k}/{s} | {out}x{out} | "
                f"{choose_impl((out, out), (k, k), c)} | {cells} | {best} |")
        print(line, flush=True)
        lines.append(line)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
