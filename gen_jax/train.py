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
import logging
import signal
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from gen_jax import checkpoint as ckpt_lib
from gen_jax import data as data_lib
from gen_jax import parallel, registry, viz
from gen_jax.checkpoint import Checkpointer, resume_hint
from gen_jax.compilation_cache import enable_compilation_cache
from gen_jax.config import config_to_json, multi_step_choice, validate_config, workdir_config
from gen_jax.errors import CheckpointError, Interrupted, NonFiniteError
from gen_jax.workdir import WorkdirLock, check_writable, remove_if_unused, write_atomic
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
    # XLA options of the run's programs (parallel.compiler_options: runtime.cpu_conv_fusion)
    options: dict[str, str] | None = None

    def jitted(self, key: Any, build) -> Any:
        """``build()``'s jitted function, made once per Run (jit caches by function
        identity, and bound methods and lambdas are new objects on every call)."""
        if key not in self.compiled:
            self.compiled[key] = build()
        return self.compiled[key]


def setup(config: ml_collections.ConfigDict | None, workdir: str | Path) -> Run:
    """Builds the Method, the mesh and the root keys (one split, by purpose)."""
    parallel.maybe_initialize_distributed()
    if config is None:
        config = workdir_config(workdir)
    validate_config(config)
    enable_compilation_cache(config)
    info = data_lib.dataset_info(config.data)
    method = registry.build(config, info)
    mesh = parallel.make_mesh()
    parallel.check_batch_size(config.data.batch_size, mesh)
    parallel.check_batch_size(config.data.eval_batch_size, mesh, "data.eval_batch_size")
    # One key per purpose; every use below derives from its own key with fold_in.
    names = ("init", "train", "eval", "log_prob", "sample", "figures", "bench")
    keys = dict(zip(names, jax.random.split(jax.random.key(config.seed), len(names)), strict=True))
    return Run(config, Path(workdir), method, mesh, info, keys, options=parallel.compiler_options(config))


def _example_batch(run: Run) -> dict:
    return ckpt_lib.example_batch(run.config)


def _init_state(run: Run, example: dict) -> Any:
    return ckpt_lib.initial_state(run.method, run.config, run.mesh, run.keys["init"], example)


def _abstract_state(run: Run, example: dict) -> Any:
    return ckpt_lib.abstract_state(run.method, run.config, run.mesh, example)


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
    ckpt = Checkpointer(run.workdir, run.config.train.keep_checkpoints, async_save=False, create=False)
    try:
        if ckpt.latest_step() is None:
            raise CheckpointError(f"no checkpoint in {ckpt.directory}: train first "
                                  f"(python -m gen_jax --workdir={run.workdir})")
        state, _, restored_step = ckpt.restore(_abstract_state(run, _example_batch(run)),
                                               run.config, step)
    finally:
        ckpt.close()
    return state, restored_step


def _no_new_nonfinite(new: Any, old: Any) -> jax.Array:
    """Whether the update made no finite value non-finite (values that were NaN or inf
    before, such as a fit's NaN-padded trace, are bookkeeping, not divergence)."""
    flags = [jnp.all(jnp.isfinite(n) | ~jnp.isfinite(o))
             for n, o in zip(jax.tree.leaves(new), jax.tree.leaves(old), strict=True)
             if jnp.issubdtype(jnp.result_type(n), jnp.inexact)]
    return jnp.all(jnp.stack(flags)) if flags else jnp.bool_(True)


def guarded_step(method: Any, train_step: Any = None):
    """The Method's step (or ``train_step``, one stage's step of a staged Method),
    with a non-finite loss or updated state turning the update into a no-op.

    A finite loss can still come with a non-finite gradient (e.g. through a
    square root at zero), so the new state is checked too, not only the loss.
    The step counter still advances (so keys and batches move on); the host
    then raises or skips according to ``train.nonfinite``.
    """

    train_step = train_step or method.train_step

    def step(state, batch, rng):
        new_state, metrics = train_step(state, batch, rng)
        ok = jnp.isfinite(metrics["loss"]) & _no_new_nonfinite(new_state, state)
        new_state = jax.tree.map(lambda n, o: jnp.where(ok, n, o), new_state, state)
        new_state = new_state.replace(step=state.step + 1)
        return new_state, {**metrics, "finite": ok}

    return step


def evaluate_split(run: Run, state: Any, split: str, step: int) -> dict:
    """Example-weighted means of ``eval_step`` over a split."""
    eval_step = run.jitted("eval_step", lambda: parallel.jit_eval_step(run.method.eval_step, run.mesh,
                                                                           run.options))
    totals: dict[str, float] = {}
    count = 0
    batches = data_lib.make_eval_batches(run.config, split, run.mesh.devices.size,
                                         run.config.eval.max_batches)
    for i, batch in enumerate(batches):
        rng = jax.random.fold_in(jax.random.fold_in(run.keys["eval"], step), i)
        metrics = jax.device_get(eval_step(state, parallel.shard_global_batch(batch, run.mesh), rng))
        n = len(batch["x"])
        for k, v in metrics.items():
            totals[k] = totals.get(k, 0.0) + float(v) * n
        count += n
    return {k: v / count for k, v in totals.items()} | {"num_examples": count}


def draw_samples(run: Run, state: Any, num: int, rng: jax.Array,
                 inputs: np.ndarray | None = None) -> np.ndarray:
    """``num`` samples from one compiled call of the Method's ``sample``; for a
    :class:`registry.Translates` Method, translations of ``inputs`` (data images) when given."""
    rep = parallel.replicated(run.mesh)
    if inputs is None:
        fn = run.jitted(("sample", num), lambda: jax.jit(
            lambda s, r: run.method.sample(s, r, num), out_shardings=rep, compiler_options=run.options))
        return np.asarray(jax.device_get(fn(state, rng)), np.float32)
    fn = run.jitted(("sample_inputs", num), lambda: jax.jit(
        lambda s, r, x: run.method.sample(s, r, num, inputs=x), out_shardings=rep,
        compiler_options=run.options))
    return np.asarray(jax.device_get(fn(state, rng, jnp.asarray(inputs))), np.float32)


def sample_inputs(run: Run, num: int) -> np.ndarray | None:
    """What ``sample`` conditions on when samples are measured: for a
    :class:`registry.Translates` Method, up to ``num`` validation images (the Method tiles
    them to ``num``); None for every other Method."""
    if not isinstance(run.method, registry.Translates):
        return None
    x, _ = data_lib.load_split(run.config, "val")
    return x[:num]


def log_prob_fn(run: Run, num_samples: int):
    """The Method's ``log_prob(state, x, rng, num_samples=...)`` compiled over the mesh
    (every HasLogProb takes ``num_samples``; exact ones ignore it)."""

    def build():
        rep, data = parallel.replicated(run.mesh), parallel.batch_sharding(run.mesh)
        # replicated output: every process can read all of it
        return jax.jit(functools.partial(run.method.log_prob, num_samples=num_samples),
                       in_shardings=(rep, data, rep), out_shardings=rep, compiler_options=run.options)

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
                        lambda: jax.jit(lambda s, r: run.method.sample(s, r, num),
                                        compiler_options=run.options))
    samples = np.asarray(sample(local, r_sample), np.float32)
    if run.info.kind == "image":
        vr = tuple(run.config.data.value_range)
        viz.save_image_grid(out / f"step_{step:06d}.png", samples, value_range=vr)
        if isinstance(run.method, registry.HasReconstruct):
            x = next(data_lib.make_eval_batches(run.config, "val"))["x"][:32]
            recon = run.jitted("figure_recon", lambda: jax.jit(run.method.reconstruct,
                                                               compiler_options=run.options))
            pairs = np.stack([x, np.asarray(recon(local, x, r_recon))], 1)  # original, recon, ...
            viz.save_image_grid(out / f"recon_step_{step:06d}.png", pairs.reshape(-1, *x.shape[1:]),
                                nrow=8, value_range=vr)
    else:
        ref, _ = data_lib.load_split(run.config, "val")
        viz.save_scatter_2d(out / f"step_{step:06d}.png", samples, data=ref[:2000],
                            title=f"{run.config.method} samples, step {step}")
        if final and isinstance(run.method, registry.HasLogProb):
            lp = jax.jit(functools.partial(run.method.log_prob, num_samples=run.config.eval.log_prob_samples))
            viz.save_density_2d(out / "density.png",
                                lambda pts: np.asarray(lp(local, jnp.asarray(pts), r_density)),
                                resolution=100, data=ref, title=f"{run.config.method} density")
    records = viz.read_metrics_jsonl(run.workdir / "metrics.jsonl")
    bookkeeping = {"step", "split", "num_examples", "skipped_updates"}
    keys = sorted({k for r in records for k, v in r.items()
                   if k not in bookkeeping and isinstance(v, (int, float))})
    viz.save_loss_curves(run.workdir / "loss_curves.png", records, keys=keys,
                         title=f"{run.config.method} on {run.info.name}")


def dry_run(config: ml_collections.ConfigDict) -> dict[str, Any]:
    """Traces every program a training run compiles, on abstract values (``jax.eval_shape``):
    init (or a Fits Method's fit), the guarded train step (one per stage of a
    :class:`registry.HasStages` Method), the eval step, the sampler and, where the Method
    has them, ``log_prob`` and ``reconstruct``. A config's key, shape and dtype errors show
    in seconds, before a long job spends minutes compiling; nothing is compiled, trained
    or written (the data source is read for one batch of each split).

    Returns:
      Each program's output shapes (``jax.ShapeDtypeStruct`` trees), by name:
      "state", "train_step" (or "train_step/stage<k>"), "eval_step", "sample", and
      "log_prob", "reconstruct" where present; "train_steps" (metrics stacked per step)
      with ``train.steps_per_call`` > 1.
    """
    run = setup(config, Path("."))
    method, keys = run.method, run.keys
    example = _example_batch(run)
    state = _abstract_state(run, example)
    out: dict[str, Any] = {"state": state}
    if isinstance(method, registry.HasStages):
        stages = sorted({method.stage_of(s) for s in range(config.train.num_steps)})
        steps = {f"train_step/stage{k}": method.stage_train_step(k) for k in stages}
    else:
        steps = {"train_step": None}
    for name, stage_step in steps.items():
        out[name] = jax.eval_shape(guarded_step(method, stage_step), state, example, keys["train"])[1]
    k = config.train.steps_per_call
    if k > 1:  # the k-step program of the first stage, on k stacked example batches
        programs = _Programs(run)
        programs.choose_form(state, example)
        stacked = jax.tree.map(lambda x: np.stack([x] * k), example)
        out["train_steps"] = jax.eval_shape(scanned_steps(programs.one_step_fn(0), k, programs.unroll),
                                            state, stacked, keys["train"], 0)[1]
    batch = next(data_lib.make_eval_batches(config, "val", max_batches=1))
    out["eval_step"] = jax.eval_shape(method.eval_step, state, batch, keys["eval"])
    num = config.train.num_grid_samples
    inputs = sample_inputs(run, num)
    if inputs is None:
        out["sample"] = jax.eval_shape(lambda s, r: method.sample(s, r, num), state, keys["sample"])
    else:
        out["sample"] = jax.eval_shape(lambda s, r, x: method.sample(s, r, num, inputs=x),
                                       state, keys["sample"], inputs)
    if isinstance(method, registry.HasLogProb):
        out["log_prob"] = jax.eval_shape(
            functools.partial(method.log_prob, num_samples=config.eval.log_prob_samples),
            state, batch["x"], keys["log_prob"])
    if isinstance(method, registry.HasReconstruct):
        out["reconstruct"] = jax.eval_shape(method.reconstruct, state, batch["x"], keys["figures"])
    return out


def _agreed_stop(preempt: "_Preemption", step: int, t: ml_collections.ConfigDict) -> bool:
    """Whether to stop now. With several processes a signal may reach them at different
    steps; they must agree (Orbax's save is collective), so they compare flags at the
    log and checkpoint steps only, where the loop already waits for the devices."""
    if jax.process_count() == 1:
        return preempt.requested is not None
    if step % t.log_every and not (t.checkpoint_every and step % t.checkpoint_every == 0):
        return False
    from jax.experimental import multihost_utils

    flags = multihost_utils.process_allgather(np.int8(preempt.requested is not None))
    if flags.any() and preempt.requested is None:
        preempt.requested = "a signal to another process"
    return bool(flags.any())


class _Preemption:
    """Turns SIGTERM and SIGINT (Ctrl-C) into a flag the loop checks between steps;
    the loop then saves and stops. A second Ctrl-C interrupts at once."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self):
        self.requested: str | None = None
        self._old: dict = {}

    def __enter__(self):
        for sig in self.SIGNALS:
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread (e.g. a notebook worker): no handler
                pass
        return self

    def _handle(self, signum, frame):
        self.requested = signal.Signals(signum).name
        if signum == signal.SIGINT:  # a second Ctrl-C: the usual KeyboardInterrupt
            signal.signal(signal.SIGINT, signal.default_int_handler)
        log.warning("%s received: saving a checkpoint after this step", self.requested)

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | Path,
                       resume_step: int | None = None) -> Any:
    """Trains ``config`` in ``workdir``, resuming from its latest checkpoint.

    Args:
      config: the experiment config.
      workdir: the run directory (created if needed; one training process at a time).
      resume_step: resume from this checkpoint instead of the latest; the later
        checkpoints are moved aside (renamed, never deleted).

    Returns:
      The final TrainState.

    Raises:
      Interrupted: SIGTERM/SIGINT stopped the run after it saved a checkpoint.
      NonFiniteError: a non-finite loss (``train.nonfinite='raise'``).
      ConfigError, DataError, CheckpointError, WorkdirError: bad input, before training.
    """
    run = setup(config, workdir)
    config, workdir = run.config, run.workdir
    check_writable(workdir)
    created = not workdir.exists()
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        with WorkdirLock(workdir):
            return _train_locked(run, resume_step)
    except BaseException:
        remove_if_unused(workdir, created)
        raise


def _train_locked(run: Run, resume_step: int | None) -> Any:
    config, workdir = run.config, run.workdir
    iterator = data_lib.make_train_iterator(config, config.seed, jax.process_index(),
                                            jax.process_count())
    example = _example_batch(run)
    ckpt = Checkpointer(workdir, config.train.keep_checkpoints)
    try:
        steps = ckpt.steps()
        if resume_step is not None:
            if resume_step not in steps:
                raise CheckpointError(f"--resume_step={resume_step}: no such checkpoint in "
                                      f"{ckpt.directory}; steps on disk: {steps or 'none'}")
            ckpt.check_config(config, resume_step)
            moved = ckpt.truncate_after(resume_step)
            if moved:
                log.warning("resuming from step %d: moved %d later checkpoint(s) aside (%s)",
                            resume_step, len(moved), ", ".join(p.name for p in moved))
        if steps:
            state, data_state, start = ckpt.restore(_abstract_state(run, example), config,
                                                    move_aside=True)
            iterator.set_state(data_state)
            log.info("resumed from step %d in %s", start, ckpt.directory)
        else:
            state, start = _init_state(run, example), 0
        if jax.process_index() == 0:
            write_atomic(workdir / "config.json", lambda p: p.write_text(config_to_json(config)))
        state = _loop(run, state, start, iterator, ckpt, example)
    finally:
        ckpt.close()
    return state


def scanned_steps(step: Any, num: int, unroll: bool = False) -> Any:
    """``num`` consecutive calls of ``step`` (a guarded train step) as one program:
    ``(state, batches, key, step0) -> (state, metrics)``, a ``lax.scan`` over ``num``
    stacked batches (``unroll``: ``num`` copies of the step in sequence instead) whose
    i-th step gets the key ``fold_in(key, step0 + i)``, the key the loop gives that step
    when it calls ``step`` alone; the metrics come stacked."""

    def steps(state, batches, key, step0):
        if unroll:
            out = []
            for i in range(num):
                batch = jax.tree.map(lambda b, i=i: b[i], batches)
                state, metrics = step(state, batch, jax.random.fold_in(key, step0 + i))
                out.append(metrics)
            return state, jax.tree.map(lambda *ms: jnp.stack(ms), *out)

        def body(s, xs):
            batch, i = xs
            return step(s, batch, jax.random.fold_in(key, step0 + i))

        return jax.lax.scan(body, state, (batches, jnp.arange(num, dtype=jnp.int32)))

    return steps


class _Programs:
    """The run's compiled train programs: the guarded step (one per stage of a staged
    Method, registry.HasStages), and with ``train.steps_per_call`` = k > 1 also k steps
    in one call, each compiled when first used."""

    def __init__(self, run: Run):
        self.run, self.k = run, run.config.train.steps_per_call
        self.staged = isinstance(run.method, registry.HasStages)
        choice = multi_step_choice(run.config)
        # "auto" before :meth:`choose_form` looks at the step: unrolled on CPU
        self.unroll = choice == "unroll" or (choice == "auto" and jax.default_backend() == "cpu")
        self._compiled: dict[tuple[int, int], Any] = {}

    def choose_form(self, state: Any, batch: dict) -> None:
        """Resolves ``runtime.multi_step="auto"`` for k > 1 from the first stage's step on
        ``state`` and one ``batch``: unrolled on CPU when the step has a convolution (XLA:CPU
        runs conv weight gradients inside a loop body 10-20x slower: the 8x8 conv VAE 5
        steps/s scanned, 104 unrolled, 82 one per call), else a scan (one copy of the step to
        compile: the 2-D MLP VAE compiles 10 steps in 3.1 s scanned, 13.1 s unrolled;
        experiments/results/bench_steps_per_call.md)."""
        if self.k == 1 or multi_step_choice(self.run.config) != "auto" or jax.default_backend() != "cpu":
            return
        jaxpr = jax.make_jaxpr(self.one_step_fn(0))(state, batch, self.run.keys["train"])
        self.unroll = "conv_general_dilated" in str(jaxpr)

    def one_step_fn(self, step: int) -> Any:
        """The guarded step of ``step``'s stage (not compiled)."""
        method = self.run.method
        return guarded_step(method, method.stage_train_step(self.stage(step)) if self.staged else None)

    def stage(self, step: int) -> int:
        return self.run.method.stage_of(step) if self.staged else 0

    def __call__(self, step: int, num: int) -> Any:
        """The program that runs steps ``step .. step + num - 1`` (``num`` is 1 or k)."""
        stage = self.stage(step)
        if (stage, num) not in self._compiled:
            run, one = self.run, self.one_step_fn(step)
            self._compiled[stage, num] = (
                parallel.jit_train_step(one, run.mesh, run.options) if num == 1 else
                parallel.jit_train_steps(scanned_steps(one, num, self.unroll), run.mesh, run.options))
        return self._compiled[stage, num]

    def one(self, step: int) -> Any:
        """The one-step program of ``step``'s stage: ``(state, batch, rng) -> (state, metrics)``."""
        return self(step, 1)

    def call_length(self, step: int) -> int:
        """k when the k steps from ``step`` on stay in one stage and pass no step the
        loop stops at (log, evaluation, checkpoint, the end), else 1: the steps up to
        such a step run one per call, so only two programs are compiled per stage."""
        t = self.run.config.train
        end = step + self.k
        if self.k == 1 or end > t.num_steps:
            return 1
        for every in (t.log_every, t.checkpoint_every, t.eval_every):
            if every and (step // every + 1) * every < end:
                return 1
        if self.staged and any(self.stage(s) != self.stage(step) for s in range(step + 1, end)):
            return 1
        return self.k


def _loop(run: Run, state: Any, start: int, iterator, ckpt: Checkpointer, example: dict) -> Any:
    config, t = run.config, run.config.train
    programs = _Programs(run)
    programs.choose_form(state, example)
    ckpt.expect_finite_like(state)
    writer = MetricWriter(run.workdir, t.num_steps, start)
    # (the step count after a call, the steps it ran, its metrics: scalars, or stacked per step)
    pending: list[tuple[int, int, dict]] = []
    tick, tick_step = time.perf_counter(), start

    skipped, reported = 0, set()

    def per_step(fetched: list[dict]) -> list[tuple[int, dict]]:
        """(step, that step's metrics) for every step of the pending calls."""
        out = []
        for (end, num, _), m in zip(pending, fetched, strict=True):
            if num == 1:
                out.append((end, m))
            else:
                out.extend((end - num + 1 + i, {k: v[i] for k, v in m.items()}) for i in range(num))
        return out

    def check(fetched: list[dict]) -> list[int]:
        nonlocal skipped
        bad = [s for s, m in per_step(fetched) if not bool(m["finite"])]
        if bad and t.nonfinite == "raise":
            ckpt.wait()
            last = ckpt.latest_step()
            raise NonFiniteError(
                f"non-finite loss or update at step {bad[0]} (the update was not applied); last "
                f"saved checkpoint: {'none' if last is None else f'step {last} in {ckpt.directory}'}. "
                + resume_hint(ckpt))
        for s in bad:
            if s not in reported:
                reported.add(s)
                skipped += 1
                log.warning("step %d: non-finite loss or update; the update was skipped "
                            "(%d skipped so far)", s, skipped)
        return bad

    def flush(step: int) -> None:
        nonlocal pending, tick, tick_step
        if not pending:
            return
        fetched = jax.device_get([m for _, _, m in pending])
        bad = check(fetched)
        good = [m for _, m in per_step(fetched) if bool(m["finite"])]
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
                num = programs.call_length(step)
                if num == 1:
                    batch = parallel.shard_batch(next(iterator), run.mesh)
                    rng = jax.random.fold_in(run.keys["train"], step)
                    state, metrics = programs.one(step)(state, batch, rng)
                else:
                    batches = [next(iterator) for _ in range(num)]
                    stacked = jax.tree.map(lambda *xs: np.stack(xs), *batches)
                    state, metrics = programs(step, num)(
                        state, parallel.shard_batches(stacked, run.mesh), run.keys["train"], step)
                step += num
                pending.append((step, num, metrics))
                writer.advance(num)
                if step % t.log_every == 0 or step == t.num_steps:
                    flush(step)
                if t.checkpoint_every and step % t.checkpoint_every == 0:
                    # never save after a NaN: a bad step was not applied, but stop first
                    check(jax.device_get([m for _, _, m in pending]))
                    ckpt.save(step, state, iterator.get_state(), config)
                if t.eval_every and step % t.eval_every == 0 and step < t.num_steps:
                    writer.write(step, "val", evaluate_split(run, state, "val", step))
                    write_figures(run, state, step)
                if _agreed_stop(preempt, step, t):
                    flush(step)
                    ckpt.save(step, state, iterator.get_state(), config, force=True)
                    ckpt.wait()
                    raise Interrupted(f"stopped by {preempt.requested} at step {step} of "
                                      f"{t.num_steps}; checkpoint saved in {ckpt.directory}; rerun "
                                      "the same command to resume", step, preempt.requested)
            flush(step)
            trained = step - start
            if trained and skipped > trained // 2:
                log.warning("%d of the %d updates of this run were skipped as non-finite: the "
                            "model barely trained; lower optim.learning_rate or set optim.grad_clip",
                            skipped, trained)
            ckpt.save(step, state, iterator.get_state(), config, force=True)
            if step > start or not (run.workdir / "samples").exists():
                writer.write(step, "val", evaluate_split(run, state, "val", step))
                write_figures(run, state, step, final=True)
        finally:
            writer.close()
    return state
