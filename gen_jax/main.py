"""The command line: ``python -m gen_jax --config=configs/x.py --workdir=DIR --mode=...``.

Modes:
  train   train (resuming from the workdir's latest checkpoint), the default.
  sample  write ``--num`` samples from the latest checkpoint to ``--out`` (.npy).
  eval    evaluate the latest checkpoint on the test split -> ``workdir/eval.json``.
  bench   time the compiled train step and sampler -> ``workdir/bench.json``.
  check   trace every program of the run on abstract values (train.dry_run): the
          config's key and shape errors in seconds, nothing compiled or written.

With no ``--config``, ``train`` runs configs/vae_digits.py and ``sample``/``eval``/
``bench`` use the config the workdir was trained with.

Exit statuses: 0 done; 2 bad input (a flag, config, dataset, checkpoint or
workdir; one line on stderr, before anything is computed or written); 3
training stopped on a non-finite loss; 75 stopped by SIGTERM/SIGINT after
saving a checkpoint (rerun the same command to resume); 1 an unexpected error
(a traceback: please report it).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import traceback
from pathlib import Path

from absl import app, flags
from ml_collections import config_flags

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "vae_digits.py"

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Config file (e.g. configs/vae_digits.py); override keys with "
    "--config.train.num_steps=100.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", "runs/default", "Run directory.")
_MODE = flags.DEFINE_enum("mode", "train", ["train", "sample", "eval", "bench", "check"], "What to do.")
_NUM = flags.DEFINE_integer("num", 64, "sample mode: how many samples.")
_OUT = flags.DEFINE_string("out", "samples.npy", "sample mode: output .npy file.")
_SEED = flags.DEFINE_integer("sample_seed", 0, "sample mode: seed folded into the sample key.")
_RESUME = flags.DEFINE_integer(
    "resume_step", None, "train mode: resume from this checkpoint step instead of the latest; "
    "later checkpoints are moved aside (renamed, not deleted).")


class _DropOrbaxErrors(logging.Filter):
    """Orbax logs every failure of a background save as pages of tracebacks from
    several threads; the runtime reports each such failure itself, in one line,
    when the save is waited for."""

    def filter(self, record: logging.LogRecord) -> bool:
        if "orbax" in record.pathname:
            return False
        if record.name == "asyncio" and record.exc_info:  # an orbax write's unretrieved future
            return "orbax" not in "".join(traceback.format_exception(*record.exc_info))
        return True


def _quiet_libraries() -> None:
    # Orbax logs every save at INFO; keep the console for our own progress.
    for name in ("absl", "orbax", "jax._src.xla_bridge"):
        logging.getLogger(name).setLevel(logging.WARNING)
    logging.getLogger("gen_jax").setLevel(logging.INFO)
    for handler in logging.getLogger().handlers + logging.getLogger("absl").handlers:
        handler.addFilter(_DropOrbaxErrors())
    logging.getLogger("absl").addFilter(_DropOrbaxErrors())
    logging.getLogger("asyncio").addFilter(_DropOrbaxErrors())


def _load_config(mode: str):
    from gen_jax.config import upgrade_config, validate_config

    config = _CONFIG.value
    if config is None:
        if mode != "train" and (Path(_WORKDIR.value) / "config.json").exists():
            from gen_jax.config import workdir_config

            return workdir_config(_WORKDIR.value)
        from gen_jax.config import load_config

        if not DEFAULT_CONFIG.exists():
            raise app.UsageError(f"no --config given and {DEFAULT_CONFIG} is missing")
        return load_config(DEFAULT_CONFIG)
    config = upgrade_config(config)
    validate_config(config)
    return config


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    _quiet_libraries()
    from gen_jax.errors import (
        EXIT_BAD_INPUT,
        EXIT_INTERRUPTED,
        EXIT_NONFINITE,
        ConfigError,
        GenJaxError,
        Interrupted,
        NonFiniteError,
        WorkdirError,
    )

    mode = _MODE.value
    try:
        if mode == "sample" and _NUM.value <= 0:
            raise ConfigError(f"--num={_NUM.value}: the number of samples must be a positive integer")
        if _RESUME.value is not None and (mode != "train" or _RESUME.value < 0):
            raise ConfigError(f"--resume_step={_RESUME.value}: a checkpoint step (>= 0), "
                              "in --mode=train only")
        config = _load_config(mode)
        if mode not in ("sample", "check"):  # train, eval and bench write into the workdir
            from gen_jax.workdir import check_writable

            check_writable(_WORKDIR.value)
        # JAX, Flax, Orbax and the families are imported only now: a bad flag, config
        # value or workdir above is one line in well under a second, not after 3-4 s
        # of imports.
        from gen_jax import evaluate, train

        if mode == "train":
            state = train.train_and_evaluate(config, _WORKDIR.value, resume_step=_RESUME.value)
            print(f"trained to step {int(state.step)}; outputs in {_WORKDIR.value}")
        elif mode == "sample":
            path = evaluate.sample_to_file(config, _WORKDIR.value, _NUM.value, _OUT.value,
                                           _SEED.value)
            print(f"wrote {_NUM.value} samples to {path}")
        elif mode == "check":
            shapes = train.dry_run(config)
            print(f"traced {', '.join(shapes)}: samples {shapes['sample'].shape}, train metrics "
                  f"{', '.join(sorted(shapes[next(k for k in shapes if k.startswith('train_step'))]))}")
        elif mode == "eval":
            result = evaluate.evaluate(config, _WORKDIR.value)
            print(json.dumps(result, indent=2))
        else:
            result = evaluate.benchmark(config, _WORKDIR.value)
            print(json.dumps(result, indent=2))
    except Interrupted as e:
        print(f"gen_jax: {e}", file=sys.stderr)
        sys.exit(EXIT_INTERRUPTED)
    except NonFiniteError as e:
        print(f"gen_jax: error: {e.__class__.__name__}: {e}", file=sys.stderr)
        sys.exit(EXIT_NONFINITE)
    except GenJaxError as e:
        print(f"gen_jax: error: {e.__class__.__name__}: {e}", file=sys.stderr)
        if isinstance(e, WorkdirError):
            _exit_now(EXIT_BAD_INPUT)
        sys.exit(EXIT_BAD_INPUT)
    except Exception as e:
        from gen_jax.checkpoint import disk_error, free_space

        err = disk_error(e)
        if err is None:
            raise
        where = err.filename or _WORKDIR.value
        print(f"gen_jax: error: cannot write {where}: {err.strerror} ({free_space(Path(where))})",
              file=sys.stderr)
        _exit_now(EXIT_BAD_INPUT)


def _exit_now(status: int) -> None:
    """Exits without the interpreter's shutdown: background writers (Orbax, TensorBoard)
    that hit the same full or read-only disk would print their tracebacks at exit, after
    the one line that says what happened. The run's own files are closed by then."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


def _config_path(argv: list[str]) -> str | None:
    for i, arg in enumerate(argv):
        if arg.startswith("--config="):
            return arg.split("=", 1)[1]
        if arg == "--config" and i + 1 < len(argv):
            return argv[i + 1]
    return None


def _parse_flags(argv: list[str]) -> list[str]:
    """absl parsing, after checking ``--config.KEY`` overrides against the config
    file, so an unknown key is one clear line listing the valid keys. A renamed key
    (config.RENAMED_KEYS) is passed on under its new name, with one warning line."""
    from gen_jax.config import current_key, resolve_key
    from gen_jax.errors import GenJaxError

    keys = [a[len("--config."):].split("=", 1)[0] for a in argv[1:] if a.startswith("--config.")]
    path = _config_path(argv[1:])
    if path:  # the config file itself (missing, syntax error, no get_config) and the keys
        try:
            from gen_jax.config import load_config

            config = load_config(path)
            for key in keys:
                new = current_key(config, key, lambda msg: print(f"gen_jax: warning: {msg}", file=sys.stderr))
                if new != key:
                    argv = [f"--config.{new}{a[len('--config.' + key):]}"
                            if a == f"--config.{key}" or a.startswith(f"--config.{key}=") else a
                            for a in argv]
                    sys.argv[:] = argv  # config_flags finds the override flags in sys.argv
                resolve_key(config, new)
        except GenJaxError as e:
            print(f"gen_jax: error: {e.__class__.__name__}: {e}", file=sys.stderr)
            sys.exit(2)
    elif keys:
        print("gen_jax: error: --config.KEY overrides need --config=FILE", file=sys.stderr)
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
