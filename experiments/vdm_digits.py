"""VDM's test bits/dim on digits, with the bound's three terms reported separately.

    nice -n 10 python -m gen_jax --config=configs/vdm_digits.py --workdir=/tmp/vdm_run
    python experiments/vdm_digits.py --workdir=/tmp/vdm_run [--samples 256]
        [--out experiments/results/vdm_digits] [--split val] [--step N] [--max_images N]
        [--no_figures]

Restores the workdir's latest checkpoint (or ``--step``'s; EMA parameters) and evaluates,
on every image of ``--split`` (test: 360; choose settings and checkpoints on val: 180),
the negative bound -log P(x) <= prior + reconstruction + diffusion
with ``--samples`` stratified (time, noise) draws per image for the diffusion and
reconstruction terms (gen_jax.diffusion.vdm.VDM.log_prob_terms). Reports each term
in bits/dim with its standard error over images, the total against Gated PixelCNN
(1.758) and ddpm_digits (3.47), the learned endpoints γ_0, γ_1, and the per-image
standard deviation of the one-sample diffusion estimate (what the variance-minimising
schedule training lowers). Writes ``results.json``, ``results.md`` (``results_<split>.*``
for another split), the schedule
(``schedule.png``) and a sample grid (``samples.png``, T = sampler.num_steps).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import runner  # noqa: F401  (puts the repository on sys.path)

from gen_jax import data as data_lib
from gen_jax import viz
from gen_jax.diffusion import vdm
from gen_jax.likelihood import bits_per_dim
from gen_jax.train import restore_run, setup

GATED_PIXELCNN, DDPM = 1.758, 3.47


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--samples", type=int, default=256, help="time draws per test image")
    ap.add_argument("--num_grid", type=int, default=64)
    ap.add_argument("--out", default="experiments/results/vdm_digits")
    ap.add_argument("--split", default="test", help="test | val | train (choose settings on val)")
    ap.add_argument("--step", type=int, default=None, help="checkpoint step (default: the latest)")
    ap.add_argument("--max_images", type=int, default=0, help="first N images of the split; 0 = all")
    ap.add_argument("--no_figures", action="store_true", help="skip schedule.png and samples.png")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    run = setup(None, args.workdir)
    state, step = restore_run(run, args.step)
    method, dim = run.method, run.info.dim
    params = state.eval_params
    x, _ = data_lib.load_split(run.config, args.split)
    if args.max_images:
        x = x[:args.max_images]
    x = jnp.asarray(x)
    key = jax.random.key(2024)

    t0 = time.perf_counter()
    terms_fn = jax.jit(lambda x, r: method.log_prob_terms(params, x, r, args.samples))
    terms = {k: [] for k in ("prior", "recon", "diffusion")}
    for i in range(0, len(x), 120):
        res = terms_fn(x[i:i + 120], jax.random.fold_in(key, i))
        for k in terms:
            terms[k].append(np.asarray(res[k], np.float64))
    terms = {k: np.concatenate(v) for k, v in terms.items()}
    total = sum(terms.values())
    seconds = time.perf_counter() - t0

    def bpd(nats: np.ndarray) -> dict:
        return {"bpd": float(bits_per_dim(nats.mean(), dim)),
                "stderr_bpd": float(bits_per_dim(nats.std(ddof=1) / math.sqrt(len(nats)), dim))}

    # One-sample spread of the diffusion term (antithetic times within each batch of 120).
    one = jax.jit(lambda x, r: method.terms(params, x, r)["diffusion"])
    single = np.concatenate([np.asarray(one(x[i:i + 120], jax.random.fold_in(key, 10_000 + i)))
                             for i in range(0, len(x), 120)])
    g0, g1 = (float(g) for g in vdm.endpoints(params["schedule"]))
    result = {
        "workdir": args.workdir, "step": step, "split": args.split,
        "num_images": int(len(x)),
        "mc_samples_per_image": args.samples, "seconds": seconds,
        "total": bpd(total), **{k: bpd(v) for k, v in terms.items()},
        "gamma_0": g0, "gamma_1": g1,
        "one_sample_diffusion_std_bpd": float(bits_per_dim(single.std(ddof=1), dim)),
        "reference": {"gated_pixelcnn": GATED_PIXELCNN, "ddpm_digits": DDPM, "uniform": math.log2(17)},
    }
    # a val/train evaluation (choosing settings) never replaces the test results
    stem = "results" if args.split == "test" else f"results_{args.split}"
    (out / f"{stem}.json").write_text(json.dumps(result, indent=2))

    rows = [f"| {name} | {result[k]['bpd']:.4f} | {result[k]['stderr_bpd']:.4f} |"
            for name, k in (("prior", "prior"), ("reconstruction", "recon"), ("diffusion", "diffusion"),
                            ("**total (-bound)**", "total"))]
    md = [f"# VDM on digits: {args.split} bits/dim (step {step})", "",
          f"{len(x)} {args.split} images, {args.samples} stratified time draws per image; "
          f"learned γ_0 = {g0:.3f}, γ_1 = {g1:.3f}.", "",
          "| term | bits/dim | stderr |", "| --- | --- | --- |", *rows, "",
          f"Gated PixelCNN {GATED_PIXELCNN}, ddpm_digits {DDPM}, uniform {math.log2(17):.3f} bits/dim. "
          f"One-sample diffusion-term std per image: {result['one_sample_diffusion_std_bpd']:.3f} bits/dim."]
    (out / f"{stem}.md").write_text("\n".join(md) + "\n")

    if args.no_figures:
        print("\n".join(md))
        return
    t = jnp.linspace(0.0, 1.0, 201)
    g = np.asarray(vdm.gamma(params["schedule"], t)[0])
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(4, 3))
        ax.plot(np.asarray(t), g)
        ax.set_xlabel("t")
        ax.set_ylabel("γ(t) = -log SNR")
        ax.set_title(f"learned schedule, step {step}")
        fig.tight_layout()
        fig.savefig(out / "schedule.png", dpi=100)
        plt.close(fig)
    except ImportError:
        pass
    samples = np.asarray(jax.jit(lambda r: method.sample(state, r, args.num_grid))(jax.random.key(7)))
    viz.save_image_grid(out / "samples.png", samples, value_range=tuple(run.config.data.value_range))
    print("\n".join(md))


if __name__ == "__main__":
    main()
