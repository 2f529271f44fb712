"""Normalizing flows on 8x8 digits at an equal parameter budget: test bits/dim.

    python experiments/flows_digits.py [--steps 1000] [--budget 30000]

Trains NICE, RealNVP, Glow and Flow++ (uniform and variational dequantization)
from their configs (configs/<arch>_digits.py), each with the conditioner width
``model.hidden`` chosen so that its total parameter count (the dequantizer's
included) is the closest to ``--budget``; same steps, batch, optimizer and
schedule for all. Every model trains through the runtime
(gen_jax.train.train_and_evaluate: the CLI's batches and keys) in its own
workdir under --workdir (a rerun reuses finished runs) and is loaded back from
it. Then reports bits/dim on the digits test split (17-level
data; the uniform model is log2(17) = 4.09), next to the classical Gaussian and
GMM baselines (configs/gaussian_digits.py, configs/gmm_digits.py, fitted by the
runtime with the configs' own settings). Uniformly
dequantized models are evaluated on the test split with its fixed dequantization
noise (a one-sample estimate of the bound); the variational model reports its
bound with K = 1 and the importance-weighted bound with K = 16.

Writes experiments/results/flows_digits.{md,json} and
experiments/results/flows_digits_samples.png.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import jax
import numpy as np
import runner

from gen_jax import data as data_lib
from gen_jax import registry, viz

REPO = runner.REPO

RUNS = (
    ("NICE", "nice", "nice_digits.py", {}),
    ("RealNVP", "realnvp", "realnvp_digits.py", {}),
    ("Glow", "glow", "glow_digits.py", {}),
    ("Flow++, uniform dequantization", "flowpp", "flowpp_digits.py",
     {"model.dequantize": "uniform", "data.dequantize": "uniform"}),
    ("Flow++, variational dequantization", "flowpp", "flowpp_digits.py", {}),
)


def count_params(config) -> int:
    """Parameter count of the Method built from ``config`` (shapes only, nothing runs)."""
    method = registry.build(config)
    x, _ = data_lib.load_split(config, "val")
    shapes = jax.eval_shape(method.init, jax.random.key(0), {"x": x[:8]})
    return int(sum(math.prod(s.shape) for s in jax.tree.leaves(shapes.params)))


def match_budget(file: str, overrides: dict, budget: int) -> tuple[int, int]:
    """The ``model.hidden`` (a multiple of 4, for 4 attention heads) whose parameter
    count is closest to ``budget``."""
    def count(h):
        return count_params(runner.config(file, overrides, {"model.hidden": h}))

    lo, hi = 1, 64  # hidden = 4 * index: counts grow with the width
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if count(4 * mid) <= budget else (lo, mid)
    best = min((4 * lo, 4 * hi), key=lambda h: abs(count(h) - budget))
    return best, count(best)


def test_log_prob(method, state, config, num_samples: int = 1) -> np.ndarray:
    x, _ = data_lib.load_split(config, "test")
    fn = jax.jit(lambda s, xb, r: method.log_prob(s, xb, r, num_samples=num_samples))
    out = [np.asarray(fn(state, x[i:i + 180], jax.random.key(1000 + i))) for i in range(0, len(x), 180)]
    return np.concatenate(out)


def final_train_loss(workdir: Path) -> float:
    """The last logged training loss of a run (the runtime logs the mean over each
    ``train.log_every`` steps)."""
    records = [json.loads(line) for line in open(workdir / "metrics.jsonl")]
    return [r for r in records if r["split"] == "train"][-1]["loss"]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--budget", type=int, default=30000)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--out", default=str(REPO / "experiments" / "results" / "flows_digits"))
    runner.add_workdir_flag(parser, "flows_digits")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    def bpd(log_prob: np.ndarray) -> float:  # nats per example -> bits/dim of 8x8 digits
        return float(data_lib.bits_per_dim(-log_prob.mean(), 64))

    rows, grids = [], []
    common = {"train.num_steps": args.steps, "data.batch_size": args.batch, "optim.learning_rate": 2e-3,
              "train.eval_every": 0, "train.checkpoint_every": args.steps}
    for label, arch, cfg_name, extra in RUNS:
        hidden, n_params = match_budget(cfg_name, {**common, **extra}, args.budget)
        config = runner.config(cfg_name, common, extra, {"model.hidden": hidden})
        workdir = runner.run_dir(args.workdir, label, f"hidden{hidden}", f"{args.steps}steps",
                                 f"batch{args.batch}")
        method, state, config, timing = runner.train_and_load(config, workdir)
        seconds = timing["seconds"]
        row = {"model": label, "method": arch, "config": cfg_name, "overrides": extra, "hidden": hidden,
               "params": n_params, "train_seconds": round(seconds, 1),
               "final_train_bpd": final_train_loss(workdir),
               "test_bpd": bpd(test_log_prob(method, state, config))}
        if method.variational:
            row["test_bpd_iw16"] = bpd(test_log_prob(method, state, config, 16))
        rows.append(row)
        grids.append(np.asarray(method.sample(state, jax.random.key(7), 16, temperature=0.8)))
        print(json.dumps(row), flush=True)
    baselines = (("Gaussian (full covariance)", "gaussian_digits.py"), ("GMM (60 diag.)", "gmm_digits.py"))
    for label, cfg_name in baselines:
        config = runner.config(cfg_name)
        workdir = runner.run_dir(args.workdir, label)
        method, state, config, _ = runner.train_and_load(config, workdir)
        x_test, _ = data_lib.load_split(config, "test")
        lp = np.asarray(jax.jit(method.log_prob)(state, x_test, jax.random.key(0)))
        rows.append({"model": label, "method": config.method, "config": cfg_name,
                     "params": int(sum(np.size(p) for p in jax.tree.leaves(state.params))),
                     "test_bpd": bpd(lp)})
        print(json.dumps(rows[-1]), flush=True)
    rows.append({"model": "uniform over 17 levels", "method": "-", "params": 0, "test_bpd": math.log2(17)})

    viz.save_image_grid(out.parent / (out.name + "_samples.png"), np.concatenate(grids), nrow=16,
                        value_range=(0.0, 1.0))
    (out.parent / (out.name + ".json")).write_text(json.dumps(
        {"steps": args.steps, "budget": args.budget, "batch": args.batch, "rows": rows}, indent=2))
    lines = [f"Digits test split (360 images), bits/dim of 17-level data; flows trained {args.steps} "
             f"steps, batch {args.batch}, parameter budget ~{args.budget}.", "",
             "| model | params | hidden | test bits/dim | train s |", "|---|---:|---:|---:|---:|"]
    for r in rows:
        bpd = f"{r['test_bpd']:.3f}"
        if "test_bpd_iw16" in r:
            bpd += f" (K=16: {r['test_bpd_iw16']:.3f})"
        lines.append(f"| {r['model']} | {r['params']} | {r.get('hidden', '-')} | {bpd} | "
                     f"{r.get('train_seconds', '-')} |")
    lines += ["", "Command: `python experiments/flows_digits.py "
              f"--steps {args.steps} --budget {args.budget} --batch {args.batch}`",
              "Samples (temperature 0.8, one row per flow in table order): flows_digits_samples.png"]
    (out.parent / (out.name + ".md")).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
