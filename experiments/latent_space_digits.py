"""2-D latent spaces of an autoencoder and a VAE on 8x8 digits.

    python experiments/latent_space_digits.py [--steps 2000]

Trains the conv AE of configs/ae_digits.py and the conv VAE of
configs/vae_digits.py, both with a 2-D code, for --steps steps with the
runtime (each in its own workdir under --workdir; a rerun reuses finished runs),
loads them back, then draws into ``experiments/figures/``:

- ``latent_codes_ae_vs_vae.png``: codes of the 360 test digits (AE: f(x);
  VAE: the posterior mean), coloured by label. The AE is free to spread its
  classes over arbitrary, disconnected regions; the VAE's KL term packs them
  into the N(0, I) prior's mass.
- ``latent_decoded_ae_vs_vae.png``: decoded random codes. AE: z uniform in the
  bounding box of its training codes, and z from the Gaussian fitted to its
  codes (the AE Method's ``sample``); VAE: z ~ N(0, I), its own prior. Below,
  each model decodes a regular 10x10 grid (AE: over its codes' 1st-99th
  percentile box; VAE: over [-2.5, 2.5]^2), and the AE decodes z ~ N(0, I),
  the prior a VAE would use.

The point (Kingma & Welling, 2014; the usual lecture contrast): an AE's
latent space has no density to sample from, and codes between and outside its
clusters decode to blurs and non-digits, while the VAE's prior region decodes
to digits throughout.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import jax
import numpy as np
import runner
from matplotlib.figure import Figure

from gen_jax import data as data_lib
from gen_jax import viz

REPO = runner.REPO
FIGURES = REPO / "experiments" / "figures"


def fit(file: str, steps: int, root: str):
    """Trains ``configs/<file>`` with a 2-D code (or reuses the finished run); (config, method, state)."""
    config = runner.config(file, {
        "model.latent_dim": 2, "train.num_steps": steps, "train.eval_every": 0,
        "train.checkpoint_every": steps})
    method, state, config, _ = runner.train_and_load(
        config, runner.run_dir(root, Path(file).stem, "latent2", f"{steps}steps"))
    return config, method, state


def tile(images: np.ndarray, nrow: int) -> np.ndarray:
    """(N, H, W, 1) in [0, 1] -> one (rows*H, nrow*W) array, 1-pixel grey gaps."""
    return viz.image_grid(np.clip(images, 0, 1), nrow=nrow, value_range=(0.0, 1.0), upscale=1)[..., 0]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--figures", default=str(FIGURES), help="directory of the two figures")
    runner.add_workdir_flag(parser, "latent_space_digits")
    args = parser.parse_args(argv)
    figures = Path(args.figures)
    figures.mkdir(parents=True, exist_ok=True)

    ae_cfg, ae, ae_state = fit("ae_digits.py", args.steps, args.workdir)
    vae_cfg, vae, vae_state = fit("vae_digits.py", args.steps, args.workdir)
    x_test, y_test = data_lib.load_split(ae_cfg, "test")
    x_train, _ = data_lib.load_split(ae_cfg, "train")
    xv_test, yv_test = data_lib.load_split(vae_cfg, "test")  # dequantized, as the VAE was trained
    ae_codes = np.asarray(ae.encode(ae_state, x_test, None))
    ae_train_codes = np.asarray(ae.encode(ae_state, x_train, None))
    vae_codes = np.asarray(vae.encode(vae_state, xv_test, None))  # rng None: the posterior mean

    fig = Figure(figsize=(10, 4.6))
    for i, (codes, labels, title) in enumerate([(ae_codes, y_test, "AE codes f(x)"),
                                                 (vae_codes, yv_test, "VAE posterior means")]):
        ax = fig.add_subplot(1, 2, i + 1)
        sc = ax.scatter(codes[:, 0], codes[:, 1], c=labels, cmap="tab10", s=9, vmin=-0.5, vmax=9.5)
        ax.set_title(f"{title}, 360 test digits", fontsize=10)
        if i == 1:
            t = np.linspace(0, 2 * np.pi, 200)
            for r in (1, 2):
                ax.plot(r * np.cos(t), r * np.sin(t), c="0.5", lw=0.6, ls="--")
    fig.colorbar(sc, ax=fig.axes, ticks=range(10), label="digit")
    fig.savefig(figures / "latent_codes_ae_vs_vae.png", dpi=80)

    rng = np.random.default_rng(0)
    lo_box, hi_box = ae_train_codes.min(0), ae_train_codes.max(0)
    z_uniform = rng.uniform(lo_box, hi_box, size=(100, 2)).astype(np.float32)
    p1, p99 = np.percentile(ae_train_codes, [1, 99], axis=0)
    axis = np.linspace(0, 1, 10)
    ae_grid = np.stack(np.meshgrid(p1[0] + axis * (p99[0] - p1[0]), (p1[1] + axis * (p99[1] - p1[1]))[::-1]),
                       -1).reshape(-1, 2).astype(np.float32)
    g = np.linspace(-2.5, 2.5, 10)
    vae_grid = np.stack(np.meshgrid(g, g[::-1]), -1).reshape(-1, 2).astype(np.float32)
    panels = [
        ("AE: z uniform in its codes' box", ae.decode(ae_state, z_uniform)),
        ("AE: z ~ Gaussian fitted to codes", ae.sample(ae_state, jax.random.key(1), 100)),
        ("VAE: z ~ N(0, I)", vae.sample(vae_state, jax.random.key(2), 100)),
        ("AE: grid over codes (1-99%)", ae.decode(ae_state, ae_grid)),
        ("AE: z ~ N(0, I), a VAE's prior", ae.decode(ae_state, rng.normal(size=(100, 2)).astype(np.float32))),
        ("VAE: grid over [-2.5, 2.5]^2", vae.decode(vae_state, vae_grid)),
    ]
    fig = Figure(figsize=(12, 8.5))
    for i, (title, images) in enumerate(panels):
        ax = fig.add_subplot(2, 3, i + 1)
        ax.imshow(tile(np.asarray(images), 10), cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        ax.set_title(title, fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(f"Decoded codes, 2-D latent spaces ({args.steps} training steps each)", fontsize=11)
    fig.subplots_adjust(left=0.02, right=0.98, top=0.92, bottom=0.02, wspace=0.08, hspace=0.12)
    fig.savefig(figures / "latent_decoded_ae_vs_vae.png", dpi=90)
    print(f"wrote {figures / 'latent_codes_ae_vs_vae.png'} and {figures / 'latent_decoded_ae_vs_vae.png'}")


if __name__ == "__main__":
    main()
