"""The one generic training loop, and restoring a workdir's latest state.

Public: :func:`train_and_evaluate`, :func:`restore`. The loop jits the
Method's pure ``train_step`` over the device mesh, draws every step's key as
``fold_in(train_rng, step)``, checkpoints the state and the data position
(so a resumed run replays exactly the same batches and keys), evaluates on
the validation split, and writes metrics, sample grids and plots.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import logging
import signal
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from gen_jax import data as data_lib
from gen_jax import parallel, registry, viz
from gen_jax.checkpoint import Checkpointer
from gen_jax.config import config_from_json, config_to_json, validate_config
from gen_jax.errors import CheckpointError, NonFiniteError
from gen_jax.writers import MetricWriter

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Run:
    """Everything a mode needs: the config, Method, mesh and the purpose keys."""

    config: ml_collections.ConfigDict
    workdir: Path
    method: Any
    mesh: jax.sharding.Mesh
    info: data_lib.DataInfo
    keys: dict[str, jax.Array]
    compiled: dict = dataclasses.field(default_factory=dict)

    def jitted(self, key: Any, build) -> Any:
        """``build()``'s jitted function, made once per Run (jit caches by function
        identity, and bound methods and lambdas are new objects on every call)."""
        if key not in self.compiled:
            self.compiled[key] = build()
        return self.compiled[key]


def workdir_config(workdir: str | Path) -> ml_collections.ConfigDict:
    """The config a workdir was trained with (``workdir/config.json``)."""
    path = Path(workdir) / "config.json"
    if not path.exists():
        raise CheckpointError(f"{path} does not exist: is {workdir!s} a gen_jax workdir? "
                              "Pass --config to say which config to use")
    return config_from_json(path.read_text())


def setup(config: ml_collections.ConfigDict | None, workdir: str | Path) -> Run:
    """Builds the Method, the mesh and the root keys (one split, by purpose)."""
    parallel.maybe_initialize_distributed()
    if config is None:
        config = workdir_config(workdir)
    validate_config(config)
    info = data_lib.dataset_info(config.data)
    method = registry.build(config, info)
    mesh = parallel.make_mesh()
    parallel.check_batch_size(config.data.batch_size, mesh)
    parallel.check_batch_size(config.data.eval_batch_size, mesh, "data.eval_batch_size")
    # One key per purpose; every use below derives from its own key with fold_in.
    names = ("init", "train", "eval", "log_prob", "sample", "figures", "bench")
    keys = dict(zip(names, jax.random.split(jax.random.key(config.seed), len(names)), strict=True))
    return Run(config, Path(workdir), method, mesh, info, keys)


def _example_batch(run: Run) -> dict:
    it = data_lib.make_train_iterator(run.config, run.config.seed)
    return next(it)


def _init_state(run: Run, example: dict) -> Any:
    rep = parallel.replicated(run.mesh)
    init = jax.jit(run.method.init, out_shardings=rep)
    return init(run.keys["init"], parallel.shard_batch(example, run.mesh))


def _abstract_state(run: Run, example: dict) -> Any:
    rep = parallel.replicated(run.mesh)
    shapes = jax.eval_shape(run.method.init, run.keys["init"], example)
    return jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=rep), shapes)


def restore(config: ml_collections.ConfigDict | None, workdir: str | Path,
            step: int | None = None) -> Any:
    """The latest (or ``step``'s) TrainState of a workdir.

    Args:
      config: the config; None = the one the workdir was trained with.
      workdir: the run directory.
      step: a particular checkpoint step; None = the latest readable one.

    Returns:
      The restored TrainState, replicated over the devices.
    """
    return restore_run(setup(config, workdir), step)[0]


def restore_run(run: Run, step: int | None = None) -> tuple[Any, int]:
    """Restores ``run``'s workdir; returns (state, step)."""
    ckpt = Checkpointer(run.workdir, run.config.train.keep_checkpoints, async_save=False)
    try:
        if ckpt.latest_step() is None:
            raise CheckpointError(f"no checkpoint in {ckpt.directory}: train first "
                                  f"(python -m gen_jax --workdir={run.workdir})")
        state, _, restored_step = ckpt.restore(_abstract_state(run, _example_batch(run)),
                                               run.config, step)
    finally:
        ckpt.close()
    return state, restored_step


def guarded_step(method: Any):
    """The Method's step, with a non-finite loss turning the update into a no-op.

    The step counter still advances (so keys and batches move on); the host
    then raises or skips according to ``train.nonfinite``.
    """

    def step(state, batch, rng):
        new_state, metrics = method.train_step(state, batch, rng)
        ok = jnp.isfinite(metrics["loss"])
        new_state = jax.tree.map(lambda n, o: jnp.where(ok, n, o), new_state, state)
        new_state = new_state.replace(step=state.step + 1)
        return new_state, {**metrics, "finite": ok}

    return step


def evaluate_split(run: Run, state: Any, split: str, step: int) -> dict:
    """Example-weighted means of ``eval_step`` over a split."""
    eval_step = run.jitted("eval_step", lambda: parallel.jit_eval_step(run.method.eval_step, run.mesh))
    totals: dict[str, float] = {}
    count = 0
    batches = data_lib.make_eval_batches(run.config, split, run.mesh.devices.size,
                                         run.config.eval.max_batches)
    for i, batch in enumerate(batches):
        rng = jax.random.fold_in(jax.random.fold_in(run.keys["eval"], step), i)
        metrics = jax.device_get(eval_step(state, parallel.shard_batch(batch, run.mesh), rng))
        n = len(batch["x"])
        for k, v in metrics.items():
            totals[k] = totals.get(k, 0.0) + float(v) * n
        count += n
    return {k: v / count for k, v in totals.items()} | {"num_examples": count}


def draw_samples(run: Run, state: Any, num: int, rng: jax.Array) -> np.ndarray:
    """``num`` samples from one compiled call of the Method's ``sample``."""
    fn = run.jitted(("sample", num), lambda: jax.jit(
        lambda s, r: run.method.sample(s, r, num), out_shardings=parallel.replicated(run.mesh)))
    return np.asarray(jax.device_get(fn(state, rng)), np.float32)


def _with_num_samples(fn, num_samples: int):
    """``fn`` with ``num_samples=`` bound where the Method's log_prob takes it."""
    if "num_samples" in inspect.signature(fn).parameters:
        return functools.partial(fn, num_samples=num_samples)
    return fn


def log_prob_fn(run: Run, num_samples: int):
    """The Method's ``log_prob(state, x, rng)`` compiled over the mesh, with
    ``num_samples`` importance samples where the Method takes that option."""

    def build():
        rep, data = parallel.replicated(run.mesh), parallel.batch_sharding(run.mesh)
        return jax.jit(_with_num_samples(run.method.log_prob, num_samples),
                       in_shardings=(rep, data, rep), out_shardings=data)

    return run.jitted(("log_prob", num_samples), build)


def _local(tree: Any) -> Any:
    """This process's copy of a replicated pytree: figures are drawn by process 0
    alone, so they must not run collectives over the global mesh."""
    return jax.tree.map(lambda a: a.addressable_data(0) if isinstance(a, jax.Array) else a, tree)


def write_figures(run: Run, state: Any, step: int, final: bool = False) -> None:
    """Sample grid (and reconstructions) or 2-D scatter/density, and loss curves."""
    if jax.process_index() != 0:
        return
    out = run.workdir / "samples"
    local = _local(state)
    r_sample, r_recon, r_density = jax.random.split(jax.random.fold_in(run.keys["figures"], step), 3)
    num = run.config.train.num_grid_samples
    if run.info.kind != "image":
        num = max(num, 1000)  # a 2-D scatter needs more points than an image grid
    sample = run.jitted(("figure_sample", num),
                        lambda: jax.jit(lambda s, r: run.method.sample(s, r, num)))
    samples = np.asarray(sample(local, r_sample), np.float32)
    if run.info.kind == "image":
        vr = tuple(run.config.data.value_range)
        viz.save_image_grid(out / f"step_{step:06d}.png", samples, value_range=vr)
        if hasattr(run.method, "reconstruct"):
            x = next(data_lib.make_eval_batches(run.config, "val"))["x"][:32]
            recon = run.jitted("figure_recon", lambda: jax.jit(run.method.reconstruct))
            pairs = np.stack([x, np.asarray(recon(local, x, r_recon))], 1)  # original, recon, ...
            viz.save_image_grid(out / f"recon_step_{step:06d}.png", pairs.reshape(-1, *x.shape[1:]),
                                nrow=8, value_range=vr)
    else:
        ref, _ = data_lib.load_split(run.config, "val")
        viz.save_scatter_2d(out / f"step_{step:06d}.png", samples, data=ref[:2000],
                            title=f"{run.config.method} samples, step {step}")
        if final and hasattr(run.method, "log_prob"):
            lp = jax.jit(_with_num_samples(run.method.log_prob, run.config.eval.log_prob_samples))
            viz.save_density_2d(out / "density.png",
                                lambda pts: np.asarray(lp(local, jnp.asarray(pts), r_density)),
                                resolution=100, data=ref, title=f"{run.config.method} density")
    records = viz.read_metrics_jsonl(run.workdir / "metrics.jsonl")
    bookkeeping = {"step", "split", "num_examples", "skipped_updates"}
    keys = sorted({k for r in records for k, v in r.items()
                   if k not in bookkeeping and isinstance(v, (int, float))})
    viz.save_loss_curves(run.workdir / "loss_curves.png", records, keys=keys,
                         title=f"{run.config.method} on {run.info.name}")


class _Preemption:
    """Turns SIGTERM into a flag the loop checks between steps (then it saves)."""

    def __init__(self):
        self.requested = False
        self._old = None

    def __enter__(self):
        try:
            self._old = signal.signal(signal.SIGTERM, self._handle)
        except ValueError:  # not the main thread (e.g. a notebook worker): no handler
            self._old = None
        return self

    def _handle(self, signum, frame):
        self.requested = True

    def __exit__(self, *exc):
        if self._old is not None:
            signal.signal(signal.SIGTERM, self._old)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | Path) -> Any:
    """Trains ``config`` in ``workdir``, resuming from its latest checkpoint.

    Args:
      config: the experiment config.
      workdir: the run directory (created if needed).

    Returns:
      The final TrainState (or the state at a SIGTERM, after saving it).
    """
    run = setup(config, workdir)
    config, workdir = run.config, run.workdir
    workdir.mkdir(parents=True, exist_ok=True)
    iterator = data_lib.make_train_iterator(config, config.seed, jax.process_index(),
                                            jax.process_count())
    example = _example_batch(run)
    ckpt = Checkpointer(workdir, config.train.keep_checkpoints)
    try:
        if ckpt.latest_step() is not None:
            state, data_state, start = ckpt.restore(_abstract_state(run, example), config)
            iterator.set_state(data_state)
            log.info("resumed from step %d in %s", start, ckpt.directory)
        else:
            state, start = _init_state(run, example), 0
        if jax.process_index() == 0:
            (workdir / "config.json").write_text(config_to_json(config))
        state = _loop(run, state, start, iterator, ckpt)
    finally:
        ckpt.close()
    return state


def _loop(run: Run, state: Any, start: int, iterator, ckpt: Checkpointer) -> Any:
    config, t = run.config, run.config.train
    step_fn = parallel.jit_train_step(guarded_step(run.method), run.mesh)
    writer = MetricWriter(run.workdir, t.num_steps, start)
    pending: list[tuple[int, dict]] = []
    tick, tick_step = time.perf_counter(), start

    def check(fetched: list[dict]) -> list[int]:
        bad = [s for (s, _), m in zip(pending, fetched, strict=True) if not bool(m["finite"])]
        if bad and t.nonfinite == "raise":
            last = ckpt.latest_step()
            raise NonFiniteError(
                f"non-finite loss at step {bad[0]} (the update was not applied); last good "
                f"checkpoint: {'none' if last is None else f'step {last} in {ckpt.directory}'}."
                " Lower optim.learning_rate, set optim.grad_clip, or train.nonfinite='skip'")
        return bad

    def flush(step: int) -> None:
        nonlocal pending, tick, tick_step
        if not pending:
            return
        fetched = jax.device_get([m for _, m in pending])
        bad = check(fetched)
        good = [m for m in fetched if bool(m["finite"])]
        means = {k: float(np.mean([m[k] for m in good])) for k in good[0] if k != "finite"} if good else {}
        now = time.perf_counter()
        means["steps_per_sec"] = (step - tick_step) / max(now - tick, 1e-9)
        means["skipped_updates"] = len(bad)
        writer.write(step, "train", means)
        pending, tick, tick_step = [], now, step

    with _Preemption() as preempt:
        step = start
        try:
            while step < t.num_steps:
                batch = parallel.shard_batch(next(iterator), run.mesh)
                rng = jax.random.fold_in(run.keys["train"], step)
                state, metrics = step_fn(state, batch, rng)
                step += 1
                pending.append((step, metrics))
                writer.advance()
                if step % t.log_every == 0 or step == t.num_steps:
                    flush(step)
                if t.checkpoint_every and step % t.checkpoint_every == 0:
                    check(jax.device_get([m for _, m in pending]))  # never save after a NaN
                    ckpt.save(step, state, iterator.get_state(), config)
                if t.eval_every and step % t.eval_every == 0 and step < t.num_steps:
                    writer.write(step, "val", evaluate_split(run, state, "val", step))
                    write_figures(run, state, step)
                if preempt.requested:
                    flush(step)
                    ckpt.save(step, state, iterator.get_state(), config, force=True)
                    ckpt.wait()
                    log.warning("SIGTERM at step %d: checkpoint saved; rerun to resume", step)
                    return state
            flush(step)
            ckpt.save(step, state, iterator.get_state(), config, force=True)
            if step > start or not (run.workdir / "samples").exists():
                writer.write(step, "val", evaluate_split(run, state, "val", step))
                write_figures(run, state, step, final=True)
        finally:
            writer.close()
    return state
