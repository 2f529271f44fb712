"""Which conv VAE generalises on the 1257 training digits? Validation -ELBO per variant.

    python experiments/vae_digits_study.py [--steps 1500] [--out experiments/vae_digits_study.json]

Trains each variant of configs/vae_digits.py for --steps steps (seed 0) through
the runtime (gen_jax.train.train_and_evaluate), each in its own workdir under
--workdir (a rerun reuses finished runs), and reports the validation -ELBO (nats
per example on the 17-level data) every --steps/3 steps, read from the run's
metrics.jsonl. This study chose the default job's model (see RESULTS.md).
"""

from __future__ import annotations

import argparse
import json

import runner

VARIANTS = {
    "latent16_ch32-64_std-network": {"model.latent_dim": 16, "model.channels": (32, 64),
                                     "model.hidden_sizes": (256,)},
    "latent16_ch32-64_std-learned": {"model.latent_dim": 16, "model.channels": (32, 64),
                                     "model.hidden_sizes": (256,), "model.decoder_std": "learned"},
    "latent8_ch16-32_std-network": {"model.upsample": "pixel_shuffle"},
    "latent8_ch16-32_std-learned": {"model.decoder_std": "learned"},
    "latent8_ch16-32_std-network_resize": {"model.upsample": "resize"},
    "latent8_ch16-32_std-network_transpose": {"model.upsample": "transpose"},
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--out", default="experiments/vae_digits_study.json")
    parser.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=list(VARIANTS),
                        help="a subset of the variants (default: all)")
    runner.add_workdir_flag(parser, "vae_digits_study")
    args = parser.parse_args(argv)
    every = max(args.steps // 3, 1)
    results = {}
    for name in args.variants:
        config = runner.config("vae_digits.py", {
            "train.num_steps": args.steps, "train.eval_every": every,
            "train.checkpoint_every": args.steps}, VARIANTS[name])
        workdir = runner.run_dir(args.workdir, name, f"{args.steps}steps")
        seconds = runner.train(config, workdir)["seconds"]
        records = [json.loads(line) for line in open(workdir / "metrics.jsonl")]
        val = {r["step"]: r["nelbo"] for r in records if r["split"] == "val"}
        trn = {r["step"]: r["nelbo"] for r in records if r["split"] == "train" and r["step"] in val}
        results[name] = {"val_nelbo": val, "train_nelbo": trn, "seconds": seconds}
        print(name, f"{seconds:.0f}s", {s: (round(trn.get(s, float('nan')), 1), round(v, 1))
                                         for s, v in val.items()}, flush=True)
    with open(args.out, "w") as f:
        json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
