"""Orbax checkpoints in ``workdir/checkpoints``: save, restore, auto-resume, load.

Each checkpoint holds three items: the TrainState pytree ("state"), the data
iterator position ("data") and the config ("config", JSON). Saves are
asynchronous; ``close`` waits for them. Nothing already written is ever
deleted except by ``train.keep_checkpoints`` (0 keeps all): an unreadable
checkpoint, or the checkpoints after a chosen resume step, are *moved aside*
(renamed ``N.<reason>-<time>``, which Orbax ignores), never removed.

Resuming compares the whole config with the checkpoint's: only the keys in
:data:`RESUMABLE_KEYS` may change; any other difference is one CheckpointError
line listing each key as saved vs given.

:func:`load_trained` is the checkpoint-level loader of a trained workdir (a
Method and its state) for families built on another one (a prior over VQ-VAE
codes, latent diffusion): it does not import the training loop.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from gen_jax.config import config_from_json, config_to_json
from gen_jax.errors import CheckpointError, ConfigError, NonFiniteError, WorkdirError

log = logging.getLogger(__name__)

# Keys that may differ between a checkpoint's config and the config resuming it
# ("section.*" = the whole section). Everything else defines the state, the data
# stream or the optimisation, so a change is refused.
RESUMABLE_KEYS = (
    "train.num_steps", "train.log_every", "train.eval_every", "train.checkpoint_every",
    "train.keep_checkpoints", "train.num_grid_samples", "train.nonfinite", "train.steps_per_call",
    "data.eval_batch_size", "data.data_dir", "eval.*", "sampler.*", "runtime.*",
)

# Keys added since workdirs were first written, with what their absence meant: an
# old checkpoint's config is compared as if it had them (so resuming an old workdir
# with the new default is refused in one line, not failed inside the restore).
ABSENT_MEANS = {"optim.flatten": False}


def _allowed(key: str) -> bool:
    return any(key == k or (k.endswith(".*") and key.startswith(k[:-1])) for k in RESUMABLE_KEYS)


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, ml_collections.ConfigDict):
        tree = tree.to_dict()
    if isinstance(tree, dict):
        out = {}
        for k, v in tree.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: list(tree) if isinstance(tree, (list, tuple)) else tree}


def config_differences(saved: ml_collections.ConfigDict, config: ml_collections.ConfigDict,
                       allowed: bool = False) -> list[tuple[str, Any, Any]]:
    """The keys on which a saved config and ``config`` differ: (key, saved, given).

    A key present in only one of them is skipped: it was added or removed since
    the checkpoint was written, so the code reading it cannot have changed its
    meaning for this run; except the keys of :data:`ABSENT_MEANS`, whose absence
    meant a value. ``allowed=False`` leaves out :data:`RESUMABLE_KEYS`.
    """
    a, b = ({**ABSENT_MEANS, **_flatten(c)} for c in (saved, config))
    return [(k, a[k], b[k]) for k in sorted(set(a) & set(b))
            if a[k] != b[k] and (allowed or not _allowed(k))]


def config_mismatch(saved: ml_collections.ConfigDict, config: ml_collections.ConfigDict) -> list[str]:
    """``key: saved X, given Y`` for every non-resumable key that differs."""
    return [f"{k}: saved {a!r}, given {b!r}" for k, a, b in config_differences(saved, config)]


def free_space(path: Path) -> str:
    """Free space on ``path``'s file system, for disk-full messages."""
    p = Path(path)
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        return f"{shutil.disk_usage(p).free / 2**20:.1f} MiB free on {p}"
    except OSError:
        return "free space unknown"


_DISK_ERRNOS = {errno.ENOSPC: "No space left on device", errno.EDQUOT: "Disk quota exceeded",
                errno.EROFS: "Read-only file system", errno.EACCES: "Permission denied"}


def disk_error(e: BaseException) -> OSError | None:
    """The disk-full / read-only / permission OSError in ``e``'s cause chain, if any.

    Orbax and TensorStore report these as ValueErrors whose text carries the OS
    message; those are recognised by it.
    """
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in _DISK_ERRNOS:
            return e
        for code, text in _DISK_ERRNOS.items():
            if text in str(e):
                return OSError(code, text)
        e = e.__cause__ or e.__context__
    return None


@contextlib.contextmanager
def quiet_orbax():
    """Orbax logs a page of ERRORs for each unreadable checkpoint; we report one line."""
    loggers = [logging.getLogger(n) for n in ("absl", "orbax", "orbax.checkpoint")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


_leaf_finite = jax.jit(lambda tree: [jnp.all(jnp.isfinite(x)) if jnp.issubdtype(x.dtype, jnp.inexact)
                                      else jnp.bool_(True) for x in jax.tree.leaves(tree)])


# A state up to this size is checked on the host: copying it costs microseconds, while
# compiling _leaf_finite for its tree costs 0.3-0.6 s at the start of every run.
_HOST_CHECK_BYTES = 64 * 2**20


def finite_leaves(state: Any) -> list[bool]:
    """Per leaf of ``state``: whether all its values are finite (non-float leaves: True).
    A small, replicated state is checked on the host, a large or sharded one on the devices."""
    leaves = jax.tree.leaves(state)
    floats = [jnp.issubdtype(jnp.result_type(x), jnp.inexact) for x in leaves]
    checked = [x for x, f in zip(leaves, floats, strict=True) if f]
    small = sum(getattr(x, "nbytes", 8) for x in checked) <= _HOST_CHECK_BYTES
    if not (small and all(not isinstance(x, jax.Array) or x.sharding.is_fully_replicated
                          for x in checked)):
        return [bool(f) for f in jax.device_get(_leaf_finite(state))]
    local = [x.addressable_data(0) if isinstance(x, jax.Array) else x for x in checked]
    values = iter(jax.device_get(local))
    return [bool(np.isfinite(np.asarray(next(values), np.float32)).all()) if f else True
            for f in floats]


def state_is_finite(state: Any, exempt: list[bool] | None = None) -> bool:
    """Whether every floating-point value of a state is finite, except in the leaves
    marked in ``exempt`` (bookkeeping that is non-finite by design, e.g. a fit's
    NaN-padded trace, as found in the run's first state)."""
    flags = finite_leaves(state)
    exempt = exempt if exempt is not None and len(exempt) == len(flags) else [False] * len(flags)
    return all(f or e for f, e in zip(flags, exempt, strict=True))


class Checkpointer:
    """A thin wrapper over ``ocp.CheckpointManager`` for one workdir.

    Args:
      workdir: the run directory; checkpoints go to ``workdir/checkpoints``.
      keep: how many recent checkpoints to keep; 0 keeps all.
      async_save: save in a background thread (``close`` waits).
      create: create ``workdir/checkpoints`` if missing (False for read-only modes).
    """

    def __init__(self, workdir: str | Path, keep: int = 3, async_save: bool = True,
                 create: bool = True):
        self.directory = Path(workdir).absolute() / "checkpoints"
        if keep < 0:
            raise CheckpointError(f"keep_checkpoints must be >= 0 (0 keeps all), got {keep}")
        self._manager = None
        self.exempt: list[bool] | None = None  # see expect_finite_like
        if not create and not self.directory.is_dir():
            return  # nothing to read; nothing created
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep or None, create=create, enable_async_checkpointing=async_save)
        self._manager = ocp.CheckpointManager(self.directory, options=options)

    def steps(self) -> list[int]:
        """Steps of the checkpoints on disk, oldest first."""
        if self._manager is None:
            return []
        self._manager.reload()
        return sorted(self._manager.all_steps())

    def latest_step(self) -> int | None:
        steps = self.steps()
        return steps[-1] if steps else None

    def expect_finite_like(self, state: Any) -> None:
        """Leaves that are not all finite in ``state`` (the run's first state) are by design
        (e.g. NaN padding); every other leaf must stay finite for a state to be saved."""
        self.exempt = [not f for f in finite_leaves(state)]

    def save(self, step: int, state: Any, data_state: dict, config: ml_collections.ConfigDict,
             force: bool = False) -> bool:
        """Saves (asynchronously) unless a checkpoint of this step exists; returns whether
        it saved. A state with a non-finite value is never saved (NonFiniteError)."""
        if step in self._manager.all_steps():
            return False
        # A full disk is said in one line before Orbax starts writing: a write that
        # fails half way leaves a partial checkpoint and pages of thread tracebacks.
        need = 2 * sum(x.nbytes for x in jax.tree.leaves(state) if hasattr(x, "nbytes")) + 2**20
        try:
            free = shutil.disk_usage(self.directory).free
        except OSError:
            free = need
        if free < need:
            self._manager = None
            raise WorkdirError(f"cannot save checkpoint {step} in {self.directory}: the disk is full "
                               f"({free_space(self.directory)}; a checkpoint needs about "
                               f"{need / 2**20:.1f} MiB)")
        if not state_is_finite(state, self.exempt):
            last = self.latest_step()
            raise NonFiniteError(
                f"the state at step {step} has non-finite values and was not saved; last saved "
                f"checkpoint: {'none' if last is None else f'step {last}'}. {resume_hint(self)}")
        try:
            self._manager.save(step, args=ocp.args.Composite(
                state=ocp.args.StandardSave(state),
                data=ocp.args.JsonSave(data_state),
                config=ocp.args.JsonSave(json.loads(config_to_json(config)))), force=force)
        except Exception as e:
            raise self._failed(e) from None
        return True

    def saved_config(self, step: int) -> ml_collections.ConfigDict:
        """The config stored with checkpoint ``step``."""
        with quiet_orbax():
            restored = self._manager.restore(step, args=ocp.args.Composite(
                config=ocp.args.JsonRestore()))
        return config_from_json(json.dumps(restored["config"]))

    def check_config(self, config: ml_collections.ConfigDict, step: int | None = None) -> None:
        """A CheckpointError (one line) unless ``config`` may resume the checkpoint ``step``
        (default: the latest one whose config is readable); warns about resumable changes
        that alter training (a longer cosine schedule)."""
        for s in ([step] if step is not None else self.steps()[::-1]):
            try:
                saved = self.saved_config(s)
            except Exception:  # noqa: BLE001 - unreadable: restore() reports it
                continue
            diff = config_mismatch(saved, config)
            if diff:
                raise CheckpointError(
                    f"the config differs from the one checkpoint {s} in {self.directory} was "
                    f"trained with, on keys that cannot change on resume: {'; '.join(diff)}. "
                    "Use another --workdir, or the saved config (omit --config / its overrides)")
            for key, a, b in config_differences(saved, config, allowed=True):
                if key == "train.num_steps" and config.optim.schedule == "cosine":
                    log.warning("train.num_steps changed from %s to %s: the cosine learning-rate "
                                "schedule is re-stretched over the new length from step %d on", a, b, s)
            return

    def restore(self, abstract_state: Any, config: ml_collections.ConfigDict | None = None,
                step: int | None = None, move_aside: bool = False) -> tuple[Any, dict, int]:
        """Restores a checkpoint (the latest readable by default) into ``abstract_state``.

        Args:
          abstract_state: a pytree of ``jax.ShapeDtypeStruct`` (with shardings) or arrays.
          config: if given, it must be allowed to resume the checkpoint (see check_config).
          step: a specific step; None = the latest readable one.
          move_aside: rename unreadable later checkpoints ``N.unreadable-<time>`` (train
            mode), so the step is saved again when training reaches it.

        Returns:
          (state, data iterator state, step).

        Raises:
          CheckpointError: no checkpoint, a config that cannot resume it, or none readable.
        """
        steps = [step] if step is not None else self.steps()[::-1]
        if not steps:
            raise CheckpointError(f"no checkpoint in {self.directory}")
        if config is not None:
            self.check_config(config, step)
        errors, unreadable = [], []
        for s in steps:
            try:
                with quiet_orbax():
                    restored = self._manager.restore(s, args=ocp.args.Composite(
                        state=ocp.args.StandardRestore(abstract_state),
                        data=ocp.args.JsonRestore()))
            except Exception as e:  # noqa: BLE001 - orbax raises many types for bad files
                msg = (str(e).strip().splitlines() or [e.__class__.__name__])[0][:200]
                errors.append(f"step {s}: {msg}")
                unreadable.append(s)
                if step is None:
                    log.warning("checkpoint %d is unreadable (%s); trying the previous one", s, msg)
                continue
            if move_aside and unreadable:
                # Only once a readable one is found: with none readable, nothing is renamed
                # and the next run fails the same way instead of silently starting over.
                for bad in unreadable:
                    where = self.move_aside(bad, "unreadable")
                    if where is not None:
                        log.warning("checkpoint %d moved aside to %s; step %d will be saved again",
                                    bad, where.name, bad)
                _barrier("restore_move_aside")  # process 0 renamed; the others see it
            return restored["state"], dict(restored["data"]), s
        raise CheckpointError(f"no readable checkpoint in {self.directory}: " + " | ".join(errors))

    def move_aside(self, step: int, reason: str) -> Path | None:
        """Renames checkpoint ``step`` to ``N.<reason>-<time>`` (process 0 only); never deletes."""
        if jax.process_index() != 0:
            return None
        src = self.directory / str(step)
        dst = self.directory / f"{step}.{reason}-{time.strftime('%Y%m%dT%H%M%S')}"
        n = 1
        while dst.exists():
            dst, n = dst.with_name(f"{dst.name.split('~')[0]}~{n}"), n + 1
        os.rename(src, dst)
        self._manager.reload()
        return dst

    def truncate_after(self, step: int) -> list[Path]:
        """Moves every checkpoint after ``step`` aside (resuming from an earlier step)."""
        moved = [p for s in self.steps() if s > step
                 for p in [self.move_aside(s, f"after-resume-from-{step}")] if p is not None]
        _barrier("truncate_after")
        return moved

    def _failed(self, e: BaseException) -> BaseException:
        """``e`` as one line where the disk is full or read-only; the manager is then
        abandoned: closing it would only make Orbax's writer threads print tracebacks
        (the command exits with the one line)."""
        err = _as_write_error(e, self.directory)
        if isinstance(err, WorkdirError):
            self._manager = None
        return err

    def wait(self) -> None:
        """Blocks until pending asynchronous saves are on disk."""
        if self._manager is not None:
            try:
                self._manager.wait_until_finished()
            except Exception as e:
                raise self._failed(e) from None

    def close(self) -> None:
        try:
            self.wait()
        finally:
            if self._manager is not None:  # None: abandoned after a disk failure (_failed)
                with quiet_orbax(), contextlib.suppress(Exception):
                    self._manager.close()


def _barrier(name: str) -> None:
    """Waits for every process (a no-op with one): renames on process 0 must be seen
    by all before any of them lists or saves checkpoints again."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(f"gen_jax_checkpoint_{name}")


def _as_write_error(e: BaseException, directory: Path) -> BaseException:
    """A disk-full / read-only failure as one WorkdirError line; anything else as is."""
    err = disk_error(e)
    if err is None:
        return e
    what = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is exceeded",
            errno.EROFS: "the file system is read-only", errno.EACCES: "permission denied"}[err.errno]
    return WorkdirError(f"cannot write checkpoint in {directory}: {what} "
                           f"({err.filename or directory}; {free_space(directory)})")


def resume_hint(ckpt: Checkpointer) -> str:
    """How to resume from an earlier checkpoint, naming the ones on disk."""
    steps = ckpt.steps()
    if len(steps) < 2:
        return ("Lower optim.learning_rate, set optim.grad_clip, or set train.nonfinite='skip', "
                "and train again.")
    return (f"Checkpoints on disk: steps {', '.join(map(str, steps))}. To retry from an earlier "
            f"one, rerun with --resume_step={steps[-2]} (later checkpoints are moved aside, not "
            "deleted) and lower optim.learning_rate, set optim.grad_clip, or train.nonfinite='skip'.")


def load_trained(workdir: str | Path, step: int | None = None, mesh: Any = None
                 ) -> tuple[Any, Any, ml_collections.ConfigDict]:
    """A trained workdir's Method, state and config, without the training loop.

    Args:
      workdir: a gen_jax run directory (``config.json`` and ``checkpoints/``).
      step: a checkpoint step; None = the latest readable one.
      mesh: restore replicated over this mesh; None = all local devices.

    Returns:
      (method, state, config).

    Raises:
      CheckpointError: not a workdir, no readable checkpoint.
    """
    from gen_jax import data as data_lib
    from gen_jax import parallel, registry

    path = Path(workdir) / "config.json"
    if not path.is_file():
        raise CheckpointError(f"{workdir!s} is not a trained gen_jax workdir (no {path})")
    config = config_from_json(path.read_text())
    info = data_lib.dataset_info(config.data)
    method = registry.build(config, info)
    mesh = parallel.make_mesh() if mesh is None else mesh
    ckpt = Checkpointer(workdir, async_save=False, create=False)
    try:
        if ckpt.latest_step() is None:
            raise CheckpointError(f"no checkpoint in {ckpt.directory}: train {workdir!s} first")
        state, _, _ = ckpt.restore(abstract_state(method, config, mesh), config, step)
    finally:
        ckpt.close()
    return method, state, config


def load_dependency(workdir: str, key: str, methods: Sequence[str], train_hint: str, needs: str
                    ) -> tuple[Any, Any, ml_collections.ConfigDict]:
    """:func:`load_trained` for a trained sub-model a config key names (the VQ-VAE under a
    prior, the autoencoder under latent diffusion, a distillation's teacher), every
    failure one ConfigError naming the key.

    Args:
      workdir: the key's value.
      key: the config key, e.g. "model.ae_workdir".
      methods: the Methods accepted there.
      train_hint: what to train when the key is empty ("an autoencoder first (command)").
      needs: the end of the message for a workdir of another Method.
    """
    if not workdir:
        raise ConfigError(f"{key} is empty: train {train_hint} and pass its workdir")
    path = Path(workdir)
    if not (path / "config.json").is_file():
        raise ConfigError(f"{key}={workdir!r} is not a trained gen_jax workdir (no {path / 'config.json'})")
    kind = config_from_json((path / "config.json").read_text()).method
    if kind not in methods:
        raise ConfigError(f"{key}={workdir!r} holds a {kind!r} run; {needs}")
    try:
        return load_trained(path)
    except CheckpointError as e:
        raise ConfigError(f"{key}={workdir!r}: {e}") from None


def example_batch(config: ml_collections.ConfigDict) -> dict:
    """The first training batch of ``config`` (its structure defines the state's)."""
    from gen_jax import data as data_lib

    return next(data_lib.make_train_iterator(config, config.seed))


def train_split_spec(config: ml_collections.ConfigDict, example: dict) -> jax.ShapeDtypeStruct:
    """The shape and dtype of ``load_split(config, "train")[0]``, without loading it:
    the split's length, and one example of the (preprocessed) ``example`` batch."""
    from gen_jax import data as data_lib

    x = example["x"]
    return jax.ShapeDtypeStruct((len(data_lib.get_source(config.data, "train")), *x.shape[1:]),
                                x.dtype)


def initial_state(method: Any, config: ml_collections.ConfigDict, mesh: Any, rng: jax.Array,
                  example: dict) -> Any:
    """A fresh state, replicated over ``mesh``: ``method.init(rng, example)``, or for a
    :class:`~gen_jax.registry.Fits` Method ``method.fit(rng, x_train)`` on the whole
    training split, which the runtime loads here (the Method itself reads no data)."""
    from gen_jax import data as data_lib
    from gen_jax import parallel, registry

    rep = parallel.replicated(mesh)
    if isinstance(method, registry.Fits):
        x_train, _ = data_lib.load_split(config, "train")
        return jax.jit(method.fit, out_shardings=rep)(rng, x_train)
    return jax.jit(method.init, out_shardings=rep)(rng, parallel.shard_global_batch(example, mesh))


def abstract_state(method: Any, config: ml_collections.ConfigDict, mesh: Any,
                   example: dict | None = None) -> Any:
    """The state's shapes and dtypes, replicated over ``mesh``, without computing it
    (a :class:`~gen_jax.registry.Fits` Method is traced on the training split's shape,
    so restoring it loads no data and fits nothing)."""
    from gen_jax import parallel, registry

    rep = parallel.replicated(mesh)
    example = example_batch(config) if example is None else example
    if isinstance(method, registry.Fits):
        shapes = jax.eval_shape(method.fit, jax.random.key(0), train_split_spec(config, example))
    else:
        shapes = jax.eval_shape(method.init, jax.random.key(0), example)
    return jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=rep), shapes)
