"""Every GAN objective on the ring8 and grid25 mixtures with MLP G and D (the VEEGAN /
PacGAN mode-collapse benchmark); writes a table and scatter plots.

    python experiments/gan_toy2d.py                  # all runs -> experiments/results/gan_toy2d.{md,json,png}
    python experiments/gan_toy2d.py --runs best --datasets ring8 --steps 2000   # one quick run

Each run trains configs/gan_toy2d.py with the run's overrides (the "best" run uses
it unchanged) through the runtime (gen_jax.train.train_and_evaluate: the CLI's
batches and keys), in its own workdir under --workdir (a finished run is reused on
a rerun), then loads it back, draws 2,500 samples from the (EMA) generator and
scores them with gen_jax.metrics.modes.mode_coverage (modes with a sample within
3 std, share of such high-quality samples, reverse KL over modes).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import jax
import numpy as np
import runner

from gen_jax.data.toy2d import toy2d_mode_std, toy2d_modes
from gen_jax.metrics.modes import mode_coverage

REPO = runner.REPO

# One run per objective on a plain recipe (no packing, no EMA, constant learning rate,
# batch 64 per D step, 10k steps: the papers' baselines), each with its paper's
# optimizer; then our best recipe, configs/gan_toy2d.py unchanged.
_PLAIN = {"model.pack": 1, "train.ema_decay": 0.0, "data.batch_size": 64, "train.num_steps": 10000,
          "optim.schedule": "constant", "d_optim.schedule": "constant"}
_ADAM = {"optim.learning_rate": 1e-4, "optim.b1": 0.5, "optim.b2": 0.999,
         "d_optim.learning_rate": 1e-4, "d_optim.b1": 0.5, "d_optim.b2": 0.999}
RUNS = {
    "minimax": {**_PLAIN, **_ADAM, "gan.objective": "minimax"},
    "nonsaturating": {**_PLAIN, **_ADAM, "gan.objective": "nonsaturating"},
    "lsgan": {**_PLAIN, **_ADAM, "gan.objective": "lsgan"},
    "wgan": {**_PLAIN, "gan.objective": "wgan", "gan.d_steps": 5, "data.batch_size": 320,
             "optim.name": "rmsprop", "optim.learning_rate": 5e-5,
             "d_optim.name": "rmsprop", "d_optim.learning_rate": 5e-5},
    "wgan_gp": {**_PLAIN, "gan.objective": "wgan_gp", "gan.d_steps": 5, "data.batch_size": 320,
                "optim.learning_rate": 1e-4, "optim.b1": 0.5, "optim.b2": 0.9,
                "d_optim.learning_rate": 1e-4, "d_optim.b1": 0.5, "d_optim.b2": 0.9},
    "hinge_sn": {**_PLAIN, **_ADAM, "gan.objective": "hinge", "model.spectral_norm": True},
    "best": {},
}


# Periodic validation and figures are not part of this experiment (keys and batches
# do not depend on them); the runtime still evaluates and plots once at the end.
_QUIET = {"train.eval_every": 0}


def train_run(config, workdir: Path):
    """Trains ``config`` with the runtime in ``workdir`` (or reuses the finished run);
    returns (method, state, seconds)."""
    method, state, _, timing = runner.train_and_load(config, workdir)
    return method, state, timing["seconds"]


def evaluate_run(method, state, name: str, seed: int = 1, num: int = 2500):
    samples = np.asarray(method.sample(state, jax.random.key(seed), num))
    cov = mode_coverage(samples, toy2d_modes(name), toy2d_mode_std(name))
    return samples, cov


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", default=",".join(RUNS))
    p.add_argument("--datasets", default="ring8,grid25")
    p.add_argument("--steps", type=int, default=0, help="0 = the config's train.num_steps")
    p.add_argument("--out", default=str(REPO / "experiments" / "results" / "gan_toy2d"))
    p.add_argument("--set", action="append", default=[], help="extra override key=value (json value)")
    p.add_argument("--table-only", action="store_true", help="rewrite the .md table from the .json")
    p.add_argument("--smoke", action="store_true",
                   help="configs/gan_toy2d.py:smoke (tiny networks, batch 16): an end-to-end check")
    runner.add_workdir_flag(p, "gan_toy2d")
    args = p.parse_args(argv)
    out = Path(args.out)
    if args.table_only:
        write_table(json.loads(out.with_suffix(".json").read_text()), out.with_suffix(".md"))
        return
    extra = {kv.split("=", 1)[0]: json.loads(kv.split("=", 1)[1]) for kv in args.set}
    budget = {"train.num_steps": args.steps} if args.steps else {}
    # run directories are named by everything that changes the training
    tags = ["smoke"] * args.smoke + [f"{k}={v}" for k, v in sorted(extra.items())]
    runs, datasets = args.runs.split(","), args.datasets.split(",")
    results, samples = [], {}
    for name in datasets:
        for run in runs:
            config = runner.config("gan_toy2d.py" + (":smoke" if args.smoke else ""), {"data.name": name},
                                   RUNS[run], _QUIET, extra, budget)
            steps = config.train.num_steps
            workdir = runner.run_dir(args.workdir, name, run, f"{steps}steps", *tags)
            method, state, secs = train_run(config, workdir)
            s, cov = evaluate_run(method, state, name)
            samples[(name, run)] = s
            row = {"dataset": name, "run": run, "steps": steps, "seconds": round(secs, 1),
                   "modes": cov["modes"], "num_modes": cov["num_modes"],
                   "high_quality": round(100 * cov["high_quality"], 1),
                   "reverse_kl": round(cov["reverse_kl"], 4)}
            results.append(row)
            print(json.dumps(row), flush=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(results, indent=1))
    write_table(results, out.with_suffix(".md"))
    _plot(samples, runs, datasets, out.with_suffix(".png"))


def write_table(results: list[dict], path: Path) -> None:
    """The markdown table of the runs, with what the numbers mean."""
    lines = ["# GANs on the toy mixtures (ring8: 8 Gaussians, radius 1, std 0.01; grid25: 5x5, std 0.05)",
             "", "Written by `python experiments/gan_toy2d.py`. 2,500 samples of each trained generator;",
             "modes = modes with at least one sample within 3 std, high-quality = share of samples",
             "within 3 std of their nearest mode, reverse KL = KL(high-quality mode histogram ||",
             "uniform) in nats (VEEGAN / PacGAN definitions, gen_jax.metrics.modes). Baselines:",
             "each objective with its paper's optimizer, no packing, no EMA, batch 64 per D step.",
             "best = configs/gan_toy2d.py: non-saturating loss, PacGAN2, batch 1024, Adam(1e-3,",
             "b1=0.5) with cosine decay, G EMA 0.999. Seconds are wall-clock on a shared 2-core CPU.",
             "", "| data | run | steps | modes | high-quality % | reverse KL | seconds |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['dataset']} | {r['run']} | {r['steps']} | {r['modes']}/{r['num_modes']} | "
              f"{r['high_quality']} | {r['reverse_kl']} | {r['seconds']} |" for r in results]
    path.write_text("\n".join(lines) + "\n")


def _plot(samples: dict, runs: list, datasets: list, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(datasets), len(runs), figsize=(2.4 * len(runs), 2.4 * len(datasets)),
                             squeeze=False)
    for i, name in enumerate(datasets):
        modes = toy2d_modes(name)
        lim = 1.5 if name == "ring8" else 5.0
        for j, run in enumerate(runs):
            ax = axes[i, j]
            s = samples[(name, run)]
            ax.scatter(s[:, 0], s[:, 1], s=1, alpha=0.3, c="k")
            ax.scatter(modes[:, 0], modes[:, 1], s=12, c="r", marker="x")
            ax.set_xlim(-lim, lim)
            ax.set_ylim(-lim, lim)
            ax.set_aspect("equal")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"{name} {run}", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
