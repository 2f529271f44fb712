"""One conv weight gradient (the DCGAN discriminator's 4x4/2 conv, 128x16x16x64 ->
8x8x128) as a plain jit and inside ``lax.scan`` bodies: length 1 (rolled and with
``unroll=True``) and length 2 with ``unroll=True``. On XLA:CPU a while loop sends it to a
naive loop emitter; ``unroll=True`` removes the loop only when the length is above 1.

    python experiments/bench_conv_in_loop.py
"""

import time

import jax
import numpy as np
from jax import lax


def conv(x, w):
    return lax.conv_general_dilated(x, w, (2, 2), ((1, 1), (1, 1)),
                                    dimension_numbers=("NHWC", "HWIO", "NHWC"))


def wgrad(w, x):
    return jax.grad(lambda w: conv(x, w).sum())(w)


def in_scan(length, unroll):
    def f(w, x):
        def body(c, _):
            return c, wgrad(w, x)
        return lax.scan(body, 0.0, None, length=length, unroll=unroll)[1][0]
    return f


def main():
    rng = np.random.default_rng(0)
    x = rng.random((128, 16, 16, 64), np.float32)
    w = (0.01 * rng.random((4, 4, 64, 128))).astype(np.float32)
    cases = {"plain jit": wgrad, "scan length 1": in_scan(1, 1),
             "scan length 1, unroll=True": in_scan(1, True),
             "scan length 2, unroll=True (two gradients)": in_scan(2, True)}
    for name, f in cases.items():
        f = jax.jit(f)
        jax.block_until_ready(f(w, x))
        t = time.perf_counter()
        for _ in range(2):
            jax.block_until_ready(f(w, x))
        loop = "while" in f.lower(w, x).compile().as_text()
        print(f"{name:45s} {(time.perf_counter() - t) / 2 * 1000:9.1f} ms   while loop: {loop}")


if __name__ == "__main__":
    main()
