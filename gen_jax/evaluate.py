"""The sample, eval and bench modes: everything that reads a trained workdir.

Public: :func:`sample_to_file`, :func:`evaluate` (with :func:`sample_metrics`), :func:`benchmark`.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np
import scipy.special

from gen_jax import data as data_lib
from gen_jax import metrics, parallel, registry
from gen_jax.checkpoint import Checkpointer, initial_state
from gen_jax.errors import ConfigError
from gen_jax.likelihood import bits_per_dim
from gen_jax.train import (
    Run,
    draw_samples,
    evaluate_split,
    guarded_step,
    log_prob_fn,
    restore_run,
    sample_inputs,
    setup,
)
from gen_jax.value_range import ValueRange
from gen_jax.workdir import check_writable, write_atomic


def sample_to_file(config: ml_collections.ConfigDict | None, workdir: str | Path, num: int,
                   out: str | Path, seed: int = 0) -> Path:
    """Writes ``num`` float32 samples (NHWC images or (N, D) vectors, in the data's
    value range) from the latest checkpoint to ``out`` (.npy); EMA params where kept.

    Returns:
      The path written.
    """
    if num <= 0:
        raise ConfigError(f"--num={num}: the number of samples must be a positive integer")
    out = Path(out)
    check_writable(out.absolute().parent, "--out directory")
    run = setup(config, workdir)
    state, _ = restore_run(run)
    samples = draw_samples(run, state, num, jax.random.fold_in(run.keys["sample"], seed))
    if out.suffix != ".npy":
        out = out.with_name(out.name + ".npy")
    def write(path: Path) -> None:
        with open(path, "wb") as f:  # a file object: np.save would append ".npy" to a path
            np.save(f, samples)

    write_atomic(out, write)
    return out


def split_log_prob(run: Run, state: Any, split: str = "test", num_samples: int | None = None) -> dict:
    """Mean log_prob (nats per example, and bits/dim) over a whole split."""
    k = num_samples or run.config.eval.log_prob_samples
    fn = log_prob_fn(run, k)
    values = []
    for i, batch in enumerate(data_lib.make_eval_batches(run.config, split, run.mesh.devices.size)):
        rng = jax.random.fold_in(run.keys["log_prob"], i)
        values.append(np.asarray(fn(state, parallel.shard_global_batch({"x": batch["x"]}, run.mesh)["x"],
                                    rng)))
    lp = np.concatenate(values)
    nats = float(lp.mean())
    return {"log_prob_nats": nats, "nll_bpd": bits_per_dim(-nats, run.info.dim),
            "stderr_nats": float(lp.std(ddof=1) / math.sqrt(len(lp))), "num_examples": len(lp),
            "importance_samples": k}


MIN_METRIC_SAMPLES = 10


def _eval_option(config: ml_collections.ConfigDict, key: str, default: Any) -> Any:
    # Workdirs trained before an eval key existed have a config.json without it.
    return config.eval.get(key, default)


def _reference_images01(run: Run, split: str) -> np.ndarray:
    """A split's raw images (``data.classes`` applied) as intensities level / (L - 1) in [0, 1]."""
    source = data_lib.get_source(run.config.data, split)
    x, _ = source.get(np.arange(len(source)))
    return np.asarray(ValueRange(0.0, 1.0, run.info.num_levels).level_to_unit(np.asarray(x, np.float32)))


def _fid_metrics(run: Run, samples01: np.ndarray, split: str) -> dict:
    """FID, KID, precision/recall and (where the weights have logits) Inception Score with
    the FID Inception network; ``num_samples``/``num_reference`` say the n of each.

    The reference is ``eval.fid_reference_stats`` when set (a file from
    ``python -m gen_jax.metrics.fid_stats``); otherwise the split's pool3 statistics
    stream through the network batch by batch and are cached in
    ``workdir/fid_reference_<split>_<n>.npz`` with the features of a fixed random
    subset of n (as many as samples) for KID and precision/recall.
    """
    from gen_jax.metrics import fid_stats
    from gen_jax.metrics import inception as inc

    path = _eval_option(run.config, "inception_path", "")
    variables = inc.load_inception_variables(path)
    apply_fn = inc.inception_apply_fn(variables)
    bs = int(_eval_option(run.config, "inception_batch_size", 50))
    stats_file = _eval_option(run.config, "fid_reference_stats", "")
    ref_n: int | None
    if stats_file:
        ref = fid_stats.load(stats_file, inc.POOL_DIM)
        fid_stats.check_same_weights(ref, inc.load_weights(path)[1], stats_file)
        ref_moments, ref_subset, ref_n, reference = (ref.mu, ref.sigma), ref.features, ref.n, ref.source
    else:
        cache = run.workdir / f"fid_reference_{split}_{len(samples01)}.npz"
        if cache.exists():
            with np.load(cache) as z:
                ref_stats = metrics.FeatureStats(int(z["count"]), z["mean"], z["scatter"])
                ref_subset = z["subset"]
        else:
            n_ref, batches = fid_stats.split_batches(run.config, split, bs)
            ref_stats, ref_subset = fid_stats.stream_stats(apply_fn, batches, n_ref, bs, len(samples01))
            if jax.process_index() == 0:
                def write(path: Path) -> None:
                    with open(path, "wb") as f:
                        np.savez(f, count=ref_stats.count, mean=ref_stats.mean, scatter=ref_stats.scatter,
                                 subset=ref_subset)

                write_atomic(cache, write)
        ref_moments, ref_n, reference = (ref_stats.mean, ref_stats.covariance()), ref_stats.count, split
    pools, logits = zip(*inc.inception_features(
        apply_fn, (samples01[s:s + bs] for s in range(0, len(samples01), bs))), strict=True)
    fake = np.concatenate(pools)
    fake_stats = metrics.FeatureStats.from_features(fake)
    out: dict[str, Any] = {
        "fid": metrics.frechet_distance_from_moments(*ref_moments, fake_stats.mean, fake_stats.covariance()),
        "num_samples": len(fake), "num_reference": ref_n, "fid_reference_examples": ref_n,
        "reference": reference}
    if ref_subset is not None and len(ref_subset) >= 2:
        k = metrics.kid(ref_subset, fake)
        out.update({"kid": k["mean"], "kid_std": k["std"], "kid_subset_size": k["subset_size"],
                    "kid_reference_examples": len(ref_subset),
                    **metrics.precision_recall(ref_subset, fake, k=3),
                    **metrics.density_coverage(ref_subset, fake, k=5)})
    else:
        out.update({"kid": None, "note": f"{stats_file} has no features: no KID or precision/recall"})
    if logits[0] is None:
        out["inception_score"] = None
        out["inception_score_note"] = ("the installed FID Inception weights have no classifier: "
                                       "no Inception Score (digits runs report the digits CNN's)")
    elif len(logits) and len(fake) >= 10:
        probs = scipy.special.softmax(np.concatenate(logits).astype(np.float64), axis=1)
        out["inception_score"], out["inception_score_std"] = metrics.inception_score(probs).values()
    return out


def sample_metrics(run: Run, samples: np.ndarray) -> dict:
    """The sample-quality metrics that apply to the run's data (see gen_jax.metrics.suite).

    digits: the digits CNN's digits-FD, KID, precision/recall, density/coverage,
    classifier score and class shares, against ``eval.reference_split``; 2-D toy
    data: RBF MMD, energy distance (and mode coverage for ring8/grid25) against
    the test split; other images: FID/KID/precision/recall (and IS where the
    weights have logits) with the FID Inception network (the installed weights,
    or ``eval.inception_path``), else a one-line note with the install command.
    """
    if not np.isfinite(samples).all():
        return {"note": "samples are not all finite: no sample metrics"}
    if len(samples) < MIN_METRIC_SAMPLES:  # k-NN balls (k = 5) and covariances need a few samples
        return {"note": f"eval.num_samples={len(samples)} is too few for sample metrics "
                        f"(they need at least {MIN_METRIC_SAMPLES})"}
    config, info = run.config, run.info
    t0 = time.perf_counter()
    if info.kind == "vector":
        ref, _ = data_lib.load_split(config, "test")
        out = metrics.toy2d_metrics(samples, ref, info.name)
        out["reference"] = "test"
    else:
        split = _eval_option(config, "reference_split", "train")
        samples01 = metrics.to_unit_interval(samples, config.data, info.num_levels)
        if info.name == "digits":
            out = metrics.digits_metrics(samples01, _reference_images01(run, split))
        else:
            from gen_jax.metrics.inception_weights import WeightsUnavailable

            try:
                out = _fid_metrics(run, samples01, split)
            except WeightsUnavailable as e:  # not installed: one line saying how, not a crash
                return {"fid": None, "kid": None, "num_samples": len(samples), "note": str(e)}
        out.setdefault("reference", split)
    out["seconds"] = time.perf_counter() - t0
    return out


def evaluate(config: ml_collections.ConfigDict | None, workdir: str | Path) -> dict:
    """Evaluates the latest checkpoint on the test split; writes ``workdir/eval.json``.

    Reports the Method's ``eval_step`` metrics, its ``log_prob`` (where it has one;
    a bound for latent-variable models, with ``eval.log_prob_samples`` importance
    samples), the time to draw ``eval.num_samples`` samples and, unless
    ``eval.sample_metrics`` is off, those samples' quality (:func:`sample_metrics`).
    """
    return evaluate_with_samples(config, workdir)[0]


def evaluate_with_samples(config: ml_collections.ConfigDict | None,
                          workdir: str | Path) -> tuple[dict, np.ndarray | None]:
    """:func:`evaluate`, also returning the ``eval.num_samples`` samples it measured
    (None when that is 0), e.g. to draw them without compiling the sampler again."""
    run = setup(config, workdir)
    check_writable(run.workdir)  # eval.json: fail now, not after the evaluation
    state, step = restore_run(run)
    result: dict[str, Any] = {"method": run.config.method, "data": run.info.name, "step": step,
                              "test": evaluate_split(run, state, "test", step)}
    if isinstance(run.method, registry.HasLogProb):
        result["test_log_prob"] = split_log_prob(run, state)
    n = run.config.eval.num_samples
    samples = None
    if n:
        r_compile, r_timed = jax.random.split(run.keys["bench"])
        inputs = sample_inputs(run, n)  # translation Methods: the validation images
        draw_samples(run, state, n, r_compile, inputs)  # compile
        t0 = time.perf_counter()
        samples = draw_samples(run, state, n, r_timed, inputs)
        dt = time.perf_counter() - t0
        result["sampling"] = {"num_samples": n, "seconds": dt, "samples_per_sec": n / dt,
                              "finite": bool(np.isfinite(samples).all())}
        if _eval_option(run.config, "sample_metrics", True):
            result["sample_metrics"] = sample_metrics(run, samples)
    if jax.process_index() == 0:
        write_atomic(Path(workdir) / "eval.json",
                      lambda p: Path(p).write_text(json.dumps(result, indent=2)))
    return result, samples


def benchmark(config: ml_collections.ConfigDict | None, workdir: str | Path,
              repeats: int = 20) -> dict:
    """Times the compiled train step and sampler on this machine; writes ``bench.json``.

    Uses the workdir's latest checkpoint when there is one, else a fresh init.
    """
    run = setup(config, workdir)
    check_writable(run.workdir)  # bench.json
    example = next(data_lib.make_train_iterator(run.config, run.config.seed))
    batch = parallel.shard_global_batch(example, run.mesh)
    ckpt = Checkpointer(run.workdir, create=False)
    untrained = ckpt.latest_step() is None
    ckpt.close()
    if untrained:  # an untrained model times the same (a closed-form fit: fitted here)
        state = initial_state(run.method, run.config, run.mesh, run.keys["init"], example)
    else:
        state, _ = restore_run(run)
    r_steps, r_compile, r_timed = jax.random.split(run.keys["bench"], 3)
    step_fn = parallel.jit_train_step(guarded_step(run.method), run.mesh, run.options)
    compiled = step_fn.lower(state, batch, r_steps).compile()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    flops = float(cost.get("flops", float("nan"))) if cost else float("nan")
    state, m = compiled(state, batch, jax.random.fold_in(r_steps, 0))  # warm-up
    jax.block_until_ready(m)
    t0 = time.perf_counter()
    for i in range(1, repeats + 1):
        state, m = compiled(state, batch, jax.random.fold_in(r_steps, i))
    jax.block_until_ready((state, m))
    step_time = (time.perf_counter() - t0) / repeats
    n = run.config.train.num_grid_samples
    draw_samples(run, state, n, r_compile)
    t0 = time.perf_counter()
    draw_samples(run, state, n, r_timed)
    sample_time = time.perf_counter() - t0
    result = {"method": run.config.method, "data": run.info.name,
              "devices": [str(d) for d in jax.devices()],
              "batch_size": run.config.data.batch_size, "train_step_ms": 1000 * step_time,
              "train_examples_per_sec": run.config.data.batch_size / step_time,
              "train_step_flops": flops, "sample_batch": n, "sample_ms": 1000 * sample_time}
    if jax.process_index() == 0:
        write_atomic(Path(workdir) / "bench.json",
                      lambda p: Path(p).write_text(json.dumps(result, indent=2)))
    return result


__all__ = ["benchmark", "evaluate", "evaluate_with_samples", "sample_metrics", "sample_to_file",
           "split_log_prob"]
