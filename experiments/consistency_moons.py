"""Consistency distillation on the moons against its EDM teacher.

From one noise draw z (x_T = T z, shared by every deterministic row), measures the
consistency model's one-step samples f(x_T, T) and its two-step samples (several
intermediate τ), and the teacher's probability-flow ODE solved by EDM's Heun sampler on
the distillation grid (model.num_scales = 18 steps, 35 NFE: what is distilled), finer
(100 steps, 199 NFE: the "ODE endpoint"), and at the consistency model's NFE (Euler 1
and 2 steps, Heun 2 steps, on the ρ-schedule or through σ = τ: 1 to 3 NFE):

- ``ode_rms``: √(mean ‖x - x_ODE‖²), the distance of each sample to the teacher's ODE
  endpoint from the same x_T, and ``rms_vs_teacher_heun`` the same to the teacher's Heun
  steps on the distillation grid (deterministic rows only; a two-step sampler adds noise);
- against the test split (the project's 2-D metrics, gen_jax.metrics.toy2d_metrics):
  RBF MMD² (median bandwidth of the test split) and energy distance, plus sliced W2
  (256 projections);
- against the teacher's ODE samples (Heun, 100 steps): energy distance and sliced W2.

Usage (after training both runs):
  python experiments/consistency_moons.py \
      --teacher=runs/edm_moons --student=runs/consistency_moons --num=5000
Writes experiments/results/consistency/results.json and samples.png.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import runner  # noqa: F401  (puts the repository on sys.path)

from gen_jax.checkpoint import load_trained
from gen_jax.data import load_split
from gen_jax.diffusion import edm
from gen_jax.metrics import toy2d_metrics
from gen_jax.metrics.kernel import energy_distance

HERE = Path(__file__).resolve().parent / "results" / "consistency"
HEUN_CONFIG = "teacher Heun on the distillation grid"


def sliced_w2(x: np.ndarray, y: np.ndarray, seed: int = 0, num_proj: int = 256) -> float:
    """Sliced Wasserstein-2 between two 2-D samples (sorted projections; the larger
    sample subsampled to the smaller's size)."""
    rng = np.random.default_rng(seed)
    n = min(len(x), len(y))
    x, y = x[rng.permutation(len(x))[:n]], y[rng.permutation(len(y))[:n]]
    theta = rng.normal(size=(2, num_proj))
    theta /= np.linalg.norm(theta, axis=0)
    return float(np.sqrt(np.mean((np.sort(x @ theta, 0) - np.sort(y @ theta, 0)) ** 2)))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--teacher", default="runs/edm_moons")
    p.add_argument("--student", default="runs/consistency_moons")
    p.add_argument("--num", type=int, default=5000)
    p.add_argument("--taus", default="0.25,0.5,1.0,2.52", help="two-step intermediate τ values")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()

    t_method, t_state, t_config = load_trained(args.teacher)
    c_method, c_state, c_config = load_trained(args.student)
    ref, _ = load_split(c_config, "test")
    ref = np.asarray(ref, np.float64)
    m = c_config.model
    sigma_max, sigma_min, rho = float(m.sigma_max), float(m.sigma_min), float(m.rho)
    k_z, k_two = jax.random.split(jax.random.key(args.seed))
    x_t = sigma_max * jax.random.normal(k_z, (args.num, *c_method.info.shape))
    denoise = t_method.denoise_fn(t_state.eval_params)

    def teacher(n_steps: int, heun: bool, sig: np.ndarray | None = None):
        """EDM's sampler from x_t on the ρ-schedule of ``n_steps`` (or the grid ``sig``)."""
        sig = edm.sigma_steps(n_steps, sigma_min, sigma_max, rho) if sig is None else sig
        fn = jax.jit(lambda x: edm.edm_sample(denoise, x.shape, jax.random.key(0), sig, heun=heun, x_init=x))
        return fn(x_t), (2 * n_steps - 1 if heun else n_steps)

    rows, samples = [], {}

    def add(label: str, x, nfe: int, deterministic: bool, seconds: float | None = None):
        x = np.asarray(x, np.float64)
        samples[label] = x
        tm = toy2d_metrics(x, ref, "moons")
        row = {"sampler": label, "nfe": nfe, "mmd_rbf": tm["mmd_rbf"],
               "energy_distance": tm["energy_distance"], "sw2": sliced_w2(x, ref)}
        if HEUN_CONFIG in samples:
            ode = samples["teacher ODE (Heun, 100 steps)"]
            row["energy_vs_teacher_ode"] = energy_distance(ode, x)
            row["sw2_vs_teacher_ode"] = sliced_w2(x, ode)
            if deterministic:
                row["ode_rms"] = float(np.sqrt(np.mean(np.sum((x - ode) ** 2, axis=1))))
                heun = samples[HEUN_CONFIG]  # what distillation copies: the Heun steps on its grid
                row["rms_vs_teacher_heun"] = float(np.sqrt(np.mean(np.sum((x - heun) ** 2, axis=1))))
        if seconds is not None:
            row["seconds"] = seconds
        rows.append(row)
        print(json.dumps(row), flush=True)

    x, nfe = teacher(100, True)
    add("teacher ODE (Heun, 100 steps)", x, nfe, True)
    x, nfe = teacher(int(m.num_scales), True)
    samples[HEUN_CONFIG] = np.asarray(x, np.float64)
    add(f"teacher Heun, {m.num_scales} steps (the distillation grid)", x, nfe, True)
    for n_steps, heun in ((1, False), (2, False), (2, True)):
        x, nfe = teacher(n_steps, heun)
        add(f"teacher {'Heun' if heun else 'Euler'}, {n_steps} step{'s' * (n_steps > 1)}", x, nfe, True)
    taus = [float(v) for v in args.taus.split(",")]
    for tau in taus:  # two steps through an intermediate σ = τ instead of the ρ-schedule's σ_min
        for heun in (False, True):
            x, nfe = teacher(2, heun, np.array([sigma_max, tau, 0.0]))
            add(f"teacher {'Heun' if heun else 'Euler'}, 2 steps (80 -> {tau:g} -> 0)", x, nfe, True)

    one = jax.jit(lambda s, x: c_method.consistency_fn(s.eval_params, x, jnp.full((x.shape[0],), sigma_max)))
    one(c_state, x_t)
    t0 = time.perf_counter()
    x = jax.block_until_ready(one(c_state, x_t))
    add("consistency, 1 step", x, 1, True, time.perf_counter() - t0)
    for tau in taus:
        two = jax.jit(lambda s, k, tau=tau: c_method.sample(s, k, args.num, num_steps=2, sigmas=(tau,)))
        add(f"consistency, 2 steps (tau={tau:g})", two(c_state, k_two), 2, False)
    rng = np.random.default_rng(args.seed)
    train, _ = load_split(c_config, "train")
    add("floor: train split vs test split", np.asarray(train)[rng.permutation(len(train))[:args.num]], 0,
        False)

    out = {"command": "python experiments/consistency_moons.py "
                      f"--teacher={args.teacher} --student={args.student} --num={args.num} "
                      f"--taus={args.taus}",
           "date": time.strftime("%Y-%m-%d"), "num_samples": args.num, "num_test": len(ref),
           "teacher_step": int(t_state.step), "student_step": int(c_state.step), "rows": rows}
    (HERE / "results.json").write_text(json.dumps(out, indent=2))

    from matplotlib.figure import Figure

    show = ["teacher ODE (Heun, 100 steps)", "teacher Euler, 1 step",
            "teacher Euler, 2 steps (80 -> 0.5 -> 0)", "consistency, 1 step",
            "consistency, 2 steps (tau=0.5)", "floor: train split vs test split"]
    show = [s for s in show if s in samples]
    pad = 0.15 * (ref.max(0) - ref.min(0))
    lo, hi = ref.min(0) - pad, ref.max(0) + pad
    fig = Figure(figsize=(3.2 * len(show), 3.4))
    for i, label in enumerate(show):
        ax = fig.add_subplot(1, len(show), i + 1)
        ax.scatter(ref[:, 0], ref[:, 1], s=1, c="0.75")
        ax.scatter(samples[label][:, 0], samples[label][:, 1], s=1, c="tab:blue")
        ax.set_xlim(lo[0], hi[0])
        ax.set_ylim(lo[1], hi[1])
        ax.set_title(label.replace("floor: ", "").replace(" (", "\n("), fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(HERE / "samples.png", dpi=110)


if __name__ == "__main__":
    main()
