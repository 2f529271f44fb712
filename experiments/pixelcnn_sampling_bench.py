"""Samples/s of PixelCNN and Gated PixelCNN pixel-by-pixel sampling at batch 64.

Image sizes 8x8 (the model of configs/pixelcnn_digits.py / gated_pixelcnn_digits.py,
17 levels) and 28x28 (the model of configs/gated_pixelcnn_mnist.py, 256 levels).
Each sampler is the Method's own ``sample`` (registry.build of the config with
``method`` set to the architecture; tfds' mock data stands in for a dataset not
on disk), one compiled function (``lax.fori_loop`` over the H*W*C subpixels,
one network pass each); untrained parameters time the same as trained ones.
Runs unchanged on CPU, GPU or TPU (whatever jax.devices() has).

  python experiments/pixelcnn_sampling_bench.py [--sizes 8 28] [--archs pixelcnn gated]

Writes experiments/results/autoregressive_sampling.{md,json} (the markdown
table gets one section per device kind, so CPU and GPU results accumulate).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import jax
import numpy as np
import runner

from gen_jax import load_config, registry
from gen_jax.data import dataset_info
from gen_jax.errors import DataError

REPO = runner.REPO

# image size -> (config whose model section is used, number of levels)
SETUPS = {8: ("gated_pixelcnn_digits.py", 17), 28: ("gated_pixelcnn_mnist.py", 256)}


def build(config):
    """The Method, as the runtime builds it; a tfds dataset that is not on disk is
    replaced by mock data (only its shape and labels matter here)."""
    try:
        return registry.build(config, dataset_info(config.data))
    except DataError:
        import tensorflow_datasets as tfds

        with tfds.testing.mock_data(num_examples=8):
            return registry.build(config, dataset_info(config.data))


def bench(arch: str, size: int, batch: int, repeats: int) -> dict:
    """Compiles and times one sampler; returns a result row."""
    config_name, levels = SETUPS[size]
    # class-conditional Gated PixelCNN, unconditional PixelCNN, as in the configs
    config = load_config(REPO / "configs" / config_name, **{
        "method": "gated_pixelcnn" if arch == "gated" else "pixelcnn",
        "model.conditional": arch == "gated"})
    method = build(config)
    assert method.num_levels == levels, (method.num_levels, levels)
    x = np.zeros((1, size, size, 1), np.float32)
    state = jax.jit(method.init)(jax.random.key(0), {"x": x, "y": np.zeros((1,), np.int32)})
    # labels: None cycles through the classes (0, 1, ..., 9, 0, ...)
    sample = jax.jit(lambda state, rng: method.sample(state, rng, batch))

    t0 = time.perf_counter()
    compiled = sample.lower(state, jax.random.key(1)).compile()
    compile_s = time.perf_counter() - t0
    jax.block_until_ready(compiled(state, jax.random.key(1)))  # warm-up
    t0 = time.perf_counter()
    for i in range(repeats):
        out = compiled(state, jax.random.key(2 + i))
    jax.block_until_ready(out)
    seconds = (time.perf_counter() - t0) / repeats
    n_params = sum(p.size for p in jax.tree.leaves(state.params))
    return {"arch": arch, "size": f"{size}x{size}", "levels": levels, "batch": batch,
            "params": int(n_params), "network_passes": size * size, "compile_s": round(compile_s, 2),
            "seconds_per_batch": round(seconds, 3), "samples_per_sec": round(batch / seconds, 2)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[8, 28], choices=sorted(SETUPS))
    parser.add_argument("--archs", nargs="+", default=["pixelcnn", "gated"], choices=["pixelcnn", "gated"])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", default=str(REPO / "experiments" / "results" / "autoregressive_sampling"))
    args = parser.parse_args(argv)
    device = jax.devices()[0]
    kind = f"{device.platform}: {device.device_kind}"
    rows = []
    for size in args.sizes:
        for arch in args.archs:
            row = bench(arch, size, args.batch, args.repeats)
            print(json.dumps(row), flush=True)
            rows.append(row)

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    json_path = out.with_suffix(".json")
    results = json.loads(json_path.read_text()) if json_path.exists() else {}
    results[kind] = {"devices": len(jax.devices()), "host": platform.processor() or platform.machine(),
                     "rows": rows}
    json_path.write_text(json.dumps(results, indent=2))
    lines = ["# PixelCNN sampling throughput", "",
             "Pixel-by-pixel sampling, one compiled `lax.fori_loop` over the subpixels (one network",
             "pass each), batch of images drawn in parallel; untrained parameters (timing does not",
             "depend on them). Produced by `python experiments/pixelcnn_sampling_bench.py`.", ""]
    for k, res in results.items():
        lines += [f"## {k} ({res['devices']} device(s), host {res['host']})", "",
                  "| model | image | levels | batch | params | passes | compile s | s / batch | samples/s |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for r in res["rows"]:
            lines.append(f"| {r['arch']} | {r['size']} | {r['levels']} | {r['batch']} | {r['params']} | "
                         f"{r['network_passes']} | {r['compile_s']} | {r['seconds_per_batch']} | "
                         f"{r['samples_per_sec']} |")
        lines.append("")
    out.with_suffix(".md").write_text("\n".join(lines))
    print(f"wrote {out.with_suffix('.md')}")


if __name__ == "__main__":
    main()
