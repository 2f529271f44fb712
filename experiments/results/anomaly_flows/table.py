"""Prints the markdown tables of experiments/results/anomaly_flows/README.md from the
evaluation JSONs (``python -m gen_jax.anomaly.evaluate --out=...``): this folder's
``<method>_<category>_s<sigma>.json`` (PaDiM, FastFlow, DifferNet, the nearest-neighbour
distance ``feature_knn``; ``fastflow_nll``: FastFlow's "nll" map of the same runs) and, for
comparison, experiments/results/anomaly_gan/``<method>_brick_sigma<sigma>.json`` (GANomaly,
f-AnoGAN); and the validation table of the nearest-neighbour settings from
``val/feature_knn_<variant>_<category>.json`` (``evaluate --split=val``).

    python experiments/results/anomaly_flows/table.py
"""

import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
GAN = HERE.parent / "anomaly_gan"
CATEGORIES = ("brick", "grass", "gravel")
METRICS = ("image_auroc", "pixel_auroc", "pro")
METHODS = (("PaDiM", "padim"), ("FastFlow", "fastflow"), ("DifferNet", "differnet"),
           ("nearest neighbour", "feature_knn"))
# the nearest-neighbour settings compared on the validation defects (variant, its overrides)
KNN_VARIANTS = (("b0", "knn.border=0 (all locations)"),
                ("4a", "Conv2d_4a_3x3, one subset of 64 channels"),
                ("4a_all", "Conv2d_4a_3x3, all 192 channels"),
                ("4a_x4", "Conv2d_4a_3x3, 4 subsets of 64 (knn.num_subsets=4)"),
                ("4a_x8", "Conv2d_4a_3x3, 8 subsets of 64 (**the default**)"),
                ("4a5b", "Conv2d_4a_3x3 + Mixed_5b, one subset of 64 each"),
                ("4a5b_x4", "Conv2d_4a_3x3 + Mixed_5b, 4 subsets of 64 each"))
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


def knn_val_table() -> None:
    print("\nnearest neighbour on the validation defects (σ = 4; image AUROC / pixel AUROC / PRO)\n")
    print("| features | " + " | ".join(CATEGORIES) + " | mean |")
    print("|" + " --- |" * (2 + len(CATEGORIES)))
    for variant, label in KNN_VARIANTS:
        rs = []
        for c in CATEGORIES:
            path = HERE / "val" / f"feature_knn_{variant}_{c}.json"
            rs.append(json.loads(path.read_text()) if path.exists() else None)
        if all(r is None for r in rs):
            continue
        mean = "-"
        if all(r is not None for r in rs):
            mean = " / ".join(f"{sum(r['overall'][m] for r in rs) / len(rs):.3f}" for m in METRICS)
        print(f"| {label} | " + " | ".join(cell(r) for r in rs) + f" | {mean} |")


if __name__ == "__main__":
    overall_table()
    nll_map_table()
    per_type_table(4)
    knn_val_table()
