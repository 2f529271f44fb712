"""Loading, overriding, validating and saving experiment configs.

Configs are ``ml_collections.ConfigDict`` objects built by a ``get_config()``
function in a file under ``configs/``. ``load_config`` is the notebook entry
point; the CLI uses ``ml_collections.config_flags`` and then the same
``validate_config``. Every error is a :class:`~gen_jax.errors.ConfigError` that
names the bad key and lists the valid ones.
"""

from __future__ import annotations

import importlib.util
import json
import logging
from pathlib import Path
from typing import Any, Callable

import ml_collections

from gen_jax.errors import ConfigError, GenJaxError

# The sections every config has (configs/default.py); families fill `model`.
REQUIRED_SECTIONS = ("data", "model", "optim", "train", "eval")
CONV_FUSION_CHOICES = ("off", "on")  # runtime.cpu_conv_fusion (gen_jax/parallel.py)
PRECISIONS = ("float32", "bfloat16")  # runtime.precision (gen_jax/nn/precision.py)

# Config keys renamed since older workdirs were written: old dotted key -> new one.
# An old workdir's config.json and an old config file load with the new keys; an
# old key given as an override (load_config, --config.KEY on the command line)
# is accepted with one warning line naming the new key.
RENAMED_KEYS = {
    # flows (glow, flowpp): steps of flow per level, not train.num_steps / sampler.num_steps
    "model.num_steps": "model.steps_per_level",
    # diffusion samplers: the sampler's name, not a Method ("method" is the family)
    "sampler.method": "sampler.name",
    # the diffusion UNet's compute dtype is the one mixed-precision policy of every family
    "model.dtype": "runtime.precision",
}
# Keys renamed in some families only (old key -> (new key, the Methods)): the old key
# keeps its meaning in the others. The autoencoders' MLP layer sizes (a tuple) were
# ``model.hidden``, which is one width (an int) in the flows and the diffusion
# denoisers.
METHOD_RENAMED_KEYS = {
    "model.hidden": ("model.hidden_sizes", ("ae", "dae", "sae", "vae")),
}


def renamed_keys(method: str) -> dict[str, str]:
    """Old dotted key -> new one, for a config of Method ``method``: RENAMED_KEYS and
    the METHOD_RENAMED_KEYS of that Method."""
    return {**RENAMED_KEYS, **{old: new for old, (new, methods) in METHOD_RENAMED_KEYS.items()
                               if method in methods}}


def load_config(path: str | Path, **overrides: Any) -> ml_collections.ConfigDict:
    """Loads ``get_config()`` from a config file and applies dotted overrides.

    Args:
      path: a Python file defining ``get_config()``, e.g. ``configs/vae_digits.py``.
      **overrides: dotted keys to values, e.g. ``**{"train.num_steps": 10}``.

    Returns:
      The validated, locked ConfigDict.
    """
    config = upgrade_config(_call_get_config(path))
    config = apply_overrides(config, overrides)
    validate_config(config)
    return config


def _call_get_config(path: str | Path) -> ml_collections.ConfigDict:
    """Runs a config file's ``get_config`` (with the argument after ``:``, if any).

    ``configs/x.py:arg`` passes "arg" to ``get_config(arg)`` as ml-collections'
    config flags do. Every problem with the file is one ConfigError line.
    """
    path, arg = split_config_arg(path)
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist")
    spec = importlib.util.spec_from_file_location(f"_gen_jax_config_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except SyntaxError as e:
        raise ConfigError(f"config file {e.filename}:{e.lineno}: syntax error: {e.msg}") from None
    except Exception as e:  # noqa: BLE001 - any error in a user's file is reported as one line
        raise ConfigError(f"config file {str(path)!r} failed to load: {_where(e, path)}"
                          f"{e.__class__.__name__}: {e}") from None
    if not hasattr(module, "get_config"):
        raise ConfigError(f"config file {str(path)!r} defines no get_config()")
    try:
        config = module.get_config(arg) if arg is not None else module.get_config()
    except TypeError as e:
        if arg is not None and "positional argument" in str(e):
            raise ConfigError(f"config file {str(path)!r}: get_config() takes no argument, "
                              f"but {arg!r} was given after ':'") from None
        raise ConfigError(f"config file {str(path)!r}: get_config failed: {_where(e, path)}{e}") from None
    except GenJaxError:
        raise
    except Exception as e:  # noqa: BLE001
        raise ConfigError(f"config file {str(path)!r}: get_config failed: {_where(e, path)}"
                          f"{e.__class__.__name__}: {e}") from None
    if not isinstance(config, ml_collections.ConfigDict):
        raise ConfigError(f"config file {str(path)!r}: get_config() returned "
                          f"{type(config).__name__}, not an ml_collections.ConfigDict")
    return config


def _where(e: BaseException, path: Path) -> str:
    """"file:line: " of the innermost frame of ``e`` inside the config file, or ""."""
    tb, line = e.__traceback__, None
    while tb is not None:
        if Path(tb.tb_frame.f_code.co_filename).resolve() == path.resolve():
            line = tb.tb_lineno
        tb = tb.tb_next
    return f"{path}:{line}: " if line else ""


def parse_arg(arg: str | None, **spec: Any) -> ml_collections.ConfigDict:
    """A config file's variant argument, big_vision style: ``"smoke,data=mnist,steps=10"``.

    Args:
      arg: the text after ``:`` in ``--config=configs/x.py:arg`` (None or "" = defaults).
      **spec: every accepted option with its default; a value is converted to the
        default's type ("true"/"false" for bools); a bare ``name`` sets a bool to True.

    Returns:
      A ConfigDict of the options.

    Raises:
      ConfigError: an unknown option or a value of the wrong type (one line, listing
        the valid options).
    """
    out = ml_collections.ConfigDict(spec)
    for part in filter(None, (p.strip() for p in (arg or "").split(","))):
        name, eq, value = part.partition("=")
        if name not in spec:
            raise ConfigError(f"unknown config variant option {name!r} in {arg!r}; valid: "
                              f"{', '.join(sorted(spec)) or 'none'}")
        default = spec[name]
        try:
            if isinstance(default, bool):
                if eq and value.lower() not in ("true", "false", "1", "0"):
                    raise ValueError(value)
                out[name] = (not eq) or value.lower() in ("true", "1")
            elif not eq:
                raise ValueError("needs a value")
            else:
                out[name] = type(default)(value) if default is not None else value
        except ValueError:
            raise ConfigError(f"config variant option {name}={value!r} in {arg!r}: expected "
                              f"{type(default).__name__}") from None
    return out


def config_module(name: str, relative_to: str | Path):
    """Loads another config file (e.g. a base experiment) as a module, from the
    directory of ``relative_to`` (pass ``__file__``): configs share code without
    editing ``sys.path``."""
    path = Path(relative_to).resolve().parent / (name if name.endswith(".py") else f"{name}.py")
    spec = importlib.util.spec_from_file_location(f"_gen_jax_config_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def split_config_arg(path: str | Path) -> tuple[Path, str | None]:
    """``"configs/x.py:arg"`` -> (Path("configs/x.py"), "arg"); no ``:arg`` -> (path, None)."""
    text = str(path)
    if not Path(text).is_file() and ":" in text:
        head, arg = text.rsplit(":", 1)
        if head.endswith(".py"):
            return Path(head), arg
    return Path(text), None


def _valid_keys(node: ml_collections.ConfigDict) -> str:
    return ", ".join(sorted(node.keys()))


def apply_overrides(
    config: ml_collections.ConfigDict, overrides: dict[str, Any]
) -> ml_collections.ConfigDict:
    """Sets dotted keys on a copy of ``config``; unknown keys and bad types fail.

    Args:
      config: the base config.
      overrides: dotted key -> value.

    Returns:
      A new, locked ConfigDict.
    """
    config = ml_collections.ConfigDict(config.to_dict())
    config.lock()
    for dotted, value in overrides.items():
        node, leaf = resolve_key(config, current_key(config, dotted))
        if isinstance(value, list):
            value = tuple(value)
        try:
            setattr(node, leaf, value)
        except (TypeError, ValueError) as e:
            raise ConfigError(f"wrong type for config key {dotted!r}: {e}") from None
    return config


def current_key(config: ml_collections.ConfigDict, dotted: str,
                warn: Callable[[str], None] | None = None) -> str:
    """``dotted``, or its new name when it is a renamed key that ``config`` has only
    under the new name (see :func:`renamed_keys`); then one warning line goes to
    ``warn`` (default: the "gen_jax" logger)."""
    tree = config.to_dict()
    new = renamed_keys(str(tree.get("method", ""))).get(dotted)
    if new is None or _has_key(tree, dotted) or not _has_key(tree, new):
        return dotted
    (warn or logging.getLogger("gen_jax").warning)(
        f"config key {dotted!r} is now {new!r}; please use the new name")
    return new


def _has_key(tree: dict, dotted: str) -> bool:
    *parents, leaf = dotted.split(".")
    for part in parents:
        tree = tree.get(part)
        if not isinstance(tree, dict):
            return False
    return leaf in tree


def _upgrade_dict(tree: dict) -> dict:
    """A config dict with every renamed key moved to its new name, for the dict's own
    Method (:func:`renamed_keys`). Where both are present the old key's value wins: the
    defaults never hold an old key, so it is there because an old config file set it on
    top of today's defaults (which hold the new key at its default value)."""
    for old, new in renamed_keys(str(tree.get("method", ""))).items():
        if not _has_key(tree, old):
            continue
        *old_parents, old_leaf = old.split(".")
        *new_parents, new_leaf = new.split(".")
        src = tree
        for part in old_parents:
            src = src[part]
        value = src.pop(old_leaf)
        dst = tree
        for part in new_parents:
            dst = dst.setdefault(part, {})
        dst[new_leaf] = value
    return tree


def upgrade_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """``config`` with renamed keys (:func:`renamed_keys`) under their new names;
    ``config`` itself when it has none. The result is locked like the input."""
    tree = config.to_dict()
    if not any(_has_key(tree, old) for old in renamed_keys(str(tree.get("method", "")))):
        return config
    upgraded = ml_collections.ConfigDict(_upgrade_dict(tree))
    if config.is_locked:
        upgraded.lock()
    return upgraded


def resolve_key(config: ml_collections.ConfigDict, dotted: str) -> tuple[ml_collections.ConfigDict, str]:
    """The section holding a dotted key, and the key's last part.

    Raises:
      ConfigError: the key does not exist; the message lists the valid keys there.
    """
    *parents, leaf = dotted.split(".")
    node = config
    for i, part in enumerate(parents):
        if part not in node or not isinstance(node[part], ml_collections.ConfigDict):
            where = ".".join(parents[:i]) or "the config"
            raise ConfigError(f"unknown config key {dotted!r}: {where} has no section {part!r}; "
                              f"valid keys there: {_valid_keys(node)}")
        node = node[part]
    if leaf not in node:
        where = ".".join(parents) or "the config"
        raise ConfigError(f"unknown config key {dotted!r}; valid keys in {where}: {_valid_keys(node)}")
    return node, leaf


def precision_choice(config: ml_collections.ConfigDict) -> str:
    """``runtime.precision``, checked ("float32" for a config written before the key)."""
    choice = (config.get("runtime") or {}).get("precision", "float32")
    if choice not in PRECISIONS:
        raise ConfigError(f"runtime.precision={choice!r} is not a precision; valid: {', '.join(PRECISIONS)}")
    return choice


def conv_fusion_choice(config: ml_collections.ConfigDict) -> str:
    """``runtime.cpu_conv_fusion``, checked ("off" for a config written before the key)."""
    choice = (config.get("runtime") or {}).get("cpu_conv_fusion", "off")
    if choice not in CONV_FUSION_CHOICES:
        raise ConfigError(f"runtime.cpu_conv_fusion must be one of {CONV_FUSION_CHOICES}, got {choice!r}")
    return choice


MULTI_STEP_CHOICES = ("auto", "scan", "unroll")


def multi_step_choice(config: ml_collections.ConfigDict) -> str:
    """``runtime.multi_step``, checked ("auto" for a config written before the key): how a
    call of ``train.steps_per_call`` > 1 steps is compiled (gen_jax/train.py scanned_steps)."""
    choice = (config.get("runtime") or {}).get("multi_step", "auto")
    if choice not in MULTI_STEP_CHOICES:
        raise ConfigError(f"runtime.multi_step must be one of {MULTI_STEP_CHOICES}, got {choice!r}")
    return choice


# Every numeric field the runtime reads, with its valid range, checked in one place.
# (section, key, kind, low, high, what): kind "int" or "float"; a bound of None is open;
# "gt" = strictly greater than ``low``.
_NUMERIC = (
    ("train", "num_steps", "int", 0, None, "ge"),
    ("train", "log_every", "int", 1, None, "ge"),
    ("train", "eval_every", "int", 0, None, "ge"),
    ("train", "checkpoint_every", "int", 0, None, "ge"),
    ("train", "keep_checkpoints", "int", 0, None, "ge"),
    ("train", "num_grid_samples", "int", 1, None, "ge"),
    ("train", "steps_per_call", "int", 1, None, "ge"),
    ("data", "batch_size", "int", 1, None, "ge"),
    ("data", "eval_batch_size", "int", 1, None, "ge"),
    ("data", "num_train", "int", 1, None, "ge"),
    ("data", "num_eval", "int", 1, None, "ge"),
    ("optim", "learning_rate", "float", 0.0, None, "gt"),
    ("optim", "warmup_steps", "int", 0, None, "ge"),
    ("optim", "weight_decay", "float", 0.0, None, "ge"),
    ("optim", "grad_clip", "float", 0.0, None, "ge"),
    ("optim", "b1", "float", 0.0, 1.0, "ge"),
    ("optim", "b2", "float", 0.0, 1.0, "ge"),
    ("eval", "num_samples", "int", 0, None, "ge"),
    ("eval", "max_batches", "int", 0, None, "ge"),
    ("eval", "log_prob_samples", "int", 1, None, "ge"),
    ("eval", "inception_batch_size", "int", 1, None, "ge"),
)
_HINTS = {"train.keep_checkpoints": " (0 keeps every checkpoint)",
          "train.eval_every": " (0 = only at the end)", "train.checkpoint_every": " (0 = only at the end)",
          "eval.max_batches": " (0 = the whole split)", "eval.num_samples": " (0 = no samples)"}
OPTIMIZERS = ("adam", "adamw", "sgd", "rmsprop")
SCHEDULES = ("constant", "cosine")


def _check_number(config: ml_collections.ConfigDict, section: str, key: str, kind: str,
                  low: float, high: float | None, how: str) -> None:
    if section not in config or key not in config[section]:
        return  # an old workdir's config.json may predate a key
    value, name = config[section][key], f"{section}.{key}"
    ok_type = isinstance(value, int) if kind == "int" else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok_type:
        raise ConfigError(f"{name} must be {'an integer' if kind == 'int' else 'a number'}, "
                          f"got {value!r}")
    valid = f">= {low}" if how == "ge" else f"> {low}"
    if high is not None:
        valid = f"in [{low}, {high})"
    bad = value < low if how == "ge" else value <= low
    if bad or (high is not None and value >= high) or value != value:
        raise ConfigError(f"{name}={value!r} is out of range: must be {valid}{_HINTS.get(name, '')}")


def validate_config(config: ml_collections.ConfigDict) -> None:
    """Checks the structure and every value the runtime relies on, in one place.

    Family-specific checks happen when the Method is built (registry.build).

    Raises:
      ConfigError: one line naming the key, the value and what is valid.
    """
    missing = [s for s in REQUIRED_SECTIONS if s not in config]
    if missing:
        raise ConfigError(f"config lacks sections {missing}; start from configs/default.py")
    for key in ("seed", "method"):
        if key not in config:
            raise ConfigError(f"config lacks the top-level key {key!r}")
    if isinstance(config.seed, bool) or not isinstance(config.seed, int):
        raise ConfigError(f"seed must be an integer, got {config.seed!r}")
    for spec in _NUMERIC:
        _check_number(config, *spec)
    t, o, d = config.train, config.optim, config.data
    if t.nonfinite not in ("raise", "skip"):
        raise ConfigError(f"train.nonfinite must be 'raise' or 'skip', got {t.nonfinite!r}")
    conv_fusion_choice(config)
    multi_step_choice(config)
    precision_choice(config)
    if not 0.0 <= t.ema_decay < 1.0:
        raise ConfigError(f"train.ema_decay must be in [0, 1), got {t.ema_decay}")
    if o.name not in OPTIMIZERS:
        raise ConfigError(f"unknown optimizer optim.name={o.name!r}; known: {', '.join(OPTIMIZERS)}")
    if o.schedule not in SCHEDULES:
        raise ConfigError(f"optim.schedule must be one of {', '.join(SCHEDULES)}, got {o.schedule!r}")
    lo, hi = d.value_range
    if not hi > lo:
        raise ConfigError(f"data.value_range must be (low, high) with high > low, got {(lo, hi)}")
    if "val_fraction" in d and not 0.0 < d.val_fraction < 1.0:
        raise ConfigError(f"data.val_fraction must be in (0, 1), got {d.val_fraction}")
    if d.dequantize not in ("none", "uniform"):
        raise ConfigError(f"data.dequantize must be 'none' or 'uniform', got {d.dequantize!r}")
    if d.binarize not in ("none", "threshold", "stochastic"):
        raise ConfigError("data.binarize must be 'none', 'threshold' or 'stochastic', "
                          f"got {d.binarize!r}")
    if d.binarize != "none" and d.dequantize != "none":
        raise ConfigError("data.binarize and data.dequantize exclude each other")


def config_to_json(config: ml_collections.ConfigDict) -> str:
    """Serialises a config for the workdir (tuples become lists)."""
    return json.dumps(config.to_dict(), indent=2, sort_keys=True)


def config_from_json(text: str) -> ml_collections.ConfigDict:
    """Inverse of :func:`config_to_json`, restoring tuples where lists were written;
    keys renamed since the file was written (RENAMED_KEYS) get their new names."""

    def fix(value):
        if isinstance(value, dict):
            return {k: fix(v) for k, v in value.items()}
        if isinstance(value, list):
            return tuple(fix(v) for v in value)
        return value

    config = ml_collections.ConfigDict(_upgrade_dict(fix(json.loads(text))))
    config.lock()
    return config


def workdir_config(workdir: str | Path) -> ml_collections.ConfigDict:
    """The config a workdir was trained with (``workdir/config.json``)."""
    from gen_jax.errors import CheckpointError

    path = Path(workdir) / "config.json"
    if not path.exists():
        raise CheckpointError(f"{path} does not exist: is {workdir!s} a gen_jax workdir? "
                              "Pass --config to say which config to use")
    return config_from_json(path.read_text())
