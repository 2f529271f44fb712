"""Diffusion sampler benchmark: accuracy and speed of DDPM, DDIM, DPM-Solver and
DPM-Solver++ at 10-1000 network evaluations (NFE).

(a) Analytic: data from a 2-D Gaussian mixture, whose noised marginals are
    Gaussian mixtures too, so the exact ε(x_t, t) = -√(1-ᾱ_t) ∇log p_t(x_t) is in
    closed form. Error vs the true distribution: sliced Wasserstein-2 (256
    projections), RBF MMD² (median bandwidth) and the max mean / covariance error,
    each against fresh true samples; the "floor" row is two independent true sample
    sets (what sampling noise alone gives).
(b) Trained digits model (a workdir of configs/ddpm_digits.py): wall time,
    samples/s, and the digits metrics of gen_jax.metrics.digits_metrics (Fréchet
    distance in the features of the offline digits CNN, classifier score, class
    share TV) against the training split.

Usage:
  python experiments/bench_samplers.py --part=analytic
  python experiments/bench_samplers.py --part=digits --workdir=runs/ddpm_digits
Writes experiments/results/diffusion_samplers_{analytic,digits}.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from gen_jax.diffusion import samplers
from gen_jax.diffusion.schedules import get_schedule

RESULTS = Path(__file__).resolve().parent / "results"
NFES = (10, 20, 50, 100, 1000)
# (label, sampler, options, NFE per step): DPM-Solver-k uses k calls per step.
SAMPLERS = [("ddpm", "ddpm", {}, 1), ("ddim", "ddim", {}, 1),
            ("dpm_solver-2", "dpm_solver", {"order": 2}, 2), ("dpm_solver-3", "dpm_solver", {"order": 3}, 3),
            ("dpm_solver++(2M)", "dpm_solver++", {}, 1),
            ("dpm_solver++(3M)", "dpm_solver++", {"order": 3}, 1)]


# -- the analytic Gaussian mixture ------------------------------------------------

def mixture(k: int = 6, radius: float = 0.7, std: float = 0.12, seed: int = 0):
    """Means on a circle, isotropic std, unequal weights."""
    ang = 2 * np.pi * np.arange(k) / k
    means = radius * np.stack([np.cos(ang), np.sin(ang)], 1)
    weights = np.random.default_rng(seed).dirichlet(np.full(k, 5.0))
    return means, np.full(k, std), weights


def sample_mixture(means, stds, weights, n, rng):
    comp = rng.choice(len(weights), n, p=weights)
    return means[comp] + stds[comp, None] * rng.normal(size=(n, 2))


def mixture_eps(sched, means, stds, weights):
    """ε*(x_t, t) for the mixture: p_t = Σ w_k N(√ᾱ μ_k, (ᾱ s_k² + 1 - ᾱ) I)."""
    ab = jnp.asarray(sched.alphas_cumprod, jnp.float32)
    mu, s2, logw = (jnp.asarray(a, jnp.float32) for a in (means, stds**2, np.log(weights)))

    def fn(x, t):
        a = ab[t][:, None]                                    # (B, 1)
        var = a * s2[None] + 1 - a                            # (B, K)
        diff = x[:, None, :] - jnp.sqrt(a)[:, :, None] * mu[None]  # (B, K, 2)
        logp = logw - jnp.sum(diff**2, -1) / (2 * var) - jnp.log(var)
        r = jax.nn.softmax(logp, axis=1)
        score = -jnp.sum(r[..., None] * diff / var[..., None], axis=1)
        return -jnp.sqrt(1 - a) * score

    return fn


def sliced_w2(x, y, rng, num_proj: int = 256) -> float:
    """Sliced Wasserstein-2 between equal-size samples (sorted 1-D projections)."""
    theta = rng.normal(size=(2, num_proj))
    theta /= np.linalg.norm(theta, axis=0)
    px, py = np.sort(x @ theta, 0), np.sort(y @ theta, 0)
    return float(np.sqrt(np.mean((px - py) ** 2)))


def mmd2(x, y, bandwidth: float) -> float:
    """Unbiased RBF MMD² (on up to 3000 points each)."""
    x, y = x[:3000], y[:3000]

    def k(a, b):
        d = np.sum(a**2, 1)[:, None] + np.sum(b**2, 1)[None] - 2 * a @ b.T
        return np.exp(-d / (2 * bandwidth**2))

    kxx, kyy, kxy = k(x, x), k(y, y), k(x, y)
    n, m = len(x), len(y)
    return float((kxx.sum() - np.trace(kxx)) / (n * (n - 1)) + (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
                 - 2 * kxy.mean())


def errors(x, ref, rng, bandwidth):
    return {"sw2": sliced_w2(x, ref, rng), "mmd2": mmd2(x, ref, bandwidth),
            "mean_err": float(np.abs(x.mean(0) - ref.mean(0)).max()),
            "cov_err": float(np.abs(np.cov(x.T) - np.cov(ref.T)).max())}


def timed(fn, *args):
    """Compiles, then times one call (seconds)."""
    jax.block_until_ready(fn(*args))
    t0 = time.perf_counter()
    out = jax.block_until_ready(fn(*args))
    return out, time.perf_counter() - t0


def run_analytic(n: int, schedule: str) -> list[dict]:
    sched = get_schedule(schedule, 1000)
    means, stds, weights = mixture()
    eps = mixture_eps(sched, means, stds, weights)
    rng = np.random.default_rng(1)
    ref = sample_mixture(means, stds, weights, n, rng)
    bw = float(np.median(np.sqrt(((ref[:500, None] - ref[None, :500]) ** 2).sum(-1))))
    rows = [{"sampler": "floor (true vs true)", "nfe": 0,
             **errors(sample_mixture(means, stds, weights, n, rng), ref, rng, bw)}]
    print(json.dumps(rows[0]), flush=True)
    for label, method, opts, per_step in SAMPLERS:
        for nfe in NFES:
            steps = nfe // per_step
            if method == "dpm_solver++":
                steps = min(steps, 999)  # T - 1 steps at most (T endpoints)
            if method == "dpm_solver" and nfe > 100:
                continue  # the discrete grid has no room for 333 third-order steps
            fn = jax.jit(lambda key, method=method, steps=steps, opts=opts: samplers.sample(
                eps, sched, (n, 2), key, method, steps, **opts))
            x, dt = timed(fn, jax.random.key(nfe))
            x = np.asarray(x, np.float64)
            row = {"sampler": label, "nfe": samplers.nfe(method, steps, **opts), "seconds": dt,
                   "samples_per_sec": n / dt, **errors(x, ref, rng, bw)}
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


def run_digits(workdir: str, n: int, nfes: tuple[int, ...]) -> list[dict]:
    from gen_jax import train
    from gen_jax.data import load_split
    from gen_jax.metrics import digits_metrics

    run = train.setup(None, workdir)
    state, step = train.restore_run(run)
    method = run.method
    lo, hi = run.config.data.value_range
    ref, _ = load_split(run.config, "train")
    ref01 = (ref - lo) / (hi - lo)
    rows = []
    for label, name, opts, per_step in SAMPLERS:
        for nfe in nfes:
            if name == "dpm_solver" and nfe > 100:
                continue
            steps = min(nfe // per_step, 999) if name == "dpm_solver++" else nfe // per_step
            fn = jax.jit(lambda s, key, name=name, steps=steps, opts=opts: method.sample(
                s, key, n, method=name, num_steps=steps, **opts))
            x, dt = timed(fn, state, jax.random.key(nfe))
            m = digits_metrics((np.asarray(x) - lo) / (hi - lo), ref01)
            row = {"sampler": label, "nfe": samplers.nfe(name, steps, **opts), "seconds": dt,
                   "samples_per_sec": n / dt, "digits_fd": m["digits_fd"],
                   "classifier_score": m["classifier_score"], "class_share_tv": m["class_share_tv"],
                   "checkpoint_step": step}
            rows.append(row)
            print(json.dumps(row), flush=True)
    held, _ = load_split(run.config, "test")
    m = digits_metrics((held[:n] - lo) / (hi - lo), ref01)
    rows.append({"sampler": "floor (test split)", "nfe": 0, "digits_fd": m["digits_fd"],
                 "classifier_score": m["classifier_score"], "class_share_tv": m["class_share_tv"]})
    return rows


def to_markdown(rows: list[dict], cols: list[str]) -> str:
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        cells = []
        for c in cols:
            v = r.get(c, "")
            cells.append(f"{v:.4g}" if isinstance(v, float) else str(v))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--part", choices=("analytic", "digits"), default="analytic")
    p.add_argument("--num", type=int, default=0, help="samples (default 40000 analytic, 360 digits)")
    p.add_argument("--schedule", default="linear")
    p.add_argument("--workdir", default="runs/ddpm_digits")
    p.add_argument("--nfes", default="10,20,50,100,1000", help="digits part: NFE budgets")
    args = p.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    meta = {"devices": [str(d) for d in jax.devices()], "jax": jax.__version__}
    if args.part == "analytic":
        rows = run_analytic(args.num or 40000, args.schedule)
        cols = ["sampler", "nfe", "seconds", "samples_per_sec", "sw2", "mmd2", "mean_err", "cov_err"]
    else:
        rows = run_digits(args.workdir, args.num or 360, tuple(int(v) for v in args.nfes.split(",")))
        cols = ["sampler", "nfe", "seconds", "samples_per_sec", "digits_fd", "classifier_score",
                "class_share_tv"]
    out = RESULTS / f"diffusion_samplers_{args.part}"
    result = {"meta": meta, "args": vars(args), "rows": rows}
    out.with_suffix(".json").write_text(json.dumps(result, indent=2))
    out.with_suffix(".md").write_text(to_markdown(rows, cols))
    print(to_markdown(rows, cols))


if __name__ == "__main__":
    main()
