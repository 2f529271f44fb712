"""Merges the JSONs of drive.py's runs into one_class_digits.{json,md} of this directory, with
the earlier rows of the same protocol copied from their own JSONs.

    python experiments/results/anomaly_digits/table.py --workdir W RUN.json [RUN.json ...]

``--workdir``: the runs' --workdir, whose experiment_timing.json files (the wall-clock of
each run's train_and_evaluate) give the training time per method; the JSONs' own seconds
include scoring and, for a rerun that reused its trained workdirs, only that.
"""

import argparse
import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
EARLIER = ["experiments/one_class_digits.json", "experiments/results/anomaly_gan/one_class_digits.json"]
BASELINES = ("mean image (distance)", "PCA, 8 components")  # every run recomputes them
CLASSES = [str(k) for k in range(10)]


TEXT = """# One-class anomaly detection on 8x8 digits: DRAEM and the frozen-feature methods (AUROC)

The protocol of `experiments/one_class_digits.py`: for each digit k, train (or fit) on the ~125
training digits of class k (`data.classes=(k,)`), score all 360 test digits with the Method's
`anomaly_score`, AUROC of the other classes (positives) against class k (negatives); seed 0. The
models are the `:digits` variants of `configs/{draem,padim,feature_knn,differnet,fastflow}_brick.py`,
driven by `drive.py` (one_class_digits.py with its MODELS replaced, as the GANomaly / f-AnoGAN
rows were made), on the shared 2-core CPU (load 5-8 from other jobs during these runs). Made by
`table.py` from the runs' JSONs; the second column's wall-clock is the sum over the ten
runs of `train_and_evaluate` (compilation and final evaluation included).

{NEW_ROWS}
- DRAEM: the brick config's 3-level nets (16 / 32 / 64 channels, 8 -> 4 -> 2) on [0, 1] digits;
  Perlin lattices of 1, 2, 4 cells per axis; anomaly sources the bundled photos at 16 px; the
  SSIM loss with a 7 px window (11 px does not fit 8 px images: `gen_jax/anomaly/draem.py`,
  `ssim_window`); image score the maximum of the map (`score_window` 1). 600 steps of 64.
- PaDiM, feature kNN: closed-form fits of the class's training digits, so `--steps 1` (the
  one train step only reports; the configs' own `num_steps`). Features: FID-Inception
  Conv2d_4a_3x3 of the digit resized bilinearly to 75 px (Inception's smallest input; a 15x15
  map), 64 random channels. kNN: 8 channel subsets, border 2 (11x11 interior cells), a bank
  of up to 16384 cells (about all ~15,000 interior cells of 125 digits), k = 1, no blur.
- FastFlow: the same features, 8 couplings of 32 channels; 600 steps of 16 (the config's
  batch: at 64 it ran 0.75-0.8 steps/s on the loaded CPU, 13 min per class).
- DifferNet: Mixed_5d + Mixed_6e, pooled, at one input size, 75 px (the brick config's
  128 / 96 / 75 px cost 6.5x per step); 8 couplings of 256; 600 steps of 16 (the config's
  batch); score: the mean NLL over the 8 rotations / reflections.

Commands (repository root; the runs used a copy of `drive.py` under /tmp, the same MODELS):

```bash
W=/tmp/D/oc O=/tmp/D/out
python experiments/results/anomaly_digits/drive.py --steps 1 --models PaDiM "feature kNN" \\
    --workdir $W --out $O/closed        # 8.5 min wall, 3.6 CPU-min
python experiments/results/anomaly_digits/drive.py --steps 600 --models DRAEM \\
    --workdir $W --out $O/draem         # reused the 10 trained runs (below): 0.9 min
python experiments/results/anomaly_digits/drive.py --steps 600 --batch_size 16 \\
    --models FastFlow DifferNet --workdir $W --out $O/flows   # 37.6 min wall, 29.2 CPU-min
python experiments/results/anomaly_digits/table.py --workdir $W $O/closed.json $O/draem.json $O/flows.json
```

DRAEM's ten runs were trained by `drive.py --steps 600 --models DRAEM FastFlow` (batch 64):
classes 0-8 in a first invocation, which stopped at class 9 (a test's planted bug was edited
into draem_brick.py while it read the config), class 9 in a second, stopped during FastFlow
at batch 64 (too slow, above). The command above reused both (the runtime checks each
finished run's config) and scored them again: the AUROCs those invocations printed.

Earlier rows of the same protocol (600 steps, batch 64, seed 0), copied from their JSONs
(`mean image` and `PCA` are recomputed by every run; these runs gave the same values):

{EARLIER_ROWS}
Reading: digits one-class is an easy protocol (PCA-8: 0.995). No new method reaches the AE
(0.997) or PCA. PaDiM (0.988) is level with the VAE and FastFlow (0.982) with MAE /
GANomaly; feature kNN (0.968) and DifferNet (0.943) are near the mean-image baseline (0.957);
DRAEM (0.874) is below it: it learns to segment photo textures pasted on a digit, and another
digit class carries none. The feature methods see a 75 px bilinear blow-up of 64 pixels
through a network trained on photos; one setting each, none chosen on these test digits.
"""


def line(name: str, row: dict, extra: str) -> str:
    pc = {str(k): v for k, v in row["per_class"].items()}
    cells = " | ".join(f"{pc[k]:.3f}" for k in CLASSES)
    return f"| {name} | {extra} | {cells} | **{row['mean']:.3f}** |\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+")
    parser.add_argument("--workdir", required=True)
    args = parser.parse_args()
    new, meta = {}, {}
    for path in args.runs:
        d = json.loads(Path(path).read_text())
        m = meta[Path(path).stem] = d["meta"]
        for name, row in d["results"].items():
            if name in BASELINES:
                continue
            stem = Path(row["config"].split(":")[0]).stem
            run = f"{m['steps']}steps_batch{m['batch_size']}_seed{m['seed']}"
            dirs = [Path(args.workdir) / f"{stem}_class{k}_{run}" for k in m["classes"]]
            train_s = sum(json.loads((x / "experiment_timing.json").read_text())["seconds"] for x in dirs)
            new[name] = {**row, "steps": m["steps"], "batch_size": m["batch_size"], "train_seconds": train_s}
    earlier = {}
    for path in EARLIER:
        for name, row in json.loads((REPO / path).read_text())["results"].items():
            earlier.setdefault(name, {**row, "source": path})
    head = "| model | {} | " + " | ".join(CLASSES) + " | mean |\n" + "| --- " * 13 + "|\n"
    rows = head.format("steps, batch; train wall s (10 runs)") + "".join(
        line(n, r, f"{r['steps']}, {r['batch_size']}; {r['train_seconds']:.0f}")
    for n, r in new.items())
    old = head.format("source") + "".join(line(n, r, f"`{r['source']}`") for n, r in earlier.items())
    out = HERE / "one_class_digits"
    table = {"meta": meta, "results": new, "earlier": earlier}
    out.with_suffix(".json").write_text(json.dumps(table, indent=2))
    out.with_suffix(".md").write_text(TEXT.replace("{NEW_ROWS}", rows).replace("{EARLIER_ROWS}", old))
    print(out.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
