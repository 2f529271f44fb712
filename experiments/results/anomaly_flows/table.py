"""Prints the markdown tables of experiments/results/anomaly_flows/README.md from the
evaluation JSONs (``python -m gen_jax.anomaly.evaluate --out=...``): this folder's
``<method>_<category>_s<sigma>.json`` (PaDiM, FastFlow, DifferNet; ``fastflow_nll``: FastFlow's
"nll" map of the same runs) and, for comparison,
experiments/results/anomaly_gan/``<method>_brick_sigma<sigma>.json`` (GANomaly, f-AnoGAN).

    python experiments/results/anomaly_flows/table.py
"""

import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
GAN = HERE.parent / "anomaly_gan"
CATEGORIES = ("brick", "grass", "gravel")
METRICS = ("image_auroc", "pixel_auroc", "pro")
METHODS = (("PaDiM", "padim"), ("FastFlow", "fastflow"), ("DifferNet", "differnet"))
GANS = (("GANomaly", "ganomaly"), ("f-AnoGAN", "fanogan"))


def load(method: str, category: str, sigma: int) -> dict | None:
    path = HERE / f"{method}_{category}_s{sigma}.json"
    if not path.exists():
        path = GAN / f"{method}_{category}_sigma{sigma}.json"
    return json.loads(path.read_text()) if path.exists() else None


def cell(r: dict | None, where: str = "overall") -> str:
    if r is None:
        return "-"
    d = r["overall"] if where == "overall" else r["per_type"][where]
    return " / ".join(f"{d[m]:.3f}" if m in d else "-" for m in METRICS)


def overall_table() -> None:
    cols = [f"{c}" for c in CATEGORIES] + ["mean"]
    print("image AUROC / pixel AUROC / PRO (σ: Gaussian smoothing of the maps, px)\n")
    print("| method | σ | " + " | ".join(cols) + " |")
    print("|" + " --- |" * (3 + len(CATEGORIES)))
    for label, method in (*METHODS, *GANS):
        for sigma in (0, 4):
            rs = [load(method, c, sigma) for c in CATEGORIES]
            if all(r is None for r in rs):
                continue
            means = []
            for m in METRICS:
                vals = [r["overall"][m] for r in rs if r is not None and m in r["overall"]]
                means.append(f"{sum(vals) / len(vals):.3f}" if len(vals) == len(CATEGORIES) else "-")
            cells = " | ".join(cell(r) for r in rs)
            print(f"| {label} | {sigma} | {cells} | " + " / ".join(means) + " |")


def per_type_table(sigma: int) -> None:
    first = next(r for c in CATEGORIES if (r := load("padim", c, sigma)) is not None)
    types = list(first["per_type"])
    print(f"\nper defect type, σ = {sigma} (DifferNet: σ = 0, image AUROC only)\n")
    print("| method | category | " + " | ".join(types) + " |")
    print("|" + " --- |" * (2 + len(types)))
    for label, method in METHODS:
        for c in CATEGORIES:
            r = load(method, c, 0 if method == "differnet" else sigma)
            if r is not None:
                print(f"| {label} | {c} | " + " | ".join(cell(r, t) for t in types) + " |")


def nll_map_table() -> None:
    print("\n| FastFlow map | σ | " + " | ".join(CATEGORIES) + " |")
    print("|" + " --- |" * (2 + len(CATEGORIES)))
    for label, method in (("prob (default)", "fastflow"), ("nll", "fastflow_nll")):
        print(f"| {label} | 4 | " + " | ".join(cell(load(method, c, 4)) for c in CATEGORIES) + " |")


if __name__ == "__main__":
    overall_table()
    nll_map_table()
    per_type_table(4)
