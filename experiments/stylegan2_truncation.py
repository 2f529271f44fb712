"""StyleGAN2's truncation trick: fidelity and variety of a trained StyleGAN2 against psi.

    python -m gen_jax --config=configs/stylegan2_faces.py --workdir=runs/stylegan2_faces
    python experiments/stylegan2_truncation.py --workdir=runs/stylegan2_faces \\
        [--psi 1,0.7,0.5] [--num 500] [--out experiments/results/stylegan2_faces]

Restores the workdir's latest checkpoint (EMA generator, tracked w_avg) and, for each psi,
draws ``--num`` samples with w truncated to w_avg + psi (w - w_avg) (Karras et al., 2019,
Sec. 3.1 / 2020, App. B; psi = 1: off), the same key for every psi (the same latents and
noise maps: only the truncation differs), and measures them as ``--mode=eval`` does
(gen_jax.evaluate.sample_metrics: FID, KID, precision/recall and density/coverage with the
FID Inception network against the config's ``eval.reference_split``; the reference
statistics are cached in the workdir). The loop, the table and the curves are
experiments/biggan_truncation.py's (:func:`measure`, :func:`table`, :func:`plot_curves`).

Writes ``truncation_metrics.json``, ``truncation_metrics.md`` (the table),
``truncation_curve.png`` (the curves) and ``truncation_samples.png`` (one row per psi, the
first ``--grid`` samples of the measured key). ``--figures_only`` redraws the figures from
an earlier call's ``truncation_metrics.json`` (same settings) without measuring again.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import runner  # noqa: F401  (puts the repository on sys.path)
from biggan_truncation import measure, plot_curves, table

from gen_jax import viz
from gen_jax.train import restore_run, setup


def _label(psi: float) -> str:
    return f"{psi:g}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--psi", default="1,0.7,0.5", help="truncation psi in W (1 = off)")
    ap.add_argument("--num", type=int, default=500, help="samples per psi")
    ap.add_argument("--grid", type=int, default=10, help="samples per psi in the figure")
    ap.add_argument("--seed", type=int, default=2020)
    ap.add_argument("--out", default="experiments/results/stylegan2_faces")
    ap.add_argument("--figures_only", action="store_true",
                    help="only redraw the figures from --out's truncation_metrics.json")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    psis = [float(p) for p in args.psi.split(",")]

    run = setup(None, args.workdir)
    if run.config.method != "stylegan2":
        raise SystemExit(f"{args.workdir} holds a '{run.config.method}' run, not 'stylegan2'")
    state, step = restore_run(run)
    method, n = run.method, args.num
    # psi is traced: one compiled sampler for every psi.
    sample = jax.jit(lambda s, r, psi: method.sample(s, r, n, truncation=psi))
    key = jax.random.key(args.seed)
    if args.figures_only:  # the measured rows of an earlier call with these settings
        result = json.loads((out / "truncation_metrics.json").read_text())
        got = (result["workdir"], result["step"], result["num_samples_per_psi"], result["seed"],
               [r["psi"] for r in result["rows"]])
        if got != (args.workdir, step, n, args.seed, psis):
            raise SystemExit(f"{out / 'truncation_metrics.json'} was measured with (workdir, step, num, "
                             f"seed, psis) = {got}, not {(args.workdir, step, n, args.seed, psis)}")
        rows = result["rows"]
    else:
        rows = measure(run, lambda r, psi: sample(state, r, psi), psis, key)
        result = {"workdir": args.workdir, "step": step, "num_samples_per_psi": n, "seed": args.seed,
                  "rows": rows, "metric": "FID Inception features (gen_jax.evaluate.sample_metrics)"}
        (out / "truncation_metrics.json").write_text(json.dumps(result, indent=2))

    md = [f"# StyleGAN2 truncation curve ({args.workdir}, step {step})", "",
          f"{n} EMA samples per psi (the same key: the same latents and noise), w = w_avg + psi "
          f"(w - w_avg); Inception features against the {rows[0].get('num_reference')} images of "
          f"the '{rows[0].get('reference')}' split.", "", *table(rows, _label)]
    (out / "truncation_metrics.md").write_text("\n".join(md) + "\n")
    # The first --grid of the measured samples of each psi (the same key: the same draw).
    grid = [np.asarray(sample(state, key, jnp.float32(p))[:args.grid]) for p in psis]
    viz.save_image_grid(out / "truncation_samples.png", np.concatenate(grid), nrow=args.grid,
                        value_range=tuple(run.config.data.value_range), upscale=2)
    plot_curves(out / "truncation_curve.png", rows, f"StyleGAN2, {n} samples per psi", _label)
    print("\n".join(md))


if __name__ == "__main__":
    main()
