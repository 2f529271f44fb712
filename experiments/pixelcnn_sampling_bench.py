"""Samples/s of PixelCNN and Gated PixelCNN pixel-by-pixel sampling at batch 64.

Image sizes 8x8 (the model of configs/pixelcnn_digits.py / gated_pixelcnn_digits.py,
17 levels) and 28x28 (the model of configs/gated_pixelcnn_mnist.py, 256 levels).
Each sampler is one compiled function (``lax.fori_loop`` over the H*W*C
subpixels, one network pass each); untrained parameters time the same as
trained ones. Runs unchanged on CPU, GPU or TPU (whatever jax.devices() has).

  python experiments/pixelcnn_sampling_bench.py [--sizes 8 28] [--archs pixelcnn gated]

Writes experiments/results/autoregressive_sampling.{md,json} (the markdown
table gets one section per device kind, so CPU and GPU results accumulate).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from gen_jax import load_config  # noqa: E402
from gen_jax.autoregressive.heads import make_head  # noqa: E402
from gen_jax.autoregressive.pixelcnn import autoregressive_sample, build_net  # noqa: E402

# image size -> (config whose model section is used, number of levels)
SETUPS = {8: ("gated_pixelcnn_digits.py", 17), 28: ("gated_pixelcnn_mnist.py", 256)}


def bench(arch: str, size: int, batch: int, repeats: int) -> dict:
    """Compiles and times one sampler; returns a result row."""
    config_name, levels = SETUPS[size]
    model = load_config(REPO / "configs" / config_name).model
    num_classes = 10 if arch == "gated" else 0  # class-conditional, as in the configs
    head = make_head(model.head, levels, model.num_mixtures)
    net = build_net(arch, model, 1, head.num_params, num_classes)
    labels = jnp.arange(batch) % 10 if num_classes else None
    x = jnp.zeros((1, size, size, 1))
    params = net.init(jax.random.key(0), x, None if labels is None else labels[:1])["params"]

    @jax.jit
    def sample(params, rng):
        fn = lambda k: net.apply({"params": params}, 2.0 * k / (levels - 1) - 1.0, labels)  # noqa: E731
        return autoregressive_sample(fn, head, (batch, size, size, 1), rng)

    t0 = time.perf_counter()
    compiled = sample.lower(params, jax.random.key(1)).compile()
    compile_s = time.perf_counter() - t0
    jax.block_until_ready(compiled(params, jax.random.key(1)))  # warm-up
    t0 = time.perf_counter()
    for i in range(repeats):
        out = compiled(params, jax.random.key(2 + i))
    jax.block_until_ready(out)
    seconds = (time.perf_counter() - t0) / repeats
    n_params = sum(p.size for p in jax.tree.leaves(params))
    return {"arch": arch, "size": f"{size}x{size}", "levels": levels, "batch": batch,
            "params": int(n_params), "network_passes": size * size, "compile_s": round(compile_s, 2),
            "seconds_per_batch": round(seconds, 3), "samples_per_sec": round(batch / seconds, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[8, 28], choices=sorted(SETUPS))
    parser.add_argument("--archs", nargs="+", default=["pixelcnn", "gated"], choices=["pixelcnn", "gated"])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", default=str(REPO / "experiments" / "results" / "autoregressive_sampling"))
    args = parser.parse_args()
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
