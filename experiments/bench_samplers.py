"""Diffusion sampler benchmark: accuracy and speed of DDPM, DDIM, DPM-Solver,
DPM-Solver++ and UniPC at 10-1000 network evaluations (NFE).

(a) Analytic: data from a 2-D Gaussian mixture, whose noised marginals are
    Gaussian mixtures too, so the exact ε(x_t, t) = -√(1-ᾱ_t) ∇log p_t(x_t) is in
    closed form. Every sampler starts from the same x_T. Solver error, free of
    sampling noise: ``ode_rms`` = √(mean ‖x - x_ref‖²) and ``ode_median``, the
    distance of each output to the exact probability-flow ODE solution from the
    same x_T (index T-1 to index 0, the span every sampler covers), computed in
    float64 by RK4 in log σ̄ (σ̄ = σ/α) with 1000 steps, whose own error (against
    2000 steps) is printed (``reference`` row; not given for the stochastic DDPM).
    Error vs the true distribution: sliced Wasserstein-2 (256 projections), RBF MMD²
    (median bandwidth) and the max mean / covariance error, each against fresh true
    samples; the "floor" row is two independent true sample sets (what sampling
    noise alone gives).
(b) Trained digits model (a workdir of configs/ddpm_digits.py): wall time,
    samples/s, and the digits metrics of gen_jax.metrics.digits_metrics (Fréchet
    distance in the features of the offline digits CNN, classifier score, class
    share TV) against the training split.

(c) Few-step choice (``--part=fewstep``), honest by construction: the settings of every
    registered sampler that fit 10 NFE (:func:`fewstep_grid`) are searched on a VALIDATION
    mixture (``--problem=val``: 9 components with random means and unequal stds in 3-D,
    other seeds; :func:`problem`), both schedules; the best by ``ode_rms`` per schedule
    (and the best single one for both) is chosen there. ``--problem=bench`` then reads those
    choices back and evaluates them once on the reported benchmark mixture (the one of (a))
    against DPM-Solver++(2M) at 20 NFE; it has no grid of its own (the grid runs on the
    validation problem only).

Usage:
  python experiments/bench_samplers.py --part=analytic [--problem=val] [--schedule=cosine]
  python experiments/bench_samplers.py --part=digits --workdir=runs/ddpm_digits
  python experiments/bench_samplers.py --part=fewstep --problem=val --num=20000
  python experiments/bench_samplers.py --part=fewstep --problem=bench
Writes experiments/results/diffusion_samplers_{analytic,digits}.{json,md}
(analytic on the validation problem: ..._analytic_val[_<schedule>]) and
diffusion_samplers_fewstep.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from gen_jax.diffusion import samplers
from gen_jax.diffusion.schedules import get_schedule
from gen_jax.errors import ConfigError

RESULTS = Path(__file__).resolve().parent / "results"
NFES = (10, 20, 50, 100, 1000)
# (label, sampler, options, NFE per step): DPM-Solver-k uses k calls per step.
SAMPLERS = [("ddpm", "ddpm", {}, 1), ("ddim", "ddim", {}, 1),
            ("dpm_solver-2", "dpm_solver", {"order": 2}, 2), ("dpm_solver-3", "dpm_solver", {"order": 3}, 3),
            ("dpm_solver++(2M)", "dpm_solver++", {}, 1),
            ("dpm_solver++(3M)", "dpm_solver++", {"order": 3}, 1),
            ("dpm_solver++(2M) quadratic", "dpm_solver++", {"spacing": "quadratic"}, 1),
            *[(f"unipc-{o} ({p}, {v})" + (" quadratic" if sp == "quadratic" else ""), "unipc",
               {"order": o, "prediction": p, "variant": v, "spacing": sp}, 1)
              for o, p, v, sp in [(3, "data", "bh2", "logsnr"), (2, "data", "bh2", "logsnr"),
                                  (3, "data", "bh1", "logsnr"), (3, "noise", "bh2", "logsnr"),
                                  (2, "data", "bh2", "quadratic"), (2, "noise", "bh2", "quadratic"),
                                  (3, "noise", "bh1", "quadratic"), (3, "noise", "bh2", "quadratic")]]]
MULTISTEP = ("dpm_solver++", "unipc")  # T - 1 steps at most (T solver ends)
STOCHASTIC = ("ddpm",)


# -- the analytic Gaussian mixture ------------------------------------------------

def mixture(k: int = 6, radius: float = 0.7, std: float = 0.12, seed: int = 0):
    """Means on a circle, isotropic std, unequal weights."""
    ang = 2 * np.pi * np.arange(k) / k
    means = radius * np.stack([np.cos(ang), np.sin(ang)], 1)
    weights = np.random.default_rng(seed).dirichlet(np.full(k, 5.0))
    return means, np.full(k, std), weights


def mixture_val(k: int = 9, dim: int = 3, seed: int = 7):
    """The validation mixture: ``k`` means uniform in [-0.75, 0.75]^dim, per-component
    isotropic stds uniform in [0.05, 0.2], Dirichlet(3) weights, all from ``seed``."""
    rng = np.random.default_rng(seed)
    means = rng.uniform(-0.75, 0.75, size=(k, dim))
    stds = rng.uniform(0.05, 0.2, size=k)
    return means, stds, rng.dirichlet(np.full(k, 3.0))


# name -> (mixture, seed of x_T, seed of the true samples): "bench" is the reported one.
PROBLEMS = {"bench": (mixture, 0, 1), "val": (mixture_val, 11, 12)}


def problem(name: str):
    """(mixture (means, stds, weights), x_T key seed, numpy seed of the true samples)."""
    if name not in PROBLEMS:
        raise ConfigError(f"--problem={name!r} is not a problem; valid: {', '.join(PROBLEMS)}")
    make, key_seed, rng_seed = PROBLEMS[name]
    return make(), key_seed, rng_seed


def sample_mixture(means, stds, weights, n, rng):
    comp = rng.choice(len(weights), n, p=weights)
    return means[comp] + stds[comp, None] * rng.normal(size=(n, means.shape[1]))


def mixture_eps(sched, means, stds, weights):
    """ε*(x_t, t) for the mixture: p_t = Σ w_k N(√ᾱ μ_k, (ᾱ s_k² + 1 - ᾱ) I)."""
    ab = jnp.asarray(sched.alphas_cumprod, jnp.float32)
    mu, s2, logw = (jnp.asarray(a, jnp.float32) for a in (means, stds**2, np.log(weights)))

    def fn(x, t):
        a = ab[t][:, None]                                    # (B, 1)
        var = a * s2[None] + 1 - a                            # (B, K)
        diff = x[:, None, :] - jnp.sqrt(a)[:, :, None] * mu[None]  # (B, K, d)
        logp = logw - jnp.sum(diff**2, -1) / (2 * var) - jnp.log(var)
        r = jax.nn.softmax(logp, axis=1)
        score = -jnp.sum(r[..., None] * diff / var[..., None], axis=1)
        return -jnp.sqrt(1 - a) * score

    return fn


def mixture_eps_np(x: np.ndarray, ab: float, means, stds, weights) -> np.ndarray:
    """:func:`mixture_eps` in float64 numpy at any (continuous) ᾱ."""
    var = ab * stds**2 + 1 - ab                                     # (K,)
    diff = x[:, None, :] - np.sqrt(ab) * means[None]                # (B, K, d)
    logp = np.log(weights) - np.sum(diff**2, -1) / (2 * var) - np.log(var)
    r = np.exp(logp - logp.max(1, keepdims=True))
    r /= r.sum(1, keepdims=True)
    return np.sqrt(1 - ab) * np.sum(r[..., None] * diff / var[None, :, None], axis=1)


def reference_ode(x_start: np.ndarray, sched, t_from: int, t_to: int, mix, steps: int = 1000,
                  chunk: int = 10000) -> np.ndarray:
    """The probability-flow ODE's solution from ``x_start`` at model index ``t_from`` to
    ``t_to`` with the exact ε, float64 RK4 in u = log σ̄ (σ̄ = σ/α): with x̄ = x/α,
    dx̄/dσ̄ = ε(x, t) (Song et al., 2021, DDIM eq. 14), so dx̄/du = σ̄ ε(α x̄) with
    α = 1/√(1 + σ̄²), in ``steps`` equal steps (the same continuous ODE the samplers
    discretise: they evaluate ε only at grid indices, whose ᾱ are exact)."""
    ab = sched.alphas_cumprod
    u0, u1 = (0.5 * np.log((1 - ab[t]) / ab[t]) for t in (t_from, t_to))
    h = (u1 - u0) / steps

    def f(y, u):
        sb = np.exp(u)
        a = 1.0 / (1.0 + sb**2)
        return sb * mixture_eps_np(np.sqrt(a) * y, a, *mix)

    out = []
    for lo in range(0, len(x_start), chunk):
        y = np.asarray(x_start[lo:lo + chunk], np.float64) / np.sqrt(ab[t_from])
        for i in range(steps):
            u = u0 + i * h
            k1 = f(y, u)
            k2 = f(y + h / 2 * k1, u + h / 2)
            k3 = f(y + h / 2 * k2, u + h / 2)
            k4 = f(y + h * k3, u + h)
            y = y + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
        out.append(y * np.sqrt(ab[t_to]))
    return np.concatenate(out)


def ode_errors(x: np.ndarray, ref: np.ndarray) -> dict:
    """RMS and median over samples of the distance ‖x - x_ref‖ to the reference solution."""
    d = np.sqrt(np.sum((np.asarray(x, np.float64) - ref) ** 2, axis=1))
    return {"ode_rms": float(np.sqrt(np.mean(d**2))), "ode_median": float(np.median(d))}


def sliced_w2(x, y, rng, num_proj: int = 256) -> float:
    """Sliced Wasserstein-2 between equal-size samples (sorted 1-D projections)."""
    theta = rng.normal(size=(x.shape[1], num_proj))
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


def setup_analytic(n: int, schedule: str, prob: str = "bench", ref_steps: int = 1000):
    """The problem's schedule, exact ε, true samples, shared x_T, the float64 reference ODE
    solution from it, and the floor and reference rows."""
    sched = get_schedule(schedule, 1000)
    big_t = sched.num_timesteps
    mix, key_seed, rng_seed = problem(prob)
    dim = mix[0].shape[1]
    eps = mixture_eps(sched, *mix)
    rng = np.random.default_rng(rng_seed)
    ref = sample_mixture(*mix, n, rng)
    bw = float(np.median(np.sqrt(((ref[:500, None] - ref[None, :500]) ** 2).sum(-1))))
    rows = [{"sampler": "floor (true vs true)", "nfe": 0,
             **errors(sample_mixture(*mix, n, rng), ref, rng, bw)}]
    print(json.dumps(rows[0]), flush=True)
    x_t = np.asarray(jax.random.normal(jax.random.key(key_seed), (n, dim)))  # every sampler starts here
    t0 = time.perf_counter()
    x_ode = reference_ode(x_t, sched, big_t - 1, 0, mix, ref_steps)
    dt = time.perf_counter() - t0
    x_ode2 = reference_ode(x_t[:2000], sched, big_t - 1, 0, mix, 2 * ref_steps)
    self_err = ode_errors(x_ode[:2000], x_ode2)
    rows.append({"sampler": f"reference ODE (RK4, {ref_steps} steps)", "nfe": 4 * ref_steps,
                 "seconds": dt, "samples_per_sec": n / dt,
                 "ode_rms": self_err["ode_rms"], "ode_median": self_err["ode_median"],
                 "note": f"ode_* here: vs RK4 with {2 * ref_steps} steps (first 2000 samples)",
                 **errors(x_ode, ref, rng, bw)})
    print(json.dumps(rows[-1]), flush=True)
    return sched, eps, ref, rng, bw, x_t, x_ode, rows


def run_analytic(n: int, schedule: str, prob: str = "bench", ref_steps: int = 1000) -> list[dict]:
    sched, eps, ref, rng, bw, x_t, x_ode, rows = setup_analytic(n, schedule, prob, ref_steps)
    big_t = sched.num_timesteps
    for label, method, opts, per_step in SAMPLERS:
        for nfe in NFES:
            steps = nfe // per_step
            if method in MULTISTEP:
                steps = min(steps, big_t - 1)
            if method == "dpm_solver" and nfe > 100:
                continue  # the discrete grid has no room for 333 third-order steps
            fn = jax.jit(lambda key, method=method, steps=steps, opts=opts: samplers.sample(
                eps, sched, x_t.shape, key, method, steps, x_T=x_t, **opts))
            x, dt = timed(fn, jax.random.key(nfe))
            x = np.asarray(x, np.float64)
            row = {"sampler": label, "nfe": samplers.nfe(method, steps, **opts), "seconds": dt,
                   "samples_per_sec": n / dt,
                   **({} if method in STOCHASTIC else ode_errors(x, x_ode)), **errors(x, ref, rng, bw)}
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


def goal_summary(rows: list[dict]) -> str:
    """The issue's goal, read off the rows: the best UniPC ``ode_rms`` at 10 NFE against
    DPM-Solver++(2M) (the project's default spacing) at 20 NFE."""
    by = {(r["sampler"], r["nfe"]): r for r in rows}
    base = by[("dpm_solver++(2M)", 20)]["ode_rms"]
    uni = sorted((r["ode_rms"], r["sampler"]) for r in rows if r["sampler"].startswith("unipc")
                 and r["nfe"] == 10)
    met = [name for err, name in uni if err <= base]
    lines = [f"Goal: ode_rms at 10 NFE <= DPM-Solver++(2M) at 20 NFE = {base:.4g}. "
             + (f"Met by {len(met)} of the {len(uni)} UniPC settings ({', '.join(met)}); missed by the "
                "others." if met else f"Not met by any of the {len(uni)} UniPC settings.")]
    for err, name in uni:
        lines.append(f"- {name} at 10 NFE: {err:.4g} ({'meets' if err <= base else 'misses'} it, "
                     f"{err / base:.2f}x)")
    return "\n".join(lines) + "\n"


# -- (c) the few-step choice: a grid on the validation problem, one look at the bench ---------

FEWSTEP_NFE = 10
FEWSTEP_FILE = RESULTS / "diffusion_samplers_fewstep"
SCHEDULES = ("linear", "cosine")
# The goal's yardstick: the project's DPM-Solver++(2M) (its defaults: logSNR spacing,
# lower_order_final) at 20 NFE; at 10 NFE for context.
BASELINES = [("dpm_solver++(2M)", "dpm_solver++", {}, 20), ("dpm_solver++(2M)", "dpm_solver++", {}, 10)]


def fewstep_grid(budget: int = FEWSTEP_NFE) -> list[tuple[str, str, dict, int]]:
    """(label, sampler, options, steps): every deterministic registered sampler setting at
    the most steps whose NFE fit ``budget``: DDIM; singlestep DPM-Solver-2/3 (5 steps = 10
    NFE, 3 steps = 9 NFE); DPM-Solver++ 2M/3M x lower_order_final; UniPC order 1-3 x
    data/noise prediction x bh1/bh2 x corrector on/off (UniP alone) x lower_order_final
    (order >= 2; at order 1 it changes nothing); each in the three spacings (uniform in t,
    quadratic in t, uniform in logSNR). Left out: DDPM (stochastic: no ODE error) and
    ``denoise_to_zero`` (its extra x̂_0 step leaves index 0, where every sampler and the
    reference ODE end, so it would be scored for the ᾱ_0 < 1 offset, not for solver error)."""
    grid = []

    def add(method, **opts):
        steps = max(k for k in range(1, budget + 1) if samplers.nfe(method, k, **opts) <= budget)
        grid.append((f"{method} " + " ".join(f"{k}={v}" for k, v in opts.items()), method, opts, steps))

    for sp in samplers.SPACINGS:
        add("ddim", spacing=sp)
        for order in (2, 3):
            add("dpm_solver", order=order, spacing=sp)
        for order in (2, 3):
            for lof in (True, False):
                add("dpm_solver++", order=order, spacing=sp, lower_order_final=lof)
        for order in (1, 2, 3):
            for pred in ("data", "noise"):
                for var in ("bh1", "bh2"):
                    for cor in (True, False):
                        for lof in ((True, False) if order > 1 else (True,)):
                            add("unipc", order=order, prediction=pred, variant=var, corrector=cor,
                                spacing=sp, lower_order_final=lof)
    return grid


def _finite(v) -> float:
    return v if v is not None and np.isfinite(v) else float("inf")


def run_settings(settings, sched, eps, x_t, x_ode, ref, rng, bw, *, time_it: bool = False,
                 sq_dists: list | None = None) -> list[dict]:
    """One row per (label, sampler, options, steps): ODE error against ``x_ode`` and sliced W2;
    ``seconds`` is one timed call after compiling (``time_it``) or compile + run otherwise.
    ``sq_dists``, if given, receives each setting's per-sample ‖x - x_ref‖² (for a paired
    bootstrap)."""
    rows = []
    for label, method, opts, steps in settings:
        fn = jax.jit(lambda key, method=method, steps=steps, opts=opts: samplers.sample(
            eps, sched, x_t.shape, key, method, steps, x_T=x_t, **opts))
        t0 = time.perf_counter()
        if time_it:
            x, dt = timed(fn, jax.random.key(0))
        else:
            x = jax.block_until_ready(fn(jax.random.key(0)))
            dt = time.perf_counter() - t0
        x = np.asarray(x, np.float64)
        err = ode_errors(x, x_ode)
        if sq_dists is not None:
            sq_dists.append(np.sum((x - x_ode) ** 2, axis=1))
        ok = bool(np.all(np.isfinite(x)))
        row = {"sampler": label, "method": method, "options": opts, "steps": steps,
               "nfe": samplers.nfe(method, steps, **opts), "seconds": dt,
               "ode_rms": err["ode_rms"] if ok else None, "ode_median": err["ode_median"] if ok else None,
               "sw2": sliced_w2(x, ref, rng) if ok else None}
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def fewstep_validation(n: int, ref_steps: int = 1000) -> dict:
    """The grid on the validation problem, both schedules; the choices made from it alone."""
    out = {"problem": "val", "num": n, "grid_size": len(fewstep_grid()), "schedules": {}}
    for schedule in SCHEDULES:
        sched, eps, ref, rng, bw, x_t, x_ode, head = setup_analytic(n, schedule, "val", ref_steps)
        base = run_settings(BASELINES, sched, eps, x_t, x_ode, ref, rng, bw)
        grid = run_settings(fewstep_grid(), sched, eps, x_t, x_ode, ref, rng, bw)
        base20 = base[0]["ode_rms"]
        for r in grid:
            r["ratio_to_2m20"] = _finite(r["ode_rms"]) / base20
        best = min(grid, key=lambda r: _finite(r["ode_rms"]))
        out["schedules"][schedule] = {"head": head, "baselines": base, "grid": grid, "best": best,
                                      "meeting": sum(r["ratio_to_2m20"] <= 1.0 for r in grid)}
    # One setting for both schedules: the smallest worse-of-the-two ratio to the schedule's
    # own DPM-Solver++(2M) at 20 NFE.
    per = {s: {r["sampler"]: r["ratio_to_2m20"] for r in out["schedules"][s]["grid"]} for s in SCHEDULES}
    both = min(per[SCHEDULES[0]], key=lambda k: max(per[s][k] for s in SCHEDULES))
    pick = lambda r: {k: r[k] for k in ("sampler", "method", "options", "steps", "nfe")}  # noqa: E731
    out["choice"] = {**{s: pick(out["schedules"][s]["best"]) for s in SCHEDULES},
                     "both": pick(next(r for r in out["schedules"][SCHEDULES[0]]["grid"]
                                       if r["sampler"] == both))}
    return out


def ratio_interval(d2: np.ndarray, d2_base: np.ndarray, reps: int = 2000, seed: int = 0) -> list[float]:
    """95% paired-bootstrap interval (resampling samples, i.e. x_T draws) of
    rms(d2) / rms(d2_base), the two squared-distance arrays from the same x_T."""
    rng = np.random.default_rng(seed)
    n = len(d2)
    out = np.empty(reps)
    for i in range(reps):
        idx = rng.integers(0, n, n)
        out[i] = np.sqrt(np.mean(d2[idx]) / np.mean(d2_base[idx]))
    return [float(v) for v in np.quantile(out, [0.025, 0.975])]


def fewstep_bench(n: int, validation: dict, ref_steps: int = 1000) -> dict:
    """The validation choices evaluated once on the reported (bench) problem."""
    out = {"problem": "bench", "num": n, "schedules": {}}
    choice = validation["choice"]
    for schedule in SCHEDULES:
        sched, eps, ref, rng, bw, x_t, x_ode, head = setup_analytic(n, schedule, "bench", ref_steps)
        picks = {"chosen for " + schedule: choice[schedule]}
        if choice["both"]["sampler"] != choice[schedule]["sampler"]:
            picks["chosen for both"] = choice["both"]
        settings = [(c["sampler"], c["method"], c["options"], c["steps"]) for c in picks.values()]
        d2 = []
        base = run_settings(BASELINES, sched, eps, x_t, x_ode, ref, rng, bw, time_it=True, sq_dists=d2)
        rows = run_settings(settings, sched, eps, x_t, x_ode, ref, rng, bw, time_it=True, sq_dists=d2)
        for (role, _), r, d in zip(picks.items(), rows, d2[len(base):], strict=True):
            r["role"] = role
            r["ratio_to_2m20"] = _finite(r["ode_rms"]) / base[0]["ode_rms"]
            r["ratio_95ci"] = ratio_interval(d, d2[0]) if r["ode_rms"] is not None else None
            r["goal_met"] = r["ratio_to_2m20"] <= 1.0
        out["schedules"][schedule] = {"head": head, "baselines": base, "chosen": rows}
    return out


def fewstep_markdown(result: dict) -> str:
    val = result["validation"]
    lines = ["# Few-step sampler choice on a validation mixture, checked once on the benchmark", "",
             f"Goal (issue 18): ODE error (ode_rms) at {FEWSTEP_NFE} NFE no larger than the project's "
             "DPM-Solver++(2M) (logSNR spacing, lower_order_final) at 20 NFE. Choice made on the "
             "validation problem only (`python experiments/bench_samplers.py --part=fewstep "
             f"--problem=val --num={val['num']}`, {val['meta']['date']}, jax {val['meta']['jax']}): "
             "a Gaussian mixture of 9 components with means uniform in [-0.75, 0.75]^3, isotropic "
             "stds uniform in [0.05, 0.2], Dirichlet(3) weights (numpy seed 7), x_T from key 11; "
             f"{val['num']} samples, one x_T shared by every setting; ode_rms against the float64 "
             "RK4 solution (1000 steps in log σ̄) of the probability-flow ODE from the same x_T. "
             f"Grid: {val['grid_size']} settings per schedule (`fewstep_grid` in the script); "
             "seconds = compile + one call on a loaded, shared 2-core CPU (indicative only).", ""]
    for s in SCHEDULES:
        b, c = val["schedules"][s]["baselines"], val["choice"][s]
        lines += [f"Validation, {s}: DPM-Solver++(2M) at 20 NFE {b[0]['ode_rms']:.4g}, at 10 NFE "
                  f"{b[1]['ode_rms']:.4g}; best at {FEWSTEP_NFE} NFE: `{c['sampler']}` "
                  f"({val['schedules'][s]['best']['ode_rms']:.4g}, "
                  f"{val['schedules'][s]['best']['ratio_to_2m20']:.2f}x); "
                  f"{val['schedules'][s]['meeting']} of {val['grid_size']} settings meet it there."]
    cb = val["choice"]["both"]
    ratios = {s: next(r["ratio_to_2m20"] for r in val["schedules"][s]["grid"]
                      if r["sampler"] == cb["sampler"]) for s in SCHEDULES}
    lines += [f"Best single setting for both (smallest worse-of-two ratio): `{cb['sampler']}` "
              f"({', '.join(f'{s} {r:.2f}x' for s, r in ratios.items())}).",
              f"Validation run: {val['meta']['cpu_seconds']:.0f} CPU-s, {val['meta']['wall_seconds']:.0f} s "
              "wall (getrusage of the process; the machine shared with other jobs).", ""]
    if "test" in result:
        test = result["test"]
        lines += ["## The choices on the benchmark mixture (evaluated once)", "",
                  "`python experiments/bench_samplers.py --part=fewstep --problem=bench "
                  f"--num={test['num']}` "
                  f"({test['meta']['date']}): the 6-component 2-D mixture of `--part=analytic`, "
                  f"{test['num']} samples, the same x_T as there; seconds: one timed call after compiling; "
                  "95% interval: paired bootstrap over the samples (2000 resamplings) of the ratio; "
                  f"{test['meta']['cpu_seconds']:.0f} CPU-s, {test['meta']['wall_seconds']:.0f} s "
                  "wall.", "",
                  "| schedule | sampler | role | NFE | ode_rms | ratio to 2M@20 (95% interval) | goal met "
                  "| sw2 | seconds |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for s in SCHEDULES:
            for r in test["schedules"][s]["baselines"]:
                lines.append(f"| {s} | {r['sampler']} | baseline | {r['nfe']} | {r['ode_rms']:.4g} | "
                             f"{r['ode_rms'] / test['schedules'][s]['baselines'][0]['ode_rms']:.2f} |  | "
                             f"{r['sw2']:.4g} | {r['seconds']:.3g} |")
            for r in test["schedules"][s]["chosen"]:
                rms = "diverged" if r["ode_rms"] is None else f"{r['ode_rms']:.4g}"
                sw2 = "" if r["sw2"] is None else f"{r['sw2']:.4g}"
                ci = "" if not r.get("ratio_95ci") else " ({:.2f}-{:.2f})".format(*r["ratio_95ci"])
                lines.append(f"| {s} | {r['sampler']} | {r['role']} | {r['nfe']} | {rms} | "
                             f"{r['ratio_to_2m20']:.2f}{ci} | {'yes' if r['goal_met'] else 'no'} | {sw2} | "
                             f"{r['seconds']:.3g} |")
        lines += ["", "Conclusion, read off the rows above:"]
        for s in SCHEDULES:
            for r in test["schedules"][s]["chosen"]:
                ci = "" if not r.get("ratio_95ci") else ", 95% interval {:.2f}-{:.2f}".format(
                    *r["ratio_95ci"])
                lines.append(f"- {s}, {r['role']} (`{r['sampler']}`): {r['ratio_to_2m20']:.2f}x "
                             f"DPM-Solver++(2M) at 20 NFE{ci}: goal {'met' if r['goal_met'] else 'missed'}.")
        lines.append("")
    lines += ["Notes: the validation mixture was fixed once, before any grid run, and not changed after; "
              "DDPM (stochastic) and `denoise_to_zero` are not in the grid (see `fewstep_grid`); "
              "dpm_solver order 3 fits 3 steps = 9 NFE. `diverged` marks non-finite output.", ""]
    for s in SCHEDULES:
        v = val["schedules"][s]
        ref = v["head"][1]
        lines += [f"## Validation grid, {s} schedule ({len(v['grid'])} settings, sorted by ode_rms)", "",
                  f"Reference ODE: {ref['seconds']:.0f} s; its own error (vs 2000 RK4 steps, first 2000 "
                  f"samples) {ref['ode_rms']:.2g}.", "",
                  "| setting | steps | NFE | ode_rms | ode_median | sw2 | ratio to 2M@20 | seconds |",
                  "|---|---|---|---|---|---|---|---|"]
        for r in v["baselines"] + sorted(v["grid"], key=lambda r: _finite(r["ode_rms"])):
            ode_rms, ode_median, sw2 = ("diverged" if r[k] is None else f"{r[k]:.4g}"
                                        for k in ("ode_rms", "ode_median", "sw2"))
            ratio = r.get("ratio_to_2m20", _finite(r["ode_rms"]) / v["baselines"][0]["ode_rms"])
            lines.append(f"| {r['sampler']} | {r['steps']} | {r['nfe']} | {ode_rms} | "
                         f"{ode_median} | {sw2} | {ratio:.3g} | {r['seconds']:.3g} |")
        lines.append("")
    return "\n".join(lines)


def run_fewstep(prob: str, n: int, meta: dict) -> None:
    """``--part=fewstep``: ``val`` runs the grid and records the choices; ``bench`` evaluates
    the recorded choices once (it needs the validation run's JSON)."""
    path = FEWSTEP_FILE.with_suffix(".json")
    t0 = time.perf_counter()

    def cost() -> dict:
        ru = resource.getrusage(resource.RUSAGE_SELF)
        return {"cpu_seconds": ru.ru_utime + ru.ru_stime, "wall_seconds": time.perf_counter() - t0}

    if prob == "val":
        result = {"validation": {**fewstep_validation(n or 10000), "meta": meta}}
        result["validation"]["meta"].update(cost())
    elif prob == "bench":
        if not path.exists() or "validation" not in json.loads(path.read_text()):
            raise ConfigError(f"--part=fewstep --problem=bench needs the validation choices in {path}; "
                              "run --part=fewstep --problem=val first")
        result = json.loads(path.read_text())
        result["test"] = {**fewstep_bench(n or 40000, result["validation"]), "meta": {**meta}}
        result["test"]["meta"].update(cost())
    else:
        problem(prob)  # ConfigError naming the valid problems
        return
    path.write_text(json.dumps(result, indent=1))
    FEWSTEP_FILE.with_suffix(".md").write_text(fewstep_markdown(result))
    print(fewstep_markdown(result))


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
            steps = min(nfe // per_step, 999) if name in MULTISTEP else nfe // per_step
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
    p.add_argument("--part", choices=("analytic", "digits", "fewstep"), default="analytic")
    p.add_argument("--problem", default="bench",
                   help="analytic / fewstep mixture: bench (the reported one) or val (validation)")
    p.add_argument("--num", type=int, default=0, help="samples (default 40000 analytic, 360 digits)")
    p.add_argument("--schedule", default="linear")
    p.add_argument("--workdir", default="runs/ddpm_digits")
    p.add_argument("--nfes", default="10,20,50,100,1000", help="digits part: NFE budgets")
    args = p.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    meta = {"devices": [str(d) for d in jax.devices()], "jax": jax.__version__,
            "date": time.strftime("%Y-%m-%d")}
    try:  # a bad --problem, or the bench stage before the validation one: one line, no traceback
        problem(args.problem)
        if args.part == "fewstep":
            return run_fewstep(args.problem, args.num, meta)
    except ConfigError as e:
        raise SystemExit(f"ConfigError: {e}") from None
    if args.part == "analytic":
        rows = run_analytic(args.num or 40000, args.schedule, args.problem)
        cols = ["sampler", "nfe", "seconds", "samples_per_sec", "ode_rms", "ode_median", "sw2", "mmd2",
                "mean_err", "cov_err"]
    else:
        rows = run_digits(args.workdir, args.num or 360, tuple(int(v) for v in args.nfes.split(",")))
        cols = ["sampler", "nfe", "seconds", "samples_per_sec", "digits_fd", "classifier_score",
                "class_share_tv"]
    write(rows, vars(args), meta, cols)


def write(rows: list[dict], args: dict, meta: dict, cols: list[str]) -> None:
    """Writes diffusion_samplers_<part>[_<schedule>].{json,md} (the analytic part's Markdown
    with its command, the goal read off the rows, then the table)."""
    out = RESULTS / f"diffusion_samplers_{args['part']}"
    if args["part"] == "analytic" and args["problem"] != "bench":
        out = Path(f"{out}_{args['problem']}")
    if args["part"] == "analytic" and args["schedule"] != "linear":
        out = Path(f"{out}_{args['schedule']}")
    result = {"meta": meta, "args": args, "rows": rows}
    table = to_markdown(rows, cols)
    if args["part"] == "analytic":
        result["goal"] = goal_summary(rows)
        cmd = "python experiments/bench_samplers.py --part=analytic" + (
            f" --problem={args['problem']}" if args["problem"] != "bench" else "") + (
            f" --schedule={args['schedule']}" if args["schedule"] != "linear" else "") + (
            f" --num={args['num']}" if args["num"] else "")
        table = (f"# Samplers on the exact-ε Gaussian mixture ({args['schedule']} schedule, T = 1000)\n\n"
                 f"`{cmd}` ({meta['date']}, {args['num'] or 40000} samples, one x_T shared by every "
                 f"sampler, jax {meta['jax']}, {', '.join(meta['devices'])}). ode_rms / ode_median: distance "
                 "of each output to the exact ODE solution from the same x_T (float64 RK4, see the "
                 "script's docstring); sw2 / mmd2 / mean_err / cov_err: against fresh true samples "
                 "(floor row: sampling noise alone); seconds / samples_per_sec: one timed call on a "
                 "shared, loaded 2-core CPU (indicative only).\n\n" + result["goal"] + "\n" + table)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2))
    out.with_suffix(".md").write_text(table)
    print(table)

if __name__ == "__main__":
    main()
