"""Orbax checkpoints in ``workdir/checkpoints``: save, restore, auto-resume.

Each checkpoint holds three items: the TrainState pytree ("state"), the data
iterator position ("data") and the config ("config", JSON). Saves are
asynchronous; ``close`` waits for them. Restoring falls back to the previous
checkpoint, with a warning, when the latest one is unreadable, and raises a
CheckpointError when a checkpoint does not match the config.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import ml_collections
import orbax.checkpoint as ocp

from gen_jax.config import config_from_json, config_to_json
from gen_jax.errors import CheckpointError

log = logging.getLogger(__name__)

# Sections whose change makes a checkpoint unusable for a config.
_MODEL_KEYS = ("method", "model")


def _differences(a: Any, b: Any, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b)):
            out += _differences(a.get(k, "<absent>"), b.get(k, "<absent>"), f"{prefix}{k}.")
        return out
    norm = (lambda v: list(v) if isinstance(v, (list, tuple)) else v)
    return [] if norm(a) == norm(b) else [f"{prefix[:-1]}: checkpoint {a!r} vs config {b!r}"]


def config_mismatch(saved: ml_collections.ConfigDict, config: ml_collections.ConfigDict) -> list[str]:
    """The model-defining keys on which a saved config and ``config`` differ."""
    out = []
    for key in _MODEL_KEYS:
        a = saved.get(key)
        b = config.get(key)
        a = a.to_dict() if isinstance(a, ml_collections.ConfigDict) else a
        b = b.to_dict() if isinstance(b, ml_collections.ConfigDict) else b
        out += _differences(a, b, f"{key}.")
    return out


class Checkpointer:
    """A thin wrapper over ``ocp.CheckpointManager`` for one workdir.

    Args:
      workdir: the run directory; checkpoints go to ``workdir/checkpoints``.
      keep: how many recent checkpoints to keep.
      async_save: save in a background thread (``close`` waits).
    """

    def __init__(self, workdir: str | Path, keep: int = 3, async_save: bool = True):
        self.directory = Path(workdir).absolute() / "checkpoints"
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep, create=True, enable_async_checkpointing=async_save)
        self._manager = ocp.CheckpointManager(self.directory, options=options)

    def steps(self) -> list[int]:
        """Steps of the checkpoints on disk, oldest first."""
        return sorted(self._manager.all_steps())

    def latest_step(self) -> int | None:
        steps = self.steps()
        return steps[-1] if steps else None

    def save(self, step: int, state: Any, data_state: dict, config: ml_collections.ConfigDict,
             force: bool = False) -> None:
        """Saves (asynchronously) unless a checkpoint of this step exists."""
        if step in self._manager.all_steps():
            return
        self._manager.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(state),
            data=ocp.args.JsonSave(data_state),
            config=ocp.args.JsonSave(json.loads(config_to_json(config)))), force=force)

    def saved_config(self, step: int) -> ml_collections.ConfigDict:
        """The config stored with checkpoint ``step``."""
        restored = self._manager.restore(step, args=ocp.args.Composite(
            config=ocp.args.JsonRestore()))
        return config_from_json(json.dumps(restored["config"]))

    def restore(self, abstract_state: Any, config: ml_collections.ConfigDict | None = None,
                step: int | None = None) -> tuple[Any, dict, int]:
        """Restores a checkpoint (the latest by default) into ``abstract_state``'s structure.

        Args:
          abstract_state: a pytree of ``jax.ShapeDtypeStruct`` (with shardings) or arrays.
          config: if given, the checkpoint's config must match it on the model keys.
          step: a specific step; None = the latest readable one.

        Returns:
          (state, data iterator state, step).

        Raises:
          CheckpointError: no checkpoint, mismatch with the config, or none readable.
        """
        steps = [step] if step is not None else self.steps()[::-1]
        if not steps:
            raise CheckpointError(f"no checkpoint in {self.directory}")
        errors = []
        for s in steps:
            if config is not None:
                try:
                    saved = self.saved_config(s)
                except Exception as e:  # unreadable config: treat like a corrupt checkpoint
                    errors.append(f"step {s}: {e}")
                    log.warning("checkpoint %d is unreadable (%s); trying the previous one", s, e)
                    continue
                diff = config_mismatch(saved, config)
                if diff:
                    raise CheckpointError(
                        f"checkpoint {s} in {self.directory} does not match the config: "
                        + "; ".join(diff) + ". Use another --workdir or the checkpoint's config.")
            try:
                restored = self._manager.restore(s, args=ocp.args.Composite(
                    state=ocp.args.StandardRestore(abstract_state),
                    data=ocp.args.JsonRestore()))
            except Exception as e:  # noqa: BLE001 - orbax raises many types for bad files
                msg = str(e).splitlines()[0] if str(e) else e.__class__.__name__
                errors.append(f"step {s}: {msg}")
                if step is None:
                    log.warning("checkpoint %d could not be restored (%s); trying the previous one",
                                s, msg)
                continue
            return restored["state"], dict(restored["data"]), s
        raise CheckpointError(f"no readable checkpoint in {self.directory} that fits this "
                              "model: " + " | ".join(errors))

    def wait(self) -> None:
        """Blocks until pending asynchronous saves are on disk."""
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.wait_until_finished()
        self._manager.close()

