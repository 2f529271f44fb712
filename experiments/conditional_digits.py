"""Do class-conditional models draw the digit they are asked for? The digits CNN decides.

For each trained workdir of a class-conditional Method (Gated PixelCNN, conditional
GAN, DDPM with classifier-free guidance, ...), draws ``--per_class`` samples of each
label 0-9, classifies them with the shipped digits CNN (gen_jax.metrics.classify_digits,
99.7% test accuracy) and reports the share labelled as requested, per class and overall.

    python experiments/conditional_digits.py runs/gated_pixelcnn_digits [more workdirs]

Writes experiments/results/conditional_digits.{md,json}.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import runner

from gen_jax.metrics import classify_digits

REPO = runner.REPO


def label_accuracy(workdir: str, per_class: int, seed: int) -> dict:
    """Per-class share of samples the digits CNN labels as the requested class."""
    method, state, config = runner.load(workdir)
    state = jax.device_get(state)
    labels = jnp.repeat(jnp.arange(10), per_class)
    fn = jax.jit(lambda s, r: method.sample(s, r, labels.shape[0], labels=labels))
    samples = np.asarray(fn(state, jax.random.key(seed)))
    predicted = classify_digits(samples, tuple(config.data.value_range))
    hits = predicted == np.asarray(labels)
    per = {int(k): float(hits[np.asarray(labels) == k].mean()) for k in range(10)}
    return {"workdir": workdir, "method": config.method, "step": int(state.step),
            "per_class": per, "accuracy": float(hits.mean()), "num_samples": int(labels.shape[0])}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workdirs", nargs="+")
    parser.add_argument("--per_class", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(REPO / "experiments" / "results" / "conditional_digits"))
    args = parser.parse_args(argv)
    rows = [label_accuracy(w, args.per_class, args.seed) for w in args.workdirs]
    for row in rows:
        print(json.dumps(row), flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(rows, indent=2))
    lines = ["Share of class-conditional samples the digits CNN labels as the requested class "
             f"({args.per_class} per class).", "",
             "| workdir | method | step | accuracy | worst class |", "| --- | --- | --- | --- | --- |"]
    for r in rows:
        worst = min(r["per_class"], key=r["per_class"].get)
        lines.append(f"| `{r['workdir']}` | {r['method']} | {r['step']} | {r['accuracy']:.3f} | "
                     f"{worst}: {r['per_class'][worst]:.2f} |")
    lines += ["", f"`python experiments/conditional_digits.py {' '.join(args.workdirs)} "
                  f"--per_class {args.per_class}`"]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
