"""One table across all families on the 8x8 digits: same step budget, same seed, same evaluation.

Trains every ``configs/*_digits.py`` whose Method is registered (configs of
families not built yet are listed as skipped), evaluates each with
``--mode=eval`` (gen_jax.evaluate.evaluate: test bits/dim where the family has
a likelihood or bound, and the digits CNN's sample metrics on the same number
of samples), and writes

  experiments/results/leaderboard_digits.md    the table
  experiments/results/leaderboard_digits.json  every number
  experiments/results/leaderboard_digits.png   a sample grid per family, side by side

Real-data rows (held-out digits against the same training-split reference, and
uniform noise) anchor the scale. Every family trains through the runtime
(gen_jax.train.train_and_evaluate) in ``<--workdirs>/<config>_<steps>steps_seed<seed>``:
a rerun reuses the finished runs there (and re-evaluates them) and resumes
interrupted ones; a workdir trained with another config is refused, never
overwritten. Usage::

    python experiments/leaderboard_digits.py --steps=2000            # all families
    python experiments/leaderboard_digits.py --steps=50 --only=vae,gaussian
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import traceback
from pathlib import Path

import jax
import numpy as np
import runner

from gen_jax import evaluate, registry, viz
from gen_jax.errors import ConfigError
from gen_jax.metrics import digits_metrics, to_unit_interval
from gen_jax.metrics.digits_features import digits_split01, load_params

REPO = runner.REPO

GRID = 36  # samples per family in the figure (6 x 6)


def count_params(state) -> int:
    """Trainable parameters: ``state.params``, or the sum over sub-states (multi-network Methods)."""
    if hasattr(state, "params"):
        return int(sum(np.prod(x.shape) for x in jax.tree.leaves(state.params)))
    if dataclasses.is_dataclass(state):
        return sum(count_params(getattr(state, f.name)) for f in dataclasses.fields(state))
    if isinstance(state, dict):
        return sum(count_params(v) for v in state.values())
    return 0


def discover(only: set[str]) -> list[Path]:
    paths = sorted((REPO / "configs").glob("*_digits.py"))
    return [p for p in paths if not only or p.stem.removesuffix("_digits") in only or p.stem in only]


def run_family(path: Path, args, root: Path) -> dict:
    """Trains and evaluates one config; returns its row (or why it was skipped)."""
    row: dict = {"name": path.stem.removesuffix("_digits"), "config": f"configs/{path.name}"}
    overrides = {"train.num_steps": args.steps, "seed": args.seed, "eval.num_samples": args.num_samples,
                 "train.eval_every": 0, "train.checkpoint_every": 0}
    if args.log_prob_samples:
        overrides["eval.log_prob_samples"] = args.log_prob_samples
    try:
        config = runner.config(path.name, overrides)
        row["method"] = config.method
        registry.build(config)
    except ConfigError as e:
        return row | {"skipped": str(e).split(";")[0]}
    # The budget is in the name: another --steps or --seed trains in another workdir.
    workdir = runner.run_dir(root, path.stem, f"{args.steps}steps", f"seed{args.seed}")
    try:
        _, state, _, timing = runner.train_and_load(config, workdir)
        row["train_seconds"] = timing["seconds"]
        row["params"] = count_params(jax.device_get(state))
        result = reused_eval(config, workdir, args) if args.reuse_eval else None
        if result is None:
            result, samples = evaluate.evaluate_with_samples(config, workdir)
        else:
            row["eval"] = "reused"
            samples = measured_samples(config, workdir)
        grid = samples[:GRID]  # the first of the measured samples: no second sampler compile
    except Exception as e:  # a family mid-development must not stop the table
        logging.exception("%s failed", path.name)
        return row | {"skipped": f"failed: {e.__class__.__name__}: {str(e)[:200]}",
                      "traceback": traceback.format_exc()}
    row["steps"] = result["step"]
    if "test_log_prob" in result:
        row["test_bpd"] = result["test_log_prob"]["nll_bpd"]
    row["samples_per_sec"] = result.get("sampling", {}).get("samples_per_sec")
    row["metrics"] = result.get("sample_metrics", {})
    row["grid"] = to_unit_interval(grid, config.data, 17)
    return row


def reused_eval(config, workdir: Path, args) -> dict | None:
    """The workdir's eval.json when it evaluated this run's final checkpoint with these
    settings (same step and sample counts, written after the checkpoint); else None."""
    path = workdir / "eval.json"
    if not path.exists():
        return None
    result = json.loads(path.read_text())
    ckpt = workdir / "checkpoints" / str(args.steps)
    same = (result.get("step") == args.steps and ckpt.exists()
            and path.stat().st_mtime > ckpt.stat().st_mtime
            and result.get("sampling", {}).get("num_samples") == args.num_samples
            and result.get("test_log_prob", {}).get("importance_samples",
                                                    config.eval.log_prob_samples)
            == config.eval.log_prob_samples)
    return result if same else None


def measured_samples(config, workdir: Path) -> np.ndarray:
    """The samples evaluate.evaluate_with_samples measured (same key, same inputs)."""
    from gen_jax import train

    run = train.setup(config, workdir)
    state, _ = train.restore_run(run)
    n = config.eval.num_samples
    _, r_timed = jax.random.split(run.keys["bench"])
    return train.draw_samples(run, state, n, r_timed, train.sample_inputs(run, n))


def real_rows(num_samples: int, seed: int) -> list[dict]:
    """Held-out real digits and uniform noise, measured against the same training-split reference."""
    train01, _ = digits_split01("train")
    val01, _ = digits_split01("val")
    test01, _ = digits_split01("test")
    noise = np.random.default_rng(seed).random((num_samples, 8, 8, 1)).astype(np.float32)
    rows = []
    held_out = np.concatenate([val01, test01])
    for name, x in (("real: test split", test01), ("real: val + test splits", held_out),
                    (f"uniform noise (n={num_samples})", noise)):
        rows.append({"name": name, "method": "-", "config": "-", "metrics": digits_metrics(x, train01),
                     "grid": x[:GRID]})
    return rows


def _fmt(v, spec: str) -> str:
    return "-" if v is None or (isinstance(v, float) and not math.isfinite(v)) else format(v, spec)


def write_markdown(rows: list[dict], args, out: Path, net_accuracy: float) -> None:
    head = ("| model | method | test bpd | digits-FD | KID | precision | recall | density | coverage | "
            "cls. score | class TV | samples/s | params | train s |")
    lines = [
        "# Digits leaderboard", "",
        f"Every registered family's `configs/*_digits.py`, trained for **{args.steps} steps** with seed "
        f"{args.seed} (`python experiments/leaderboard_digits.py --steps={args.steps}"
        f"{f' --log_prob_samples={args.log_prob_samples}' if args.log_prob_samples else ''}`; "
        "model = the config "
        f"`configs/<model>_digits.py`), then `--mode=eval`: "
        f"{args.num_samples} samples against the 1257 training digits in the features of the offline digits "
        f"CNN (test accuracy {net_accuracy:.1%}; `gen_jax/metrics/digits_features.py`).", "",
        "- test bpd: bits/dim of the 17-level test digits (uniform = 4.09); exact for discrete models, an "
        "upper bound for dequantized continuous models and latent-variable bounds; `-` = no likelihood.",
        "- digits-FD: Fréchet distance of CNN features (biased upward at small n: compare rows with "
        "equal n); KID: unbiased cubic-kernel MMD² (can be < 0); precision/recall (k=3, Kynkäänniemi et "
        "al. 2019) and density/coverage (k=5, Naeem et al. 2020); cls. score: Inception Score with the "
        "digits CNN (max 10); class TV: total variation between predicted class shares and the data's.",
        "- samples/s: one compiled call drawing all samples, on this machine's CPU; train s: wall-clock "
        "including compilation.", "", head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        if "skipped" in r:
            continue
        m = r["metrics"]
        n = m.get("num_samples", "")
        lines.append(
            f"| {r['name']}{f' (n={n})' if r['config'] == '-' and 'noise' not in r['name'] else ''} | "
            f"{r['method']} | {_fmt(r.get('test_bpd'), '.3f')} | {_fmt(m.get('digits_fd'), '.1f')} | "
            f"{_fmt(m.get('kid'), '.2f')} | {_fmt(m.get('precision'), '.3f')} | "
            f"{_fmt(m.get('recall'), '.3f')} | "
            f"{_fmt(m.get('density'), '.3f')} | {_fmt(m.get('coverage'), '.3f')} | "
            f"{_fmt(m.get('classifier_score'), '.2f')} | {_fmt(m.get('class_share_tv'), '.3f')} | "
            f"{_fmt(r.get('samples_per_sec'), ',.0f')} | {_fmt(r.get('params'), ',d')} | "
            f"{_fmt(r.get('train_seconds'), '.0f')} |")
    reused = [r["name"] for r in rows if r.get("eval") == "reused"]
    if reused:
        lines += ["", f"Numbers of {', '.join(reused)}: the eval.json their run's own `--mode=eval` "
                  "wrote for the final checkpoint with these settings (`--reuse_eval`); every other row "
                  "was evaluated in this run."]
    skipped = [r for r in rows if "skipped" in r]
    if skipped:
        lines += ["", "Not in the table:", ""]
        lines += [f"- {r['config']} (method {r.get('method', '?')}): {r['skipped']}" for r in skipped]
    lines += ["", "Samples: `leaderboard_digits.png` (one 6x6 grid per row of the table).", ""]
    out.with_suffix(".md").write_text("\n".join(lines))


def write_figure(rows: list[dict], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [r for r in rows if "grid" in r]
    cols = min(6, len(shown))
    nrows = math.ceil(len(shown) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(2.2 * cols, 2.5 * nrows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, r in zip(axes.ravel(), shown, strict=False):
        ax.imshow(viz.image_grid(r["grid"], nrow=6, upscale=2)[..., 0], cmap="gray", vmin=0, vmax=255)
        title = r["name"].replace("real: ", "").replace(" splits", "").replace(" split", "")
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(out.with_suffix(".png"), dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=2000, help="training steps for every family")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num_samples", type=int, default=1000, help="samples per model for the metrics")
    parser.add_argument("--log_prob_samples", type=int, default=0,
                        help="importance samples for bounds; 0 = each config's own")
    parser.add_argument("--only", default="", help="comma-separated families (config stems without _digits)")
    parser.add_argument("--workdirs", default=str(REPO / "runs" / "leaderboard_digits"),
                        help="parent of the per-family workdirs (finished runs are reused)")
    parser.add_argument("--out", default=str(REPO / "experiments" / "results" / "leaderboard_digits"))
    parser.add_argument("--reuse_eval", action="store_true",
                        help="take a finished run's eval.json when it evaluated the final checkpoint "
                        "with these settings (the figure's samples are redrawn with the same key)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    for name in ("absl", "orbax"):
        logging.getLogger(name).setLevel(logging.ERROR)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    rows = real_rows(args.num_samples, args.seed)
    for path in discover({s.strip() for s in args.only.split(",") if s.strip()}):
        print(f"== {path.name}", flush=True)
        row = run_family(path, args, Path(args.workdirs))
        print({k: v for k, v in row.items() if k not in ("grid", "traceback", "metrics")}, flush=True)
        rows.append(row)
    write_markdown(rows, args, out, load_params()[1]["test_accuracy"])
    write_figure(rows, out)
    with open(out.with_suffix(".json"), "w") as f:
        json.dump({"steps": args.steps, "seed": args.seed, "num_samples": args.num_samples,
                   "rows": [{k: v for k, v in r.items() if k != "grid"} for r in rows]}, f, indent=2)
    print(f"wrote {out}.md, .json and .png")


if __name__ == "__main__":
    main()
