"""EDM and flow matching against DDPM on 8x8 digits at equal training steps:
sample quality against network evaluations (NFE).

    python experiments/edm_fm_digits.py [--steps 600] [--num 360]

Trains configs/ddpm_digits.py (ε-prediction, L_simple, linear T = 1000),
configs/edm_digits.py (EDM preconditioning and loss) and
configs/flow_matching_digits.py (rectified flow, velocity prediction) with the
same UNet, batch, optimizer, learning-rate schedule and number of steps, each
through the runtime (gen_jax.train.train_and_evaluate: the CLI's batches and
keys) in its own workdir under --workdir (a rerun reuses finished runs). Then
draws ``--num`` samples with each sampler at several step counts and reports the
digits metrics of gen_jax.metrics.digits_metrics (Fréchet distance and KID in the
features of the offline digits CNN, precision/recall, classifier score, class-share
TV) against the training split, the NFE per sample and the sampling time (one
compiled call, timed after a compiling call with another key). The "test split"
row measures real held-out digits the same way: the floor at this n.

The flow-matching model trains on uniformly dequantized pixels (so its log_prob
bounds the discrete likelihood); its samples are mapped back to levels by the
metrics (gen_jax.metrics.to_unit_interval), as the real data are.

Writes experiments/results/edm_fm_digits.{json,md} and edm_fm_digits_samples.png.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import jax
import numpy as np
import runner

from gen_jax import viz
from gen_jax.diffusion import samplers
from gen_jax.metrics import digits_metrics, to_unit_interval
from gen_jax.metrics.digits_features import digits_split01

REPO = runner.REPO

# (label, config, [(sampler label, method, num_steps, options), ...])
RUNS = (
    ("DDPM", "ddpm_digits.py", [
        ("DDIM", "ddim", 10, {}), ("DDIM", "ddim", 20, {}),
        ("DPM-Solver++(2M)", "dpm_solver++", 10, {}), ("DPM-Solver++(2M)", "dpm_solver++", 20, {})]),
    ("EDM", "edm_digits.py", [
        ("Heun", "heun", 6, {}), ("Heun", "heun", 10, {}), ("Heun", "heun", 18, {}),
        ("Euler", "euler", 18, {}), ("stochastic, S_churn=10", "stochastic", 18, {"s_churn": 10.0})]),
    ("flow matching", "flow_matching_digits.py", [
        ("Euler", "euler", 10, {}), ("Euler", "euler", 20, {}),
        ("Heun", "heun", 5, {}), ("Heun", "heun", 10, {}), ("Heun", "heun", 20, {}),
        ("RK45 (rtol=atol=1e-3)", "rk45", 1, {"rtol": 1e-3, "atol": 1e-3})]),
)
METRICS = ("digits_fd", "kid", "precision", "recall", "classifier_score", "class_share_tv")


def make_sampler(method, n: int, name: str, steps: int, opts: dict):
    """One compiled ``(state, key) -> (samples, NFE per sample)`` of a sampler."""
    if hasattr(method, "sample_and_nfe"):  # edm, flow_matching
        return jax.jit(lambda s, k: method.sample_and_nfe(s, k, n, method=name, num_steps=steps, **opts))
    nfe = samplers.nfe(name, steps, **opts)
    return jax.jit(lambda s, k: (method.sample(s, k, n, method=name, num_steps=steps, **opts), nfe))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--num", type=int, default=360, help="samples per row (the test split has 360)")
    parser.add_argument("--out", default=str(REPO / "experiments" / "results" / "edm_fm_digits"))
    runner.add_workdir_flag(parser, "edm_fm_digits")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    ref01, _ = digits_split01("train")
    ref01 = ref01[..., None] if ref01.ndim == 3 else ref01
    common = {"train.num_steps": args.steps, "train.checkpoint_every": args.steps, "train.eval_every": 0,
              "optim.warmup_steps": min(200, args.steps // 4)}
    rows, grids = [], []
    for label, cfg_name, sampler_rows in RUNS:
        config = runner.config(cfg_name, common)
        workdir = runner.run_dir(args.workdir, label, f"{args.steps}steps")
        method, state, config, timing = runner.train_and_load(config, workdir)
        for s_label, name, steps, opts in sampler_rows:
            fn = make_sampler(method, args.num, name, steps, opts)
            jax.block_until_ready(fn(state, jax.random.key(1)))  # compile
            t0 = time.perf_counter()
            x, nfe = jax.block_until_ready(fn(state, jax.random.key(2)))
            seconds = time.perf_counter() - t0
            x, nfe = np.asarray(x), int(nfe)
            m = digits_metrics(to_unit_interval(x, config.data, 17), ref01)
            row = {"model": label, "sampler": s_label, "num_steps": steps, "nfe": nfe,
                   "sample_seconds": round(seconds, 3), "train_seconds": round(timing["seconds"], 1),
                   "num_samples": args.num, **{k: m[k] for k in METRICS}}
            rows.append(row)
            print(json.dumps(row), flush=True)
        grids.append(to_unit_interval(x[:16], config.data, 17))
    test01, _ = digits_split01("test")
    test01 = test01[..., None] if test01.ndim == 3 else test01
    m = digits_metrics(test01[: args.num], ref01)
    rows.append({"model": "real digits (test split)", "sampler": "-", "nfe": 0,
                 "num_samples": min(args.num, len(test01)), **{k: m[k] for k in METRICS}})

    viz.save_image_grid(out.parent / (out.name + "_samples.png"), np.concatenate(grids), nrow=16,
                        value_range=(0.0, 1.0))
    (out.parent / (out.name + ".json")).write_text(json.dumps(
        {"steps": args.steps, "num": args.num, "devices": [str(d) for d in jax.devices()],
         "jax": jax.__version__, "rows": rows}, indent=2))
    cols = ("digits_fd", "kid", "precision", "recall", "classifier_score", "class_share_tv")
    lines = [f"Digits, every model trained {args.steps} steps (batch 64, same UNet, optimizer and "
             f"schedule); n = {args.num} samples per row against the 1257 training images.", "",
             "| model | sampler | NFE | sample s | " + " | ".join(cols) + " |",
             "|---|---|---:|---:|" + "---:|" * len(cols)]
    for r in rows:
        cells = [f"{r[c]:.4g}" if isinstance(r.get(c), float) else str(r.get(c, "-")) for c in cols]
        lines.append(f"| {r['model']} | {r['sampler']} | {r['nfe']} | {r.get('sample_seconds', '-')} | "
                     + " | ".join(cells) + " |")
    lines += ["", f"Command: `python experiments/edm_fm_digits.py --steps {args.steps} --num {args.num}`",
              "Samples (the last sampler of each model, one row per model): edm_fm_digits_samples.png"]
    (out.parent / (out.name + ".md")).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
