"""StyleGAN2's figures from a trained workdir: the truncation strip and the style-mixing grid.

    python -m gen_jax --config=configs/stylegan2_faces.py --workdir=runs/stylegan2_faces
    python experiments/stylegan2_figures.py --workdir=runs/stylegan2_faces \\
        [--out experiments/results/stylegan2_faces] [--rows 8] [--cutoff 4]

Restores the workdir's latest checkpoint (EMA generator, tracked w_avg) and writes:

- ``truncation.png``: one row per latent, one column per psi in 1, 0.75, 0.5, 0.25, 0
  (w_avg + psi (w - w_avg); psi = 0 is the image of the mean w, the same in every row);
- ``style_mixing.png``: StyleGAN's Fig. 3 layout: the top row holds the column sources, the
  left column the row sources; image (i, j) takes the styles of the layers below
  ``--cutoff`` (coarse: 4x4 and 8x8, and the first 16x16 conv at the default 4 of 8) from
  row source i and the rest (fine) from column source j.

Every image of a figure has the same noise maps, so only the styles differ.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import jax
import numpy as np
import runner  # noqa: F401  (puts the repository on sys.path)

from gen_jax import viz
from gen_jax.train import restore_run, setup

PSIS = (1.0, 0.75, 0.5, 0.25, 0.0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--out", default="experiments/results/stylegan2_faces")
    ap.add_argument("--rows", type=int, default=8, help="latents in the truncation strip")
    ap.add_argument("--mix_rows", type=int, default=5, help="row (coarse) sources of the mixing grid")
    ap.add_argument("--mix_cols", type=int, default=6, help="column (fine) sources of the mixing grid")
    ap.add_argument("--cutoff", type=int, default=4, help="first layer whose style comes from the columns")
    ap.add_argument("--seed", type=int, default=2020)
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    run = setup(None, args.workdir)
    state, step = restore_run(run)
    method = run.method
    if not 1 <= args.cutoff < method.num_ws:
        raise SystemExit(f"--cutoff={args.cutoff} must be in [1, {method.num_ws})")
    vr = tuple(run.config.data.value_range)
    r_z, r_rows, r_cols, r_noise = jax.random.split(jax.random.key(args.seed), 4)
    latent = run.config.model.latent_dim

    strip = jax.jit(lambda s, z, r: method.truncation_strip(s, z, PSIS, r))
    x = np.asarray(strip(state, jax.random.normal(r_z, (args.rows, latent)), r_noise))
    viz.save_image_grid(out / "truncation.png", x, nrow=len(PSIS), value_range=vr)

    grid = jax.jit(lambda s, a, b, r: method.style_mixing_grid(s, a, b, args.cutoff, r))
    x = np.asarray(grid(state, jax.random.normal(r_rows, (args.mix_rows, latent)),
                        jax.random.normal(r_cols, (args.mix_cols, latent)), r_noise))
    viz.save_image_grid(out / "style_mixing.png", x, nrow=args.mix_cols + 1, value_range=vr)

    info = {"workdir": args.workdir, "step": step, "psis": PSIS, "rows": args.rows,
            "mix_rows": args.mix_rows, "mix_cols": args.mix_cols, "cutoff": args.cutoff,
            "num_ws": method.num_ws, "seed": args.seed}
    (out / "figures.json").write_text(json.dumps(info, indent=2))
    print(json.dumps(info))


if __name__ == "__main__":
    main()
