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
from pathlib import Path
from typing import Any

import ml_collections

from gen_jax.errors import ConfigError

# The sections every config has (configs/default.py); families fill `model`.
REQUIRED_SECTIONS = ("data", "model", "optim", "train", "eval")


def load_config(path: str | Path, **overrides: Any) -> ml_collections.ConfigDict:
    """Loads ``get_config()`` from a config file and applies dotted overrides.

    Args:
      path: a Python file defining ``get_config()``, e.g. ``configs/vae_digits.py``.
      **overrides: dotted keys to values, e.g. ``**{"train.num_steps": 10}``.

    Returns:
      The validated, locked ConfigDict.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist")
    spec = importlib.util.spec_from_file_location(f"_gen_jax_config_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not hasattr(module, "get_config"):
        raise ConfigError(f"config file {str(path)!r} defines no get_config()")
    config = module.get_config()
    config = apply_overrides(config, overrides)
    validate_config(config)
    return config


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
        node, leaf = resolve_key(config, dotted)
        if isinstance(value, list):
            value = tuple(value)
        try:
            setattr(node, leaf, value)
        except (TypeError, ValueError) as e:
            raise ConfigError(f"wrong type for config key {dotted!r}: {e}") from None
    return config


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


def validate_config(config: ml_collections.ConfigDict) -> None:
    """Checks the structure and the values the runtime relies on.

    Family-specific checks happen when the Method is built (registry.build).
    """
    missing = [s for s in REQUIRED_SECTIONS if s not in config]
    if missing:
        raise ConfigError(f"config lacks sections {missing}; start from configs/default.py")
    for key in ("seed", "method"):
        if key not in config:
            raise ConfigError(f"config lacks the top-level key {key!r}")
    t = config.train
    for key in ("num_steps", "log_every", "eval_every", "checkpoint_every"):
        if t[key] < 0:
            raise ConfigError(f"train.{key} must be >= 0, got {t[key]}")
    if t.nonfinite not in ("raise", "skip"):
        raise ConfigError(f"train.nonfinite must be 'raise' or 'skip', got {t.nonfinite!r}")
    if not 0.0 <= t.ema_decay < 1.0:
        raise ConfigError(f"train.ema_decay must be in [0, 1), got {t.ema_decay}")
    if config.data.batch_size <= 0:
        raise ConfigError(f"data.batch_size must be positive, got {config.data.batch_size}")
    lo, hi = config.data.value_range
    if not hi > lo:
        raise ConfigError(f"data.value_range must be (low, high) with high > low, got {(lo, hi)}")
    if config.data.dequantize not in ("none", "uniform"):
        raise ConfigError(
            f"data.dequantize must be 'none' or 'uniform', got {config.data.dequantize!r}")
    if config.data.binarize not in ("none", "threshold", "stochastic"):
        raise ConfigError("data.binarize must be 'none', 'threshold' or 'stochastic', "
                          f"got {config.data.binarize!r}")
    if config.data.binarize != "none" and config.data.dequantize != "none":
        raise ConfigError("data.binarize and data.dequantize exclude each other")


def config_to_json(config: ml_collections.ConfigDict) -> str:
    """Serialises a config for the workdir (tuples become lists)."""
    return json.dumps(config.to_dict(), indent=2, sort_keys=True)


def config_from_json(text: str) -> ml_collections.ConfigDict:
    """Inverse of :func:`config_to_json`, restoring tuples where lists were written."""

    def fix(value):
        if isinstance(value, dict):
            return {k: fix(v) for k, v in value.items()}
        if isinstance(value, list):
            return tuple(fix(v) for v in value)
        return value

    config = ml_collections.ConfigDict(fix(json.loads(text)))
    config.lock()
    return config
