"""Checks gen_jax.anomaly.feature_flow.INCEPTION_GEOMETRY (the first receptive-field centre and
the stride of each InceptionV3 output, in input pixels) by brute force.

Every conv kernel of the network is set to a positive constant and batch norm to the
identity, so an output is positive exactly where its receptive field holds a positive
input pixel. One image per input row i0 with a single positive pixel at (i0, i0) gives,
per layer, the output rows that respond; the responding rows of a layer with centres
first + stride * k and receptive-field radius r are those with |first + stride k - i0| <= r
(clipped to the map). The script searches (first, r) reproducing the response of every
input row that some output sees (the valid convolutions never reach the last few rows)
exactly, and compares it with the table.

    PYTHONPATH=. python experiments/results/anomaly_flows/inception_geometry.py [--size=128] [--step=1]
"""

import argparse

import jax
import jax.numpy as jnp
import numpy as np

from gen_jax.anomaly.feature_flow import INCEPTION_GEOMETRY
from gen_jax.metrics.inception import TAPS, InceptionV3


def positive_network(size: int):
    net = InceptionV3(logits=False, resize=False, capture=TAPS[:15])  # up to Mixed_6e
    variables = jax.eval_shape(net.init, jax.random.key(0), jnp.zeros((1, size, size, 3)))

    def fill(path, leaf):
        name = jax.tree_util.keystr(path)
        if name.endswith("['kernel']"):
            kh, kw, cin, _ = leaf.shape
            return jnp.full(leaf.shape, 1.0 / (kh * kw * cin), jnp.float32)
        if name.endswith("['scale']"):
            return jnp.ones(leaf.shape, jnp.float32)
        if name.endswith("['var']"):
            return jnp.full(leaf.shape, 1.0 - 1e-3, jnp.float32)  # (x - 0) / sqrt(var + eps) = x
        return jnp.zeros(leaf.shape, jnp.float32)  # means, biases

    return net, jax.tree_util.tree_map_with_path(fill, variables)


def main(size: int, step: int) -> None:
    net, variables = positive_network(size)
    rows = np.arange(0, size, step)  # the input rows probed
    x = np.full((len(rows), size, size, 3), 0.5, np.float32)  # 2x - 1 = 0 inside the network
    x[np.arange(len(rows)), rows, rows] = 1.0
    out = jax.jit(net.apply)(variables, jnp.asarray(x))
    for tap in TAPS[:15]:
        first, stride = INCEPTION_GEOMETRY[tap]
        resp = np.asarray(out[tap]).max(axis=(2, 3)) > 0  # (probed input row, output row k)
        k = np.arange(resp.shape[1])[None]
        # The last input rows are never inside a window of the valid convolutions and pools:
        # no output sees them. Only the rows some output sees are compared.
        seen = resp.any(1)
        assert seen[:seen.sum()].all(), "unseen input rows must be the last ones"
        found = sorted({f for f in range(64) for r in range(2 * size)
                        if np.array_equal(resp[seen], np.abs(f + stride * k - rows[seen][:, None]) <= r)})
        if len(found) > 4:
            verdict = "undetermined: the receptive field covers the whole input"
        else:
            verdict = f"brute force first = {found}: {'OK' if found == [first] else 'MISMATCH'}"
        print(f"{tap:14s} map {resp.shape[1]:3d}  table (first, stride) = ({first}, {stride})  {verdict}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=128, help="input side")
    parser.add_argument("--step", type=int, default=1, help="probe every step-th input row")
    args = parser.parse_args()
    main(args.size, args.step)
