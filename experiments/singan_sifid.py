"""SinGAN's single-image FID (SIFID) of random samples, beside reference points that give it scale.

    python -m gen_jax --config=configs/singan_brick.py --workdir=runs/singan_brick
    python experiments/singan_sifid.py --workdir=runs/singan_brick \\
        [--num 50] [--wide 2] [--others grass,gravel] [--out experiments/results/singan]

Restores the workdir's latest checkpoint and draws ``--num`` random samples at the training
size and ``--num`` at ``--wide`` times the width (every scale's noise map stretched:
SinGAN's other aspect ratios), then measures each sample's SIFID against the training
image with :func:`gen_jax.gans.singan.sifid` (per sample, so the table has the spread;
the mean is checked against one call on all samples). Reference points, measured the same
way against the same training image:

- **the image rolled / mirrored**: ``--num`` circular shifts of the training image by at
  least 1/8 of its side each way, and its left-right mirror image (the same pixels at the
  same size, rearranged: a real image of the same texture);
- **crops of the image**: ``--num`` random crops of 3/4 the side of the training image
  (real pixels; fewer positions, and only part of the image);
- **blurred image**: the image shrunk to the coarsest scale and enlarged back bicubically
  (the right layout without the fine scales' texture);
- **reconstruction**: the trained pyramid on its fixed noise maps;
- **other images**: the bundled images ``--others`` (other textures), prepared as the
  training image was (``image:<name>`` at the same ``data.image_size``).

The SIFID column is the official code's block 0 (tamarott/SinGAN ``SIFID/inception.py``:
Conv2d_1a, 2a, 2b, ending before the first max pool; :data:`gen_jax.gans.singan.SIFID_TAP`).
``--maxpool`` adds a column with pytorch-fid's block 0, which ends after that 3x3 stride-2 max
pool (``tap="MaxPool_3a"``).

Writes ``sifid.json``, ``sifid.md`` (the table), ``samples.png`` (the training image, the
reconstruction and samples at the training size), ``samples_wide.png`` (samples at
``--wide`` times the width) and ``references.png`` (the image, a rolled copy, a crop, the
blurred image, the others).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import runner  # noqa: F401  (puts the repository on sys.path)

from gen_jax import viz
from gen_jax.data import bundled
from gen_jax.errors import ConfigError
from gen_jax.gans import singan
from gen_jax.metrics.digits_features import to_unit_interval
from gen_jax.metrics.inception import load_weights
from gen_jax.train import restore_run, setup


def per_image(real: np.ndarray, images: np.ndarray, variables, tap: str = singan.SIFID_TAP) -> np.ndarray:
    """SIFID (gen_jax.gans.singan.sifid_per_image) of each image against ``real``, all in [0, 1]."""
    return np.concatenate([singan.sifid_per_image(variables, real, x[None], tap) for x in images])


def _stats(v: np.ndarray) -> dict:
    return {"mean": float(v.mean()), "std": float(v.std()), "min": float(v.min()),
            "max": float(v.max()), "n": len(v)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--num", type=int, default=50, help="samples (and crops) per row")
    ap.add_argument("--wide", type=float, default=2.0, help="width factor of the other-size samples")
    ap.add_argument("--others", default="grass,gravel", help="other bundled images (references)")
    ap.add_argument("--seed", type=int, default=2019)
    ap.add_argument("--maxpool", action="store_true",
                    help="also SIFID after the first max pool (pytorch-fid's block 0)")
    ap.add_argument("--out", default="experiments/results/singan")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    run = setup(None, args.workdir)
    if run.config.method != "singan":
        raise SystemExit(f"{args.workdir} holds a '{run.config.method}' run, not 'singan'")
    state, step = restore_run(run)
    method, cfg, n = run.method, run.config, args.num
    path = cfg.eval.get("inception_path", "")
    try:
        variables, source = load_weights(path)
    except ConfigError as e:
        raise SystemExit(f"SIFID unavailable: {e}") from None

    def unit(x):
        return to_unit_interval(np.asarray(x), cfg.data, run.info.num_levels)

    def image01(name: str) -> np.ndarray:
        """``image:<name>`` prepared as the training image (``data.image_size``), in [0, 1]."""
        d = ml_collections.ConfigDict(cfg.data.to_dict())
        d.name = name
        return np.asarray(bundled.single_image_source(d, "train").get(np.arange(1))[0][0], np.float32) / 255.0

    real = image01(cfg.data.name)                                            # (H, W, C)
    assert real.shape == run.info.shape, (real.shape, run.info.shape)
    h, w, c = real.shape
    r_same, r_wide, r_crop, r_roll = jax.random.split(jax.random.key(args.seed), 4)
    t0 = time.process_time()
    same = unit(jax.jit(lambda s, r: method.sample(s, r, n))(state, r_same))
    wide = unit(jax.jit(lambda s, r: method.sample(s, r, n, scale_h=args.wide))(state, r_wide))
    rec = unit(jax.jit(method.reconstruction)(state))
    sample_cpu = time.process_time() - t0

    side = (3 * h // 4, 3 * w // 4)
    tops = np.asarray(jax.random.randint(r_crop, (n, 2), 0, np.array([h - side[0] + 1, w - side[1] + 1])))
    crops = np.stack([real[i:i + side[0], j:j + side[1]] for i, j in tops])
    shifts = np.asarray(jax.random.randint(r_roll, (n, 2), np.array([h // 8, w // 8]),
                                           np.array([h - h // 8 + 1, w - w // 8 + 1])))
    rolled = np.stack([np.roll(real, (int(a), int(b)), (0, 1)) for a, b in shifts])
    coarse = method.shapes[0]
    blurred = np.clip(np.asarray(singan.resize(singan.resize(jnp.asarray(real[None]), coarse), (h, w))), 0, 1)
    others = {}
    for name in filter(None, args.others.split(",")):
        x = image01(f"image:{name}")
        others[name] = x.mean(-1, keepdims=True) if x.shape[-1] != c else x   # the training image's channels

    rows = [("SinGAN samples, training size", f"{h}x{w}", same),
            (f"SinGAN samples, {args.wide:g}x width", "x".join(map(str, wide.shape[1:3])), wide),
            ("reconstruction (fixed noise)", f"{h}x{w}", rec),
            ("the training image itself", f"{h}x{w}", real[None]),
            ("the training image rolled (circular shifts)", f"{h}x{w}", rolled),
            ("the training image mirrored left-right", f"{h}x{w}", real[None, :, ::-1]),
            ("random crops of the training image", f"{side[0]}x{side[1]}", crops),
            (f"the image blurred (via the coarsest scale, {coarse[0]}x{coarse[1]})", f"{h}x{w}", blurred)]
    rows += [(f"another image: {k}", "x".join(map(str, v.shape[:2])), v[None]) for k, v in others.items()]

    t0 = time.process_time()
    result = {"workdir": args.workdir, "step": step, "image": cfg.data.name, "image_shape": [h, w, c],
              "num_samples": n, "seed": args.seed, "wide": args.wide,
              "features": source, "tap": singan.SIFID_TAP, "rows": []}
    for name, size, images in rows:
        row = {"name": name, "size": size, "sifid": _stats(per_image(real, images, variables))}
        if images.shape[1:] == real.shape:  # how far from a copy: pixel RMSE to the training image
            row["rmse_to_image"] = _stats(np.sqrt(np.mean((images - real) ** 2, (1, 2, 3))))
        if args.maxpool:
            row["sifid_maxpool"] = _stats(per_image(real, images, variables, "MaxPool_3a"))
        result["rows"].append(row)
        print(json.dumps(row), flush=True)
    batch = singan.sifid(real, same, path)[0]  # one call on all samples: the mean of the per-sample values
    assert abs(batch - result["rows"][0]["sifid"]["mean"]) <= 1e-6 * max(1.0, batch), batch
    result["cpu_seconds"] = {"sampling": sample_cpu, "sifid": time.process_time() - t0}
    (out / "sifid.json").write_text(json.dumps(result, indent=2))

    head = "| images | size | n | SIFID mean ± std (official block 0) | min - max | pixel RMSE to the image |"
    sep = "| --- | --- | --- | --- | --- | --- |"
    if args.maxpool:
        head, sep = head + " SIFID after the max pool (pytorch-fid's block 0) |", sep + " --- |"
    md = [head, sep]
    for r in result["rows"]:
        s = r["sifid"]
        line = (f"| {r['name']} | {r['size']} | {s['n']} | {s['mean']:.3f} ± {s['std']:.3f} | "
                f"{s['min']:.3f} - {s['max']:.3f} | "
                + (f"{r['rmse_to_image']['mean']:.3f} |" if "rmse_to_image" in r else "- |"))
        if args.maxpool:
            line += f" {r['sifid_maxpool']['mean']:.3f} ± {r['sifid_maxpool']['std']:.3f} |"
        md.append(line)
    (out / "sifid.md").write_text("\n".join(md) + "\n")

    viz.save_image_grid(out / "samples.png", np.concatenate([real[None], rec, same[:14]]), nrow=8,
                        value_range=(0.0, 1.0), upscale=2)
    viz.save_image_grid(out / "samples_wide.png", wide[:8], nrow=4, value_range=(0.0, 1.0), upscale=2)
    pad = np.zeros((len(crops[:1]), h, w, c), np.float32)
    pad[:, :side[0], :side[1]] = crops[:1]
    viz.save_image_grid(out / "references.png", np.concatenate([real[None], rolled[:1], pad, blurred, *(
        v[None] for v in others.values())]), nrow=4 + len(others), value_range=(0.0, 1.0), upscale=2)
    print("\n".join(md))


if __name__ == "__main__":
    main()
