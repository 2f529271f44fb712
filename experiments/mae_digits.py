"""MAE on 8x8 digits: reconstructions at 75/85/95% masking and a linear probe.

    python experiments/mae_digits.py [--steps 3000]

Trains configs/mae_digits.py with the runtime (--steps steps, seed 0; in a workdir
under --workdir, reused by a rerun), loads it back, then

- draws ``experiments/figures/mae_reconstructions_digits.png``: for ten test
  digits, the original, and per mask ratio the masked input (hidden patches
  in blue) and the MAE's
  fill-in (visible patches kept, as in the paper's figures), with the test
  split's MSE on the hidden pixels per ratio;
- fits the linear probe (:func:`gen_jax.autoencoders.mae.linear_probe`:
  logistic regression on standardised frozen encoder features, C chosen on the
  validation split) and reports its digits test accuracy for three poolings of
  the tokens (mean, class token, all tokens flattened), next to the same probe
  on the raw pixels and on the untrained encoder.

Writes ``experiments/mae_digits.json`` and ``experiments/mae_digits.md``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import jax
import numpy as np
import runner
from matplotlib.figure import Figure

from gen_jax import data as data_lib
from gen_jax.autoencoders.mae import POOLS, linear_probe, logistic_probe
from gen_jax.config import apply_overrides
from gen_jax.nn.attention import unpatchify

REPO = runner.REPO
RATIOS = (0.75, 0.85, 0.95)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--out", default=str(REPO / "experiments" / "mae_digits"))
    parser.add_argument("--figure",
                        default=str(REPO / "experiments" / "figures" / "mae_reconstructions_digits.png"))
    runner.add_workdir_flag(parser, "mae_digits")
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    config = runner.config("mae_digits.py", {
        "train.num_steps": args.steps, "train.eval_every": 0, "train.checkpoint_every": args.steps})
    mae, state, config, _ = runner.train_and_load(config, runner.run_dir(args.workdir, f"{args.steps}steps"))
    x_test, y_test = data_lib.load_split(config, "test")

    parts = jax.jit(mae.reconstruction_parts, static_argnames="mask_ratio")
    patch_dim = config.model.patch_size ** 2 * x_test.shape[-1]
    mse, shown = {}, {}
    cols = [int(np.flatnonzero(y_test == k)[0]) for k in range(10)]
    for i, ratio in enumerate(RATIOS):
        out = parts(state, x_test, jax.random.key(100 + i), mask_ratio=ratio)
        mask = np.repeat(np.asarray(out["mask"])[..., None], patch_dim, -1)  # (N, L, p*p*C)
        hidden = np.asarray(unpatchify(mask, config.model.patch_size, x_test.shape[1:])) > 0
        mse[ratio] = float(np.mean((np.asarray(out["pasted"]) - x_test)[hidden] ** 2))
        # Hidden patches drawn in blue: black would look like background.
        masked = np.where(hidden, np.array([0.15, 0.3, 0.75]), np.repeat(x_test, 3, -1))
        shown[ratio] = (masked[cols], np.asarray(out["pasted"])[cols])
        print(f"mask ratio {ratio}: MSE on hidden pixels {mse[ratio]:.4f}")

    rows = [("original", x_test[cols])]
    for ratio in RATIOS:
        rows += [(f"{ratio:.0%} hidden", shown[ratio][0]), (f"MAE\nMSE {mse[ratio]:.3f}", shown[ratio][1])]
    fig = Figure(figsize=(8, len(rows) * 0.85))
    for r, (label, images) in enumerate(rows):
        for c in range(10):
            ax = fig.add_subplot(len(rows), 10, r * 10 + c + 1)
            if images.shape[-1] == 3:
                ax.imshow(np.clip(images[c], 0, 1), interpolation="nearest")
            else:
                ax.imshow(images[c, ..., 0], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=7)
    fig.suptitle(f"MAE on 8x8 digits ({args.steps} steps): 2x2 patches hidden at random", fontsize=9)
    fig.subplots_adjust(left=0.15, right=0.99, top=0.93, bottom=0.01, wspace=0.05, hspace=0.05)
    figure = Path(args.figure).resolve()
    figure.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(figure, dpi=80)

    untrained = jax.jit(mae.init)(jax.random.key(1), {"x": x_test[:8]})
    names = {"mean": "mean patch token", "cls": "class token", "flatten": "all patch tokens"}
    # The probe's labelled splits: all classes, whatever the training config kept.
    splits = [data_lib.load_split(apply_overrides(config, {"data.classes": ()}), s)
              for s in ("train", "val", "test")]
    probe = {f"MAE encoder ({which}), {names[pool]}": linear_probe(mae, s, *splits, pool=pool)
             for pool in POOLS for which, s in (("trained", state), ("untrained", untrained))}
    probe["raw pixels"] = logistic_probe(*[(x.reshape(len(x), -1), y) for x, y in splits])
    for name, r in probe.items():
        print(f"linear probe, {name}: test accuracy {r['test_accuracy']:.3f} (C={r['C']})")
    seconds = time.perf_counter() - t0
    out = Path(args.out)
    out.with_suffix(".json").write_text(json.dumps(
        {"steps": args.steps, "mse_hidden_pixels": {str(k): v for k, v in mse.items()},
         "linear_probe": probe, "seconds": seconds}, indent=2))
    out.with_suffix(".md").write_text(
        "# MAE on 8x8 digits\n\n"
        f"`python experiments/mae_digits.py --steps {args.steps}` ({seconds / 60:.1f} min on "
        f"{jax.default_backend().upper()}; configs/mae_digits.py, seed 0).\n\n"
        "| test split (360 digits) | value |\n| --- | --- |\n"
        + "".join(f"| MSE on hidden pixels, {k:.0%} hidden | {v:.4f} |\n" for k, v in mse.items())
        + "".join(f"| linear probe test accuracy, {n} | {r['test_accuracy']:.3f} |\n"
                  for n, r in probe.items())
        + "\nLinear probe: multinomial logistic regression (scikit-learn) on standardised frozen "
        "features (encoder tokens of whole images: their mean, the class token, or all 16 patch "
        "tokens flattened), C chosen on the validation split. "
        f"Figure: `{figure.relative_to(REPO) if figure.is_relative_to(REPO) else figure}`.\n")
    print(out.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
