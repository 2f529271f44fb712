"""Latent diffusion against pixel-space DDPM on 8x8 digits at equal training compute
(issue 18, part 1): sample quality and sampling time.

Train the three models first, each with its config's defaults, through the CLI:

    python -m gen_jax --config=configs/vae_digits.py --workdir=runs/vae_digits
    python -m gen_jax --config=configs/ldm_digits.py --workdir=runs/ldm_digits
    python -m gen_jax --config=configs/ddpm_digits.py --workdir=runs/ddpm_digits
    python experiments/ldm_vs_pixel.py [--num 1000]

(from the repository root: the LDM's config names its VAE by the relative path runs/vae_digits).

Measured here, each from the workdir's latest checkpoint:

- training compute: each config's train-step FLOPs (XLA's cost analysis of the
  compiled step, as ``--mode=bench`` reports it) times its steps; the LDM's count adds
  its autoencoder's training;
- sample quality: ``--num`` samples in one compiled call, measured as the leaderboard
  does (gen_jax.metrics.digits_metrics against the 1257 training digits: digits-FD,
  KID, precision/recall, density/coverage, classifier score, class-share TV); the LDM
  at several guidance weights and unconditionally (the null label), and two
  references: the VAE's own prior samples and its reconstructions of the test split
  (the ceiling the autoencoder sets for any latent model);
- sampling time: the second compiled call (another key), seconds per sample, and the
  network evaluations per sample;
- memorisation: the median distance of each sample to its nearest training digit,
  against that of the test digits (a model copying its training set scores ~0).

Writes experiments/results/ldm_digits/results.json, compare.md and samples.png.
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

from gen_jax import checkpoint, evaluate, viz
from gen_jax.data import load_split
from gen_jax.diffusion import samplers
from gen_jax.metrics import digits_metrics, to_unit_interval
from gen_jax.metrics.digits_features import digits_split01

REPO = runner.REPO
METRICS = ("digits_fd", "kid", "precision", "recall", "density", "coverage", "classifier_score",
           "class_share_tv")


def nn_distance(x01: np.ndarray, ref01: np.ndarray) -> np.ndarray:
    """Euclidean distance of each image to its nearest reference image, [0, 1] pixels."""
    a, b = x01.reshape(len(x01), -1).astype(np.float64), ref01.reshape(len(ref01), -1).astype(np.float64)
    d2 = (a**2).sum(1)[:, None] - 2 * a @ b.T + (b**2).sum(1)[None]
    return np.sqrt(np.maximum(d2.min(1), 0.0))


def timed_samples(fn, state, key: jax.Array) -> tuple[np.ndarray, float]:
    """(samples, seconds) of the second call of a compiled sampler (the first compiles)."""
    jax.block_until_ready(fn(state, jax.random.fold_in(key, 1)))
    t0 = time.perf_counter()
    x = jax.block_until_ready(fn(state, key))
    return np.asarray(x, np.float32), time.perf_counter() - t0


def row(name: str, x: np.ndarray, config, seconds: float | None, nfe: int | None,
        ref01: np.ndarray, test01: np.ndarray) -> dict:
    x01 = to_unit_interval(x, config.data, 17)
    m = digits_metrics(x01, ref01)
    return {"name": name, "n": len(x), "seconds": seconds, "nfe": nfe,
            "ms_per_sample": None if seconds is None else 1e3 * seconds / len(x),
            "nn_dist_median": float(np.median(nn_distance(x01, ref01))),
            "test_nn_dist_median": float(np.median(nn_distance(test01, ref01))),
            **{k: m[k] for k in METRICS}, "grid": x01[:60]}


def train_cost(workdir: Path) -> dict:
    """--mode=bench's FLOPs and step time of a workdir's config, and its trained steps."""
    bench = evaluate.benchmark(None, workdir, repeats=10)
    steps = max(r["step"] for r in map(json.loads, open(workdir / "metrics.jsonl")) if r["split"] == "train")
    return {"steps": steps, "step_flops": bench["train_step_flops"], "step_ms": bench["train_step_ms"],
            "total_gflop": steps * bench["train_step_flops"] / 1e9, "batch_size": bench["batch_size"]}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vae", default=str(REPO / "runs" / "vae_digits"))
    parser.add_argument("--ldm", default=str(REPO / "runs" / "ldm_digits"))
    parser.add_argument("--ddpm", default=str(REPO / "runs" / "ddpm_digits"))
    parser.add_argument("--num", type=int, default=1000, help="samples per row (as the leaderboard)")
    parser.add_argument("--guidance", default="0,1,2", help="LDM guidance weights w to measure")
    parser.add_argument("--out", default=str(REPO / "experiments" / "results" / "ldm_digits"))
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    ref01, _ = digits_split01("train")
    test01, _ = digits_split01("test")
    ref01, test01 = ref01.reshape(-1, 8, 8, 1), test01.reshape(-1, 8, 8, 1)
    key = jax.random.key(0)
    n = args.num
    cost = {name: train_cost(Path(wd)) for name, wd in (("vae", args.vae), ("ldm", args.ldm),
                                                         ("ddpm", args.ddpm))}
    rows = [row("real: test split", test01, digits_cfg(), None, None, ref01, test01)]

    ldm, ldm_state, ldm_cfg = checkpoint.load_trained(args.ldm)
    nfe = samplers.nfe(ldm_cfg.sampler.name, ldm_cfg.sampler.num_steps, order=ldm_cfg.sampler.order)
    for w in (float(s) for s in args.guidance.split(",")):
        fn = jax.jit(lambda s, k, w=w: ldm.sample(s, k, n, guidance=w))
        x, sec = timed_samples(fn, ldm_state, key)
        rows.append(row(f"LDM, classes in turn, w={w:g}", x, ldm_cfg, sec, nfe * (2 if w else 1),
                        ref01, test01))
    null = jnp.full((n,), ldm.num_classes, jnp.int32)
    x, sec = timed_samples(jax.jit(lambda s, k: ldm.sample(s, k, n, labels=null, guidance=0.0)),
                           ldm_state, key)
    rows.append(row("LDM, unconditional (null label)", x, ldm_cfg, sec, nfe, ref01, test01))

    ddpm, ddpm_state, ddpm_cfg = checkpoint.load_trained(args.ddpm)
    s = ddpm_cfg.sampler
    x, sec = timed_samples(jax.jit(lambda st, k: ddpm.sample(st, k, n)), ddpm_state, key)
    rows.append(row(f"DDPM (pixels), unconditional, {s.name} {s.num_steps} steps", x, ddpm_cfg, sec,
                    samplers.nfe(s.name, s.num_steps, order=s.order), ref01, test01))

    vae, vae_state, vae_cfg = checkpoint.load_trained(args.vae)
    x, sec = timed_samples(jax.jit(lambda st, k: vae.sample(st, k, n)), vae_state, key)
    rows.append(row("VAE prior samples (z ~ N(0, I))", x, vae_cfg, sec, 1, ref01, test01))
    x_test, _ = load_split(vae_cfg, "test")
    recon = np.asarray(jax.jit(lambda st, x: vae.reconstruct(st, x, None))(vae_state, x_test))
    rows.append(row("VAE reconstructions of the test split", recon, vae_cfg, None, None, ref01, test01))

    write(out, rows, cost, n)


def digits_cfg():
    """A data config under which [0, 1] images map to themselves (the real rows)."""
    import ml_collections

    return ml_collections.ConfigDict({"data": {"value_range": (0.0, 1.0), "dequantize": "none"}})


def write(out: Path, rows: list[dict], cost: dict, n: int) -> None:
    (out / "results.json").write_text(json.dumps(
        {"cost": cost, "rows": [{k: v for k, v in r.items() if k != "grid"} for r in rows]}, indent=2))
    ldm_total = cost["vae"]["total_gflop"] + cost["ldm"]["total_gflop"]
    lines = ["| model | n | digits-FD | KID | precision | recall | density | coverage | cls. score | "
             "class TV | NFE | ms/sample | NN dist. (test: {:.3f}) |".format(rows[0]["test_nn_dist_median"]),
             "|---|" + "---|" * 12]
    for r in rows:
        def f(k, spec, r=r):
            return "-" if r[k] is None else format(r[k], spec)
        lines.append(f"| {r['name']} | {r['n']} | {f('digits_fd', '.1f')} | {f('kid', '.2f')} | "
                     f"{f('precision', '.3f')} | {f('recall', '.3f')} | {f('density', '.3f')} | "
                     f"{f('coverage', '.3f')} | {f('classifier_score', '.2f')} | "
                     f"{f('class_share_tv', '.3f')} | {f('nfe', 'd')} | {f('ms_per_sample', '.3f')} | "
                     f"{f('nn_dist_median', '.3f')} |")
    lines += ["", "| training | steps | batch | GFLOP/step | total GFLOP | ms/step (bench) |",
              "|---|---|---|---|---|---|"]
    for k in ("vae", "ldm", "ddpm"):
        c = cost[k]
        lines.append(f"| {k} | {c['steps']} | {c['batch_size']} | {c['step_flops'] / 1e9:.3f} | "
                     f"{c['total_gflop']:.0f} | {c['step_ms']:.1f} |")
    lines.append(f"| vae + ldm | | | | {ldm_total:.0f} ({ldm_total / cost['ddpm']['total_gflop']:.1%} "
                 "of ddpm) | |")
    (out / "compare.md").write_text("\n".join(lines) + "\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [r for r in rows if r["name"].startswith(("LDM, classes in turn, w=1", "LDM, uncond", "DDPM"))]
    fig, axes = plt.subplots(1, len(shown), figsize=(3.2 * len(shown), 2.4))
    for ax, r in zip(np.atleast_1d(axes), shown, strict=True):
        ax.imshow(viz.image_grid(r["grid"], nrow=10, upscale=2)[..., 0], cmap="gray", vmin=0, vmax=255)
        ax.set_title(r["name"].split(", dpm")[0], fontsize=8)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(out / "samples.png", dpi=100)
    plt.close(fig)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
