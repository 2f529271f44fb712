"""Reconstructing occluded digits: plain PCA projection vs robust (hypothesize-and-test) projection.

    python experiments/robust_pca_occlusion.py [--components 16] [--out experiments/robust_pca_occlusion]

Fits PCA on the dequantized training digits, hides a 4x5 or 5x4 block
(20 of 64 pixels, 31%) of every test digit behind an occluder (or, for
"bright3x3", a 3x3 block set to the maximum value 1, issue 14's case), and measures
the mean squared error of each reconstruction against the unoccluded image
(all 64 pixels, and the 20 hidden ones alone). Occluders: "bright" (the block
set to 1, like a blob of ink), "dark" (set to 0) and "noise" (uniform values).
Reconstructions: the plain projection of the occluded image; the robust
projection with the occluded pixels unidentified (``mask=None``); the robust
projection told which pixels are hidden (``mask``); and, as the floor, the
projection of the clean image; and ``pca_block_robust_project`` told only the
block's size (every placement tried), not where it is. Writes ``OUT.png``
(bright occluder: rows clean, occluded, plain, robust, robust with mask) and ``OUT.json``.

What limits the blind robust projection (issue 14, measured with --components 10
on bright3x3: plain 0.0433, robust 0.0304, with mask 0.0222): the PCA leaves each
pixel a residual standard deviation of ~0.14, so a 9-pixel bright block is often
not an outlier the model can see. Under the truncated (MSAC) cost the true mask's
fit scores worse than the fit found blindly in ~80% of images, so no search over
that cost helps; nor did IRLS (Tukey, hard threshold, Cauchy; per-pixel or PPCA
scales; 3x3 dilation of the outlier set), EM on an inlier/uniform-outlier mixture
with a mean-field spatial prior, averaging over hypotheses, or window hypotheses
of mixed sizes (0.029-0.040). What does help: a stronger prior on the codes
(prior_weight 2, now the default: 0.0315 -> 0.0304 here, 0.0526 -> 0.0475 for
the 4x5 bright block) and knowing the occluder's size (0.0239).
"""

from __future__ import annotations

import argparse
import json
import time

import jax
import jax.numpy as jnp
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

import gen_jax  # noqa: E402
from gen_jax.classical import (  # noqa: E402
    fit_pca,
    pca_block_robust_project,
    pca_project,
    pca_reconstruct,
    pca_robust_project,
)
from gen_jax.data import load_split  # noqa: E402
from gen_jax.viz import image_grid  # noqa: E402

OCCLUDERS = {
    "bright": lambda rng, shape: np.ones(shape, np.float32),
    "dark": lambda rng, shape: np.zeros(shape, np.float32),
    "noise": lambda rng, shape: rng.random(shape, dtype=np.float32),
    "bright3x3": lambda rng, shape: np.ones(shape, np.float32),
}
BLOCKS = {"bright3x3": [(3, 3)]}  # block shapes drawn from; default 4x5 or 5x4


def occlude(x: np.ndarray, fill, seed: int,
            shapes: list[tuple[int, int]] = ((4, 5), (5, 4))) -> tuple[np.ndarray, np.ndarray]:
    """Covers a random block (one of one or two ``shapes``, equally likely) of each 8x8 image;
    returns (images, known-pixel mask)."""
    rng = np.random.default_rng(seed)
    out, known = x.reshape(-1, 8, 8).copy(), np.ones((len(x), 8, 8), bool)
    for i in range(len(x)):
        h, w = shapes[0] if len(shapes) == 1 or rng.random() < 0.5 else shapes[1]
        r, c = rng.integers(0, 9 - h), rng.integers(0, 9 - w)
        out[i, r:r + h, c:c + w] = fill(rng, (h, w))
        known[i, r:r + h, c:c + w] = False
    return out.reshape(len(x), -1), known.reshape(len(x), -1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--components", type=int, default=16)
    parser.add_argument("--hypotheses", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--show", type=int, default=12, help="digits in the figure")
    parser.add_argument("--out", default="experiments/robust_pca_occlusion")
    args = parser.parse_args()

    config = gen_jax.load_config("configs/pca_digits.py")
    x_train, _ = load_split(config, "train")
    x_test, _ = load_split(config, "test")
    x_train, clean = x_train.reshape(len(x_train), -1), x_test.reshape(len(x_test), -1)
    params = fit_pca(x_train, args.components)
    root = jax.random.key(args.seed)

    def errors(recon: np.ndarray, hidden: np.ndarray) -> dict:
        sq = (np.asarray(recon) - clean) ** 2
        return {"mse": float(sq.mean()), "mse_hidden": float(sq[hidden].mean()),
                "mse_visible": float(sq[~hidden].mean())}

    results = {"components": args.components, "hypotheses": args.hypotheses,
               "num_test_images": len(clean), "occluded_fraction": {"default": 20 / 64, "bright3x3": 9 / 64},
               "occluders": {}}
    figure_rows = None
    for i, (name, fill) in enumerate(OCCLUDERS.items()):
        shapes = BLOCKS.get(name, [(4, 5), (5, 4)])
        occluded, known = occlude(clean, fill, args.seed + i, shapes)
        hidden = ~known
        k_blind, k_mask = jax.random.split(jax.random.fold_in(root, i))
        t0 = time.perf_counter()
        z_blind = jax.block_until_ready(pca_robust_project(
            params, occluded, key=k_blind, num_hypotheses=args.hypotheses))
        seconds = time.perf_counter() - t0
        z_mask = pca_robust_project(params, occluded, known, key=k_mask, num_hypotheses=args.hypotheses)
        z_block = pca_block_robust_project(params, occluded, (8, 8), shapes)
        recons = {
            "occluded_input": occluded,
            "plain_projection": pca_reconstruct(params, pca_project(params, jnp.asarray(occluded))),
            "robust_projection": pca_reconstruct(params, z_blind),
            "robust_projection_with_mask": pca_reconstruct(params, z_mask),
            "block_projection_given_shape": pca_reconstruct(params, z_block),
            "clean_projection": pca_reconstruct(params, pca_project(params, jnp.asarray(clean))),
        }
        results["occluders"][name] = {k: errors(v, hidden) for k, v in recons.items()}
        results["occluders"][name]["robust_seconds"] = seconds
        if name == "bright":
            figure_rows = [clean, occluded, recons["plain_projection"], recons["robust_projection"],
                           recons["robust_projection_with_mask"]]

    print(f"PCA M={args.components}, {len(clean)} test digits, 20/64 pixels occluded (9/64 for bright3x3); "
          "MSE vs the clean image (all pixels / hidden block):")
    for name, res in results["occluders"].items():
        cells = "  ".join(f"{k} {v['mse']:.4f}/{v['mse_hidden']:.4f}" for k, v in res.items()
                          if isinstance(v, dict))
        print(f"  {name:6s} {cells}")

    labels = ["clean", "occluded", "plain projection", "robust", "robust + mask"]
    fig, axes = plt.subplots(len(labels), 1, figsize=(args.show * 0.6, len(labels) * 0.75))
    for ax, label, row in zip(axes, labels, figure_rows, strict=True):
        imgs = np.clip(np.asarray(row)[:args.show], 0, 1).reshape(-1, 8, 8, 1)
        ax.imshow(image_grid(imgs, nrow=args.show, upscale=4)[..., 0], cmap="gray", vmin=0, vmax=255)
        ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    mse = {k: v["mse"] for k, v in results["occluders"]["bright"].items() if isinstance(v, dict)}
    fig.suptitle(f"PCA (M={args.components}) reconstructions of digits behind a bright block; MSE: "
                 f"plain {mse['plain_projection']:.4f}, robust {mse['robust_projection']:.4f}, "
                 f"with mask {mse['robust_projection_with_mask']:.4f}", fontsize=8)
    fig.tight_layout()
    fig.savefig(f"{args.out}.png", dpi=120)
    with open(f"{args.out}.json", "w") as f:
        json.dump(results, f, indent=2)
    print(f"wrote {args.out}.png and {args.out}.json")


if __name__ == "__main__":
    main()
