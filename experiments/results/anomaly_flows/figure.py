"""The anomaly-map figure of experiments/results/anomaly_flows/README.md: per category, test
crops (one good, one of each defect type), their ground-truth masks and the anomaly map of
each trained run given (min-max scaled per map, so each shows where it peaks).

    PYTHONPATH=. python experiments/results/anomaly_flows/figure.py --out=FIG.png \\
        --run=PaDiM:RUNS/padim_{category} --run=FastFlow:RUNS/fastflow_{category}
"""

import argparse

import jax
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from gen_jax.anomaly import benchmark  # noqa: E402
from gen_jax.checkpoint import load_trained  # noqa: E402
from gen_jax.data import load_split  # noqa: E402


def pick(test: benchmark.DefectTestSet) -> np.ndarray:
    """The first good crop and the first crop of each defect type."""
    kinds = (benchmark.GOOD, *benchmark.DEFECT_TYPES)
    return np.array([int(np.argmax(test.defect_type == t)) for t in kinds])


def main(runs: list[tuple[str, str]], out: str, categories: tuple[str, ...]) -> None:
    rows = 2 + len(runs)
    cols = 1 + len(benchmark.DEFECT_TYPES)
    fig, axes = plt.subplots(rows * len(categories), cols, figsize=(1.6 * cols, 1.6 * rows * len(categories)))
    for ci, category in enumerate(categories):
        test = benchmark.test_set(category)
        idx = pick(test)
        base = ci * rows
        for j, i in enumerate(idx):
            axes[base, j].imshow(test.x[i, ..., 0], cmap="gray", vmin=0, vmax=255)
            axes[base, j].set_title(str(test.defect_type[i]), fontsize=8)
            axes[base + 1, j].imshow(test.mask[i], cmap="gray", vmin=0, vmax=1)
        axes[base, 0].set_ylabel(category, fontsize=8)
        axes[base + 1, 0].set_ylabel("mask", fontsize=8)
        for ri, (label, pattern) in enumerate(runs):
            method, state, config = load_trained(pattern.format(category=category))
            x = load_split(config, "test")[0][idx]
            maps = np.asarray(jax.jit(method.anomaly_map)(state, x, jax.random.key(0)))
            for j, m in enumerate(maps):
                axes[base + 2 + ri, j].imshow((m - m.min()) / max(m.max() - m.min(), 1e-12), cmap="inferno")
            axes[base + 2 + ri, 0].set_ylabel(label, fontsize=8)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    print("wrote", out)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--run", action="append", required=True, help="LABEL:WORKDIR ({category} filled in)")
    parser.add_argument("--out", required=True)
    parser.add_argument("--categories", default=",".join(benchmark.CATEGORIES))
    args = parser.parse_args()
    main([tuple(r.split(":", 1)) for r in args.run], args.out, tuple(args.categories.split(",")))
