"""The command line: ``python -m gen_jax --config=configs/x.py --workdir=DIR --mode=...``.

Modes:
  train   train (resuming from the workdir's latest checkpoint), the default.
  sample  write ``--num`` samples from the latest checkpoint to ``--out`` (.npy).
  eval    evaluate the latest checkpoint on the test split -> ``workdir/eval.json``.
  bench   time the compiled train step and sampler -> ``workdir/bench.json``.

With no ``--config``, ``train`` runs configs/vae_digits.py and ``sample``/``eval``/
``bench`` use the config the workdir was trained with.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

from absl import app, flags
from ml_collections import config_flags

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "vae_digits.py"

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Config file (e.g. configs/vae_digits.py); override keys with "
    "--config.train.num_steps=100.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", "runs/default", "Run directory.")
_MODE = flags.DEFINE_enum("mode", "train", ["train", "sample", "eval", "bench"], "What to do.")
_NUM = flags.DEFINE_integer("num", 64, "sample mode: how many samples.")
_OUT = flags.DEFINE_string("out", "samples.npy", "sample mode: output .npy file.")
_SEED = flags.DEFINE_integer("sample_seed", 0, "sample mode: seed folded into the sample key.")


def _quiet_libraries() -> None:
    # Orbax logs every save at INFO; keep the console for our own progress.
    for name in ("absl", "orbax", "jax._src.xla_bridge"):
        logging.getLogger(name).setLevel(logging.WARNING)
    logging.getLogger("gen_jax").setLevel(logging.INFO)


def _load_config(mode: str):
    from gen_jax.config import validate_config
    from gen_jax.train import workdir_config

    config = _CONFIG.value
    if config is None:
        if mode != "train" and (Path(_WORKDIR.value) / "config.json").exists():
            return workdir_config(_WORKDIR.value)
        from gen_jax.config import load_config

        if not DEFAULT_CONFIG.exists():
            raise app.UsageError(f"no --config given and {DEFAULT_CONFIG} is missing")
        return load_config(DEFAULT_CONFIG)
    validate_config(config)
    return config


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    _quiet_libraries()
    from gen_jax import evaluate, train
    from gen_jax.errors import GenJaxError

    mode = _MODE.value
    try:
        config = _load_config(mode)
        if mode == "train":
            state = train.train_and_evaluate(config, _WORKDIR.value)
            print(f"trained to step {int(state.step)}; outputs in {_WORKDIR.value}")
        elif mode == "sample":
            path = evaluate.sample_to_file(config, _WORKDIR.value, _NUM.value, _OUT.value,
                                           _SEED.value)
            print(f"wrote {_NUM.value} samples to {path}")
        elif mode == "eval":
            result = evaluate.evaluate(config, _WORKDIR.value)
            print(json.dumps(result, indent=2))
        else:
            result = evaluate.benchmark(config, _WORKDIR.value)
            print(json.dumps(result, indent=2))
    except GenJaxError as e:
        print(f"gen_jax: error: {e.__class__.__name__}: {e}", file=sys.stderr)
        sys.exit(2)


def _config_path(argv: list[str]) -> str | None:
    for i, arg in enumerate(argv):
        if arg.startswith("--config="):
            return arg.split("=", 1)[1]
        if arg == "--config" and i + 1 < len(argv):
            return argv[i + 1]
    return None


def _parse_flags(argv: list[str]) -> list[str]:
    """absl parsing, after checking ``--config.KEY`` overrides against the config
    file, so an unknown key is one clear line listing the valid keys."""
    from gen_jax.config import resolve_key
    from gen_jax.errors import GenJaxError

    keys = [a[len("--config."):].split("=", 1)[0] for a in argv[1:] if a.startswith("--config.")]
    path = _config_path(argv[1:])
    if keys and path:
        try:
            from gen_jax.config import load_config

            config = load_config(path)
            for key in keys:
                resolve_key(config, key)
        except GenJaxError as e:
            print(f"gen_jax: error: {e.__class__.__name__}: {e}", file=sys.stderr)
            sys.exit(2)
    try:
        return flags.FLAGS(argv)
    except flags.Error as e:
        print(f"gen_jax: error: bad flag: {e}", file=sys.stderr)
        sys.exit(2)


def run() -> None:
    """Console entry point."""
    app.run(main, flags_parser=_parse_flags)


if __name__ == "__main__":
    run()
