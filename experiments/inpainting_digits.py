"""Inpainting with denoising autoencoders: fill a missing 3x3 block of test digits.

    python experiments/inpainting_digits.py [--steps 1500]

Trains three conv autoencoders on the digits training split with the
runtime (configs/ae_digits.py and dae_digits.py, --steps steps each, each in its
own workdir under --workdir; a rerun reuses finished runs): a plain
AE, a DAE with masking noise (each pixel black with probability 0.25, Vincent
et al., 2008) and a DAE with block noise (one random 3x3 black square per
image). Each test digit loses a 3x3 block at a random position inside the
central 6x6 region (set to black); a model's inpainting keeps the known
pixels and takes the hole from its reconstruction of the damaged image.
Reports the MSE inside the hole over the 360 test digits (also for filling
the hole with the training mean image) in ``experiments/inpainting_digits.json``
and draws ``experiments/figures/inpainting_digits.png``.
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
from matplotlib.patches import Rectangle

from gen_jax import data as data_lib

REPO = runner.REPO
BLOCK = 3
MODELS = {
    "AE": ("ae_digits.py", {}),
    "DAE, masking noise": ("dae_digits.py", {}),
    "DAE, block noise": ("dae_digits.py", {"model.noise": "block", "model.block_size": BLOCK}),
}


def damage(x: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Sets one BLOCK x BLOCK square per image, inside rows/cols 1..6, to black; returns (x, hole)."""
    rng = np.random.default_rng(seed)
    n, h, w, _ = x.shape
    hole = np.zeros(x.shape, bool)
    for i, (r, c) in enumerate(rng.integers(1, h - 1 - BLOCK + 1, size=(n, 2))):
        hole[i, r:r + BLOCK, c:c + BLOCK] = True
    return np.where(hole, 0.0, x).astype(np.float32), hole


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--out", default=str(REPO / "experiments" / "inpainting_digits.json"))
    parser.add_argument("--figure", default=str(REPO / "experiments" / "figures" / "inpainting_digits.png"))
    runner.add_workdir_flag(parser, "inpainting_digits")
    args = parser.parse_args(argv)

    base = runner.config("ae_digits.py")
    x_test, y_test = data_lib.load_split(base, "test")
    x_train, _ = data_lib.load_split(base, "train")
    damaged, hole = damage(x_test)
    fills = {"training mean image": np.where(hole, x_train.mean(0, keepdims=True), x_test)}
    t0 = time.perf_counter()
    for name, (file, overrides) in MODELS.items():
        config = runner.config(file, {
            "train.num_steps": args.steps, "train.eval_every": 0, "train.checkpoint_every": args.steps},
            overrides)
        workdir = runner.run_dir(args.workdir, name, f"{args.steps}steps")
        method, state, _, _ = runner.train_and_load(config, workdir)
        recon = np.asarray(jax.jit(method.reconstruct)(state, damaged, None))  # deterministic
        fills[name] = np.where(hole, recon, damaged)
    mse = {name: float(np.mean((fill - x_test)[hole] ** 2)) for name, fill in fills.items()}
    for name, value in mse.items():
        print(f"{name}: MSE in the hole {value:.4f}")
    Path(args.out).write_text(json.dumps({
        "steps": args.steps, "block": BLOCK, "mse_in_hole": mse, "num_test": len(x_test),
        "seconds": time.perf_counter() - t0}, indent=2))

    # One test digit of each class; the hole outlined in red.
    cols = [int(np.flatnonzero(y_test == k)[0]) for k in range(10)]
    rows = [("original", x_test), ("damaged", damaged)] + [(n, f) for n, f in fills.items()]
    fig = Figure(figsize=(10 * 0.8, len(rows) * 0.85))
    for r, (label, images) in enumerate(rows):
        for c, i in enumerate(cols):
            ax = fig.add_subplot(len(rows), 10, r * 10 + c + 1)
            ax.imshow(images[i, ..., 0], cmap="gray", vmin=0, vmax=1)
            rr, cc = np.argwhere(hole[i, ..., 0]).min(0)
            ax.add_patch(Rectangle((cc - 0.5, rr - 0.5), BLOCK, BLOCK, fill=False, ec="red", lw=0.8))
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                extra = f"\nMSE {mse[label]:.3f}" if label in mse else ""
                ax.set_ylabel(label + extra, rotation=0, ha="right", va="center", fontsize=7)
    fig.suptitle(f"Filling a missing {BLOCK}x{BLOCK} block (hole MSE over 360 test digits)", fontsize=9)
    fig.subplots_adjust(left=0.2, right=0.99, top=0.92, bottom=0.01, wspace=0.05, hspace=0.05)
    Path(args.figure).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.figure, dpi=80)
    print(f"wrote {args.figure}")


if __name__ == "__main__":
    main()
