"""One-class anomaly detection on 8x8 digits: AE, DAE, VAE and MAE, all ten classes.

    python experiments/one_class_digits.py [--steps 600] [--out experiments/one_class_digits]

For each model and each digit k: train on the training digits of class k only
(``data.classes=(k,)``, about 125 images), score the whole test split (360
digits) with the Method's ``anomaly_score``, and report the AUROC of the other
classes (positives) against the test digits of class k (negatives). Scores:
AE / DAE squared reconstruction error, VAE negative ELBO (16 posterior samples)
and negative IWAE bound (K = 100), MAE masked-patch loss averaged over 16
random masks. Two numpy references are added: the squared distance to the
class's mean training image, and the PCA (8 components) reconstruction
error. Writes ``<out>.md`` (a table of per-class and mean AUROC) and
``<out>.json``.

The models are the configs' own (configs/ae_digits.py, dae_digits.py,
vae_digits.py, mae_digits.py) with ``train.num_steps = --steps``, batch 64 and
``seed = --seed``, each (model, class) trained through the runtime
(gen_jax.train.train_and_evaluate: the CLI's batches and keys) in its own
workdir under --workdir; a rerun reuses finished runs, and the two VAE rows
share theirs. ``--smoke`` uses the configs' ``smoke`` variants (tiny networks),
for checking the script end to end in seconds.
"""

from __future__ import annotations

import argparse
import functools
import json
import time
from pathlib import Path

import jax
import numpy as np
import runner

from gen_jax import data as data_lib
from gen_jax.metrics import auroc

REPO = runner.REPO
# name -> (config file, keyword arguments of anomaly_score)
MODELS = {
    "AE": ("ae_digits.py", {}),
    "DAE": ("dae_digits.py", {}),
    "VAE (-ELBO)": ("vae_digits.py", {"kind": "nelbo", "num_samples": 16}),
    "VAE (-IWAE, K=100)": ("vae_digits.py", {"kind": "iwae", "num_samples": 100}),
    "MAE": ("mae_digits.py", {"num_masks": 16}),
}


def baseline_scores(x_train: np.ndarray, x_test: np.ndarray, components: int) -> dict[str, np.ndarray]:
    """Two references computed with numpy: squared distance to the class's mean
    image, and the squared reconstruction error of PCA with ``components`` components."""
    flat, test = x_train.reshape(len(x_train), -1), x_test.reshape(len(x_test), -1)
    mean = flat.mean(0)
    basis = np.linalg.svd(flat - mean, full_matrices=False)[2][:components]
    recon = (test - mean) @ basis.T @ basis + mean
    return {"mean image (distance)": ((test - mean) ** 2).sum(1),
            f"PCA, {components} components": ((test - recon) ** 2).sum(1)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--classes", type=int, nargs="*", default=list(range(10)))
    parser.add_argument("--models", nargs="*", default=list(MODELS))
    parser.add_argument("--out", default=str(REPO / "experiments" / "one_class_digits"))
    parser.add_argument("--smoke", action="store_true",
                        help="the configs' smoke variants (tiny networks): an end-to-end check")
    runner.add_workdir_flag(parser, "one_class_digits")
    args = parser.parse_args(argv)

    overrides = {"train.num_steps": args.steps, "data.batch_size": args.batch_size, "seed": args.seed,
                 "train.eval_every": 0, "train.checkpoint_every": args.steps}
    variant = ":smoke" if args.smoke else ""
    results: dict[str, dict] = {}
    t_start = time.perf_counter()
    for name in args.models:
        file, score_kw = MODELS[name]
        per_class, t0, score_fn = {}, time.perf_counter(), None
        # the whole test split, all classes
        x_test, y_test = data_lib.load_split(runner.config(file + variant, overrides), "test")
        for k in args.classes:
            config = runner.config(file + variant, overrides, {"data.classes": (k,)})
            # the two VAE rows train the same config: one workdir, trained once
            workdir = runner.run_dir(args.workdir, Path(file).stem + variant.replace(":", "-"),
                                     f"class{k}", f"{args.steps}steps", f"batch{args.batch_size}",
                                     f"seed{args.seed}")
            method, state, _, _ = runner.train_and_load(config, workdir)
            if score_fn is None:  # compiled once per model: data.classes does not change the network
                score_fn = jax.jit(functools.partial(method.anomaly_score, **score_kw))
            scores = np.asarray(score_fn(state, x_test, jax.random.key(10_000 + k)))
            per_class[k] = auroc(scores, y_test != k)
            print(f"{name} class {k}: AUROC {per_class[k]:.3f}", flush=True)
        results[name] = {"per_class": per_class, "seconds": time.perf_counter() - t0,
                         "config": f"configs/{file}", "score": score_kw}
    # Reference rows on the same one-class splits (the AE config's [0, 1] pixels).
    base = runner.config("ae_digits.py")
    x_test, y_test = data_lib.load_split(base, "test")
    for k in args.classes:
        x_k, _ = data_lib.load_split(runner.config("ae_digits.py", {"data.classes": (k,)}), "train")
        for name, scores in baseline_scores(x_k, x_test, 8).items():
            row = results.setdefault(name, {"per_class": {}, "config": "numpy baseline"})
            row["per_class"][k] = auroc(scores, y_test != k)
    for row in results.values():
        row["mean"] = float(np.mean(list(row["per_class"].values())))
    total = time.perf_counter() - t_start

    out = Path(args.out)
    meta = {"steps": args.steps, "batch_size": args.batch_size, "seed": args.seed,
            "classes": args.classes, "total_seconds": total, "jax_backend": jax.default_backend()}
    out.with_suffix(".json").write_text(json.dumps({"meta": meta, "results": results}, indent=2))
    header = ("| model | " + " | ".join(str(k) for k in args.classes) + " | mean |\n"
              + "| --- " * (len(args.classes) + 2) + "|\n")
    rows = "".join(f"| {name} | " + " | ".join(f"{r['per_class'][k]:.3f}" for k in args.classes)
                   + f" | **{r['mean']:.3f}** |\n" for name, r in results.items())
    out.with_suffix(".md").write_text(
        "# One-class anomaly detection on 8x8 digits (AUROC)\n\n"
        f"Train on the ~125 training digits of class k for {args.steps} steps (batch "
        f"{args.batch_size}, seed {args.seed}, the configs' models and optimisers); score all 360 "
        "test digits; AUROC of the other classes (positives) against class k (negatives). "
        f"Produced by `python experiments/one_class_digits.py --steps {args.steps}"
        f"{' --smoke' if args.smoke else ''}` in "
        f"{total / 60:.1f} min on {jax.default_backend().upper()}.\n\n" + header + rows)
    print(out.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
