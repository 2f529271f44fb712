"""BigGAN's truncation trick: fidelity and variety of a trained BigGAN against the threshold psi.

    python -m gen_jax --config=configs/biggan_patches.py --workdir=runs/biggan_patches
    python experiments/biggan_truncation.py --workdir=runs/biggan_patches \\
        [--psi 0.25,0.5,1.0,1.5,0] [--num 500] [--out experiments/results/biggan_patches]

Restores the workdir's latest checkpoint (EMA generator, standing statistics) and, for
each psi (0 = no truncation), draws ``--num`` class-balanced samples with latents from
the normal truncated to [-psi, psi] (Brock et al., 2019, Sec. 3.1; the same key for every
psi) and measures them as ``--mode=eval`` does (gen_jax.evaluate.sample_metrics: FID, KID,
precision/recall and density/coverage with the FID Inception network, against the
config's ``eval.reference_split``; the reference statistics are cached in the workdir).
Small psi should raise precision (fidelity) and lower recall (variety), the paper's
trade-off (its Fig. 17 plots IS against FID). Writes ``truncation.json``,
``truncation.md`` (the table), ``truncation.png`` (the curves) and
``truncation_grid.png`` (one row per psi, one column per class, the same key).

:func:`measure`, :func:`table` and :func:`plot_curves` are shared with
experiments/stylegan2_truncation.py (StyleGAN2's psi in W).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import runner  # noqa: F401  (puts the repository on sys.path)

from gen_jax import viz
from gen_jax.evaluate import sample_metrics
from gen_jax.train import restore_run, setup

KEYS = ("fid", "kid", "kid_std", "precision", "recall", "density", "coverage")


def _label(psi: float) -> str:
    return "off" if psi <= 0 else f"{psi:g}"


def measure(run, sample: Callable[[jax.Array, jax.Array], jax.Array], psis: Sequence[float],
            key: jax.Array) -> list[dict]:
    """For each psi: ``sample(key, psi)`` (the same key for every psi: the same latents and
    noise, only the truncation differs) measured as ``--mode=eval`` does
    (:func:`gen_jax.evaluate.sample_metrics`); one row of :data:`KEYS`, the n of samples
    and of the reference, and the seconds (sampling + metrics) per psi."""
    rows = []
    for psi in psis:
        t0 = time.perf_counter()
        x = np.asarray(sample(key, jnp.float32(psi)), np.float32)
        m = sample_metrics(run, x)
        rows.append({"psi": psi, **{k: m.get(k) for k in KEYS}, "num_samples": m.get("num_samples"),
                     "num_reference": m.get("num_reference"), "reference": m.get("reference"),
                     "seconds": time.perf_counter() - t0, **({"note": m["note"]} if "note" in m else {})})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def _fmt(v, spec=".3f"):
    return "n/a" if v is None else format(v, spec)


def table(rows: list[dict], label: Callable[[float], str] = _label) -> list[str]:
    """The rows as a markdown table (psi named by ``label``)."""
    md = ["| psi | FID | KID | precision | recall | density | coverage |",
          "| --- | --- | --- | --- | --- | --- | --- |"]
    md += [f"| {label(r['psi'])} | {_fmt(r['fid'], '.1f')} | {_fmt(r['kid'])} ± {_fmt(r['kid_std'])} | "
           f"{_fmt(r['precision'])} | {_fmt(r['recall'])} | {_fmt(r['density'])} | {_fmt(r['coverage'])} |"
           for r in rows]
    return md


def plot_curves(path: Path, rows: list[dict], title: str, label: Callable[[float], str] = _label) -> bool:
    """FID, and precision and recall, against psi (two panels) into ``path``; False when
    matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    done = [r for r in rows if r["fid"] is not None]
    names = [label(r["psi"]) for r in done]
    fig, axes = plt.subplots(1, 2, figsize=(8, 3))
    axes[0].plot(names, [r["fid"] for r in done], "o-")
    axes[0].set_xlabel("truncation psi")
    axes[0].set_ylabel("FID (Inception)")
    for k in ("precision", "recall"):
        axes[1].plot(names, [r[k] for r in done], "o-", label=k)
    axes[1].set_xlabel("truncation psi")
    axes[1].legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--psi", default="0.25,0.5,1.0,1.5,0", help="thresholds; 0 = no truncation")
    ap.add_argument("--num", type=int, default=500, help="samples per threshold")
    ap.add_argument("--out", default="experiments/results/biggan_patches")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    psis = [float(p) for p in args.psi.split(",")]

    run = setup(None, args.workdir)
    state, step = restore_run(run)
    method, n = run.method, args.num
    # psi is traced: one compiled sampler for every threshold.
    sample = jax.jit(lambda s, r, psi: method.sample(s, r, n, truncation=psi))
    key = jax.random.key(2019)
    rows = measure(run, lambda r, psi: sample(state, r, psi), psis, key)

    result = {"workdir": args.workdir, "step": step, "num_samples_per_psi": n, "rows": rows,
              "metric": "FID Inception features (gen_jax.evaluate.sample_metrics)"}
    (out / "truncation.json").write_text(json.dumps(result, indent=2))

    ref = rows[0].get("reference")
    md = [f"# BigGAN truncation curve ({args.workdir}, step {step})", "",
          f"{n} class-balanced samples per psi (the same key), EMA generator with standing "
          f"statistics; Inception features against the {rows[0].get('num_reference')} crops of "
          f"the '{ref}' split (KID and precision/recall on {n} of them).", "", *table(rows)]
    (out / "truncation.md").write_text("\n".join(md) + "\n")

    labels = jnp.arange(method.num_classes)
    per_class = jax.jit(lambda s, r, psi: method.sample(s, r, len(labels), labels=labels, truncation=psi))
    grid = [np.asarray(per_class(state, key, jnp.float32(p))) for p in psis]
    viz.save_image_grid(out / "truncation_grid.png", np.concatenate(grid), nrow=len(labels),
                        value_range=tuple(run.config.data.value_range))
    plot_curves(out / "truncation.png", rows, f"BigGAN, {n} samples per psi")
    print("\n".join(md))


if __name__ == "__main__":
    main()
