"""SR3 super-resolution 4x4 -> 8x8 on digits, and a two-stage cascade (issue 18, part 2).

Train SR3 first with its config's defaults (the pixel DDPM too, unless ``runs/ddpm_digits``
already holds configs/ddpm_digits.py's run), then run this script from the repository root:

    python -m gen_jax --config=configs/sr3_digits.py --workdir=runs/sr3_digits
    python -m gen_jax --mode=eval --workdir=runs/sr3_digits
    python experiments/sr3_digits.py [--num 1000]

Measured here:

1. Super-resolution of the 360 test digits (their 2x2-average-pooled 4x4 versions): SR3
   (one sample per image, and the mean of ``--k`` samples: an estimate of the posterior
   mean E[x | low]), bicubic and nearest upsampling, and pix2pix's "lowres" task
   (configs/pix2pix_digits.py with model.task=lowres, trained here through the runtime).
   PSNR and SSIM against the true digits (range 2 in (-1, 1), the same as 1 in [0, 1]; SSIM
   with a 7x7 Gaussian window, σ = 1.5), ``lowres_rmse`` (how far the output, pooled
   again, is from the input: [0, 1] units), the spread of SR3's samples, and the digits
   metrics of the outputs (gen_jax.metrics.digits_metrics against the 1257 training
   digits, n = 360 as the real test split's row).
2. A cascade at equal n (``--num``): the base model is a DDPM over 4x4 digits (the
   training split pooled 2x2; configs/ddpm_digits.py's Method and training, its MLP
   denoiser over the 16 pixels or its UNet with one resolution level, ``--base_steps``
   steps, trained here with the runtime's step function), followed by SR3 4 -> 8;
   against the pixel-space DDPM of
   configs/ddpm_digits.py (8x8, the same training steps and sampler); the same bases
   followed by bicubic / nearest upsampling instead of SR3; SR3 on the pooled pixel-DDPM
   samples (a base whose low-resolution marginal is the pixel model's); and SR3 on the
   real pooled test digits (the cascade with a perfect base: 360 inputs repeated to n,
   one sample each). Digits metrics against the training digits, NFE, ms/sample.

Writes experiments/results/sr3_digits/results.json, tables.md and samples.png.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import runner

from gen_jax import checkpoint, parallel, viz
from gen_jax import train as train_lib
from gen_jax.anomaly.ssim import ssim
from gen_jax.config import config_to_json
from gen_jax.data import DataInfo, load_split
from gen_jax.diffusion.ddpm import DDPM
from gen_jax.diffusion.sr3 import downsample, psnr, upsample
from gen_jax.errors import CheckpointError
from gen_jax.metrics import digits_metrics
from gen_jax.metrics.digits_features import digits_split01

REPO = runner.REPO
METRICS = ("digits_fd", "kid", "precision", "recall", "density", "coverage", "classifier_score",
           "class_share_tv")
FACTOR = 2


def to01(x) -> np.ndarray:
    """(-1, 1) images -> [0, 1] (the digits configs' value range)."""
    return np.clip((np.asarray(x, np.float32) + 1.0) / 2.0, 0.0, 1.0)


def timed(fn, *args) -> tuple[np.ndarray, float]:
    """``fn(*args)`` once to compile, then again timed: (output, seconds of the second call)."""
    jax.block_until_ready(fn(*args))
    t0 = time.perf_counter()
    out = jax.block_until_ready(fn(*args))
    return np.asarray(out), time.perf_counter() - t0


# -- the models -----------------------------------------------------------------------


def load_or_train(config_file: str, overrides: dict, workdir: Path, fallback: Path):
    """(method, state, workdir) of ``config_file``'s run: the finished run in ``workdir``
    when it holds exactly this config (read only), else trained (or reused) in ``fallback``."""
    config = runner.config(config_file, overrides)
    if (workdir / "config.json").is_file():
        ckpt = checkpoint.Checkpointer(workdir, async_save=False, create=False)
        try:
            if ckpt.latest_step() == config.train.num_steps:
                ckpt.check_config(config)
                method, state, _ = checkpoint.load_trained(workdir)
                return method, state, workdir
        except CheckpointError as e:
            print(f"{workdir} holds another run ({e}); training in {fallback}")
        finally:
            ckpt.close()
    method, state, _, _ = runner.train_and_load(config, fallback)
    return method, state, fallback


def base_config(steps: int, arch: str):
    """configs/ddpm_digits.py with one resolution level (4x4 maps, attention there) for
    ``arch`` = "unet", or its MLP denoiser (``arch`` = "mlp": width 256, 3 blocks) over the
    16 flattened pixels."""
    return runner.config("ddpm_digits.py", {"model.ch_mult": (1,), "model.attn_resolutions": (4,),
                                            "model.arch": arch, "train.num_steps": steps})


def train_base(config, x4_train: np.ndarray, root: Path):
    """The 4x4 base DDPM: configs/ddpm_digits.py's Method on the pooled training digits, each
    step the runtime's guarded, jitted step (train.guarded_step, parallel.jit_train_step) on a
    batch drawn without replacement per epoch, its key folded from the train key by step, as
    train._loop does. Reused from ``root/state.msgpack`` when trained with this config."""
    info = DataInfo("digits:4x4", "image", x4_train.shape[1:], 17, 10)
    method = DDPM(config, info)
    mesh = parallel.make_mesh()
    keys = dict(zip(("init", "train"), jax.random.split(jax.random.key(config.seed)), strict=True))
    b = config.data.batch_size
    state = jax.jit(method.init)(keys["init"], {"x": jnp.asarray(x4_train[:b])})
    meta_path, state_path = root / "meta.json", root / "state.msgpack"
    meta = {"config": json.loads(config_to_json(config)), "num_train": len(x4_train)}
    if meta_path.is_file() and state_path.is_file():
        saved = json.loads(meta_path.read_text())
        if {k: saved[k] for k in meta} == meta:
            return method, flax.serialization.from_bytes(state, state_path.read_bytes()), saved["seconds"]
    step_fn = parallel.jit_train_step(train_lib.guarded_step(method), mesh)
    rng = np.random.default_rng(config.seed)
    order: list[int] = []
    t0 = time.perf_counter()
    for step in range(config.train.num_steps):
        if len(order) < b:
            order += list(rng.permutation(len(x4_train)))
        idx, order = order[:b], order[b:]
        state, metrics = step_fn(state, parallel.shard_batch({"x": x4_train[idx]}, mesh),
                                 jax.random.fold_in(keys["train"], step))
        if (step + 1) % 500 == 0:
            print(f"base 4x4 DDPM step {step + 1}: loss {float(metrics['loss']):.4f}", flush=True)
    seconds = time.perf_counter() - t0
    root.mkdir(parents=True, exist_ok=True)
    state_path.write_bytes(flax.serialization.to_bytes(jax.device_get(state)))
    meta_path.write_text(json.dumps({**meta, "seconds": seconds}))
    return method, state, seconds


# -- measurements -----------------------------------------------------------------------


def sr_row(name: str, y: np.ndarray, x: np.ndarray, train01: np.ndarray) -> dict:
    """PSNR, SSIM and low-resolution consistency of outputs ``y`` of the test digits ``x``
    (both in (-1, 1)), and the outputs' digits metrics."""
    y, x = jnp.asarray(y), jnp.asarray(x)
    low_err = downsample(y, FACTOR) - downsample(x, FACTOR)
    return {"name": name, "psnr": float(psnr(y, x, 2.0).mean()), "ssim": float(ssim(y, x, 2.0, 7).mean()),
            "lowres_rmse01": float(jnp.sqrt(jnp.mean(low_err**2)) / 2.0),
            **{k: v for k, v in digits_metrics(to01(y), train01).items() if k in METRICS}}


def gen_row(name: str, y: np.ndarray, train01: np.ndarray, nfe: str, seconds: float | None,
            low: np.ndarray | None = None) -> dict:
    """Digits metrics of generated images ``y`` (n of them), the NFE and ms/sample, and, when
    they came from low-resolution images ``low``, how far they pool from those."""
    out = {"name": name, "n": len(y), "nfe": nfe,
           "ms_per_sample": None if seconds is None else 1000 * seconds / len(y),
           **{k: v for k, v in digits_metrics(to01(y), train01).items() if k in METRICS}}
    if low is not None:
        out["lowres_rmse01"] = float(np.sqrt(np.mean((np.asarray(downsample(jnp.asarray(y), FACTOR))
                                                      - low) ** 2)) / 2.0)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sr3", default=str(REPO / "runs" / "sr3_digits"), help="the trained SR3 workdir")
    parser.add_argument("--ddpm", default=str(REPO / "runs" / "ddpm_digits"),
                        help="configs/ddpm_digits.py's finished run (read only); trained under "
                             "--workdir when it holds something else")
    parser.add_argument("--num", type=int, default=1000, help="samples per generative row")
    parser.add_argument("--k", type=int, default=8, help="SR3 samples per test digit")
    parser.add_argument("--base_steps", type=int, default=2000, help="training steps of the 4x4 bases")
    parser.add_argument("--base_archs", default="mlp,unet",
                        help="the 4x4 base DDPMs' denoisers (comma-separated: mlp, unet)")
    parser.add_argument("--pix2pix_steps", type=int, default=3000,
                        help="training steps of pix2pix (3000 = configs/pix2pix_digits.py's)")
    parser.add_argument("--seed", type=int, default=0)
    runner.add_workdir_flag(parser, "sr3_digits")
    parser.add_argument("--out", default=str(REPO / "experiments" / "results" / "sr3_digits"))
    args = parser.parse_args(argv)
    root, out = Path(args.workdir), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    n, key = args.num, jax.random.key(args.seed)
    k_sr, k_p2p, k_base, k_casc, k_pix, k_pooled, k_real = jax.random.split(key, 7)

    sr3, sr3_state, sr3_cfg = checkpoint.load_trained(args.sr3)
    train01, _ = digits_split01("train")
    x_test, _ = load_split(sr3_cfg, "test")
    x_train, _ = load_split(sr3_cfg, "train")
    low_test = np.asarray(downsample(jnp.asarray(x_test), FACTOR))
    translate = jax.jit(lambda s, lo, r: sr3.translate(s, lo, r))

    # 1. super-resolution of the test split
    many, sec_many = timed(translate, sr3_state, jnp.tile(low_test, (args.k, 1, 1, 1)), k_sr)
    many = many.reshape(args.k, *x_test.shape)
    p2p_dir = runner.run_dir(root, "pix2pix_lowres", f"{args.pix2pix_steps}steps")
    p2p_overrides = {"model.task": "lowres", "model.lowres_factor": FACTOR,
                     "train.num_steps": args.pix2pix_steps}
    pix2pix, p2p_state, _ = load_or_train("pix2pix_digits.py", p2p_overrides, p2p_dir, p2p_dir)
    p2p_out = np.asarray(jax.jit(pix2pix.translate)(p2p_state, pix2pix.make_pair(jnp.asarray(x_test))[0],
                                                    k_p2p))
    size = x_test.shape[1:3]
    outputs = {"bicubic": np.clip(np.asarray(upsample(jnp.asarray(low_test), size, "bicubic")), -1, 1),
               "nearest": np.asarray(upsample(jnp.asarray(low_test), size, "nearest")),
               "pix2pix (lowres task)": p2p_out, "SR3, one sample": many[0],
               f"SR3, mean of {args.k} samples": many.mean(0)}
    sr_rows = [{"name": "real: test split", **{k: v for k, v in digits_metrics(to01(x_test), train01).items()
                                                if k in METRICS}}]
    sr_rows += [sr_row(name, y, x_test, train01) for name, y in outputs.items()]
    spread01 = float(many.std(0).mean() / 2.0)  # per-pixel std over the k samples, [0, 1] units
    print(json.dumps(sr_rows, indent=1), flush=True)

    # 2. the cascade
    x4_train = np.asarray(downsample(jnp.asarray(x_train), FACTOR))
    ddpm, ddpm_state, ddpm_dir = load_or_train("ddpm_digits.py", {}, Path(args.ddpm), root / "ddpm_digits")
    pixel, sec_pix = timed(jax.jit(lambda s, r: ddpm.sample(s, r, n)), ddpm_state, k_pix)
    steps = sr3_cfg.sampler.num_steps  # NFE: SR3, the bases and the pixel DDPM (DPM-Solver++(2M) each)
    p_steps = ddpm.config.sampler.num_steps
    gen_rows = [gen_row("real: test split (n=360)", x_test, train01, "-", None),
                gen_row("pixel DDPM 8x8 (configs/ddpm_digits.py)", pixel, train01, f"{p_steps}", sec_pix)]
    bases, base_seconds = {}, {}
    for arch in args.base_archs.split(","):
        base, base_state, base_seconds[arch] = train_base(
            base_config(args.base_steps, arch), x4_train,
            runner.run_dir(root, "base4x4_ddpm", arch, f"{args.base_steps}steps"))
        base_low, sec_base = timed(jax.jit(lambda s, r, base=base: base.sample(s, r, n)), base_state, k_base)
        cascade, sec_casc = timed(translate, sr3_state, base_low, k_casc)
        bases[arch] = (base_low, cascade)
        b_steps, name = base.config.sampler.num_steps, f"4x4 DDPM ({arch.upper()})"
        gen_rows += [
            gen_row(f"cascade: {name} -> SR3", cascade, train01, f"{b_steps} + {steps}", sec_base + sec_casc,
                    base_low),
            gen_row(f"{name} -> bicubic", np.clip(upsample(jnp.asarray(base_low), size, "bicubic"), -1, 1),
                    train01, f"{b_steps}", sec_base),
            gen_row(f"{name} -> nearest", upsample(jnp.asarray(base_low), size, "nearest"), train01,
                    f"{b_steps}", sec_base)]
    pooled_low = np.asarray(downsample(jnp.asarray(pixel), FACTOR))
    pooled_sr = np.asarray(translate(sr3_state, pooled_low, k_pooled))
    real_low = np.resize(low_test, (n, *low_test.shape[1:]))
    real_sr = np.asarray(translate(sr3_state, real_low, k_real))
    gen_rows += [
        gen_row("pixel DDPM pooled to 4x4 -> SR3", pooled_sr, train01, f"{p_steps} + {steps}", None,
                pooled_low),
        gen_row("real test digits pooled to 4x4 -> SR3", real_sr, train01, f"{steps}", None, real_low)]
    print(json.dumps(gen_rows, indent=1), flush=True)

    result = {"n": n, "k": args.k, "seed": args.seed, "sr3_workdir": args.sr3,
              "sr3_step": int(sr3_state.step), "ddpm_workdir": str(ddpm_dir),
              "ddpm_step": int(ddpm_state.step), "pix2pix_workdir": str(p2p_dir),
              "pix2pix_step": int(p2p_state.step), "base_steps": args.base_steps,
              "base_archs": args.base_archs, "base_train_seconds": base_seconds, "sr3_spread01": spread01,
              "sr3_ms_per_sample_test": 1000 * sec_many / (args.k * len(x_test)),
              "super_resolution": sr_rows, "cascade": gen_rows}
    (out / "results.json").write_text(json.dumps(result, indent=2, default=float))
    write_tables(out / "tables.md", result)
    write_figure(out / "samples.png", x_test, low_test, outputs, many, pixel, bases)
    print(f"wrote {out}/results.json, tables.md and samples.png")


def _f(v, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def write_tables(path: Path, r: dict) -> None:
    head = "| {} | digits-FD | KID | precision | recall | density | coverage | cls. score | class TV |"
    cols = lambda m: (f"{_f(m.get('digits_fd'), '.1f')} | {_f(m.get('kid'), '.2f')} | "
                      f"{_f(m.get('precision'), '.3f')} | {_f(m.get('recall'), '.3f')} | "
                      f"{_f(m.get('density'), '.3f')} | {_f(m.get('coverage'), '.3f')} | "
                      f"{_f(m.get('classifier_score'), '.2f')} | {_f(m.get('class_share_tv'), '.3f')} |")
    lines = ["## Super-resolution of the 360 test digits (4x4 -> 8x8)", "",
             "| output | PSNR dB | SSIM | low-res RMSE | digits-FD | KID | precision | recall | density | "
             "coverage | cls. score | class TV |", "|" + "---|" * 12]
    for m in r["super_resolution"]:
        lines.append(f"| {m['name']} | {_f(m.get('psnr'), '.2f')} | {_f(m.get('ssim'), '.3f')} | "
                     f"{_f(m.get('lowres_rmse01'), '.4f')} | " + cols(m))
    lines += ["", f"SR3 spread: per-pixel std over {r['k']} samples, mean over pixels: "
              f"{r['sr3_spread01']:.4f} ([0, 1] units).", "",
              f"## Cascade vs pixel-space DDPM (n = {r['n']} per row)", "",
              head.format("model") + " NFE | ms/sample | low-res RMSE |", "|" + "---|" * 12]
    for m in r["cascade"]:
        lines.append(f"| {m['name']} | " + cols(m) + f" {m['nfe']} | {_f(m.get('ms_per_sample'), '.2f')} | "
                     f"{_f(m.get('lowres_rmse01'), '.4f')} |")
    path.write_text("\n".join(lines) + "\n")


def write_figure(path: Path, x, low, outputs: dict, many, pixel, bases: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    show = 12
    near = np.asarray(upsample(jnp.asarray(low[:show]), x.shape[1:3], "nearest"))
    sr_cols = [("8x8 truth", x[:show]), ("4x4 input", near),
               *[(k.split(" (")[0], v[:show]) for k, v in outputs.items() if not k.startswith("SR3")],
               *[(f"SR3 #{i + 1}", many[i, :show]) for i in range(min(3, len(many)))],
               ("SR3 mean", many.mean(0)[:show])]
    gen = [("pixel DDPM", pixel[:36])]
    for arch, (base_low, cascade) in bases.items():
        base_near = np.asarray(upsample(jnp.asarray(base_low[:36]), x.shape[1:3], "nearest"))
        gen += [(f"4x4 {arch.upper()} base", base_near), (f"{arch.upper()} base -> SR3", cascade[:36])]
    fig, axes = plt.subplots(1, 2, figsize=(18, 6), gridspec_kw={"width_ratios": [1.0, 2.6]})
    cols = np.stack([c for _, c in sr_cols], 1).reshape(-1, *x.shape[1:])  # row = one test digit
    axes[0].imshow(viz.image_grid(cols, nrow=len(sr_cols), value_range=(-1, 1), upscale=3)[..., 0],
                   cmap="gray", vmin=0, vmax=255)
    axes[0].set_title("test digits: " + " | ".join(name for name, _ in sr_cols), fontsize=7)
    panels = [viz.image_grid(g, nrow=6, value_range=(-1, 1), upscale=3)[..., 0] for _, g in gen]
    gap = np.full((panels[0].shape[0], 12), 255, np.uint8)
    axes[1].imshow(np.concatenate([p for pan in panels for p in (pan, gap)][:-1], 1), cmap="gray",
                   vmin=0, vmax=255)
    axes[1].set_title("    |    ".join(name for name, _ in gen), fontsize=9)
    for ax in axes:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    main()
