"""Evaluate a trained Method on the offline defect benchmark (gen_jax/anomaly/benchmark.py).

    python -m gen_jax.anomaly.evaluate --workdir=RUN [--workdir=RUN2 ...] [--sigma=4] [--out=FILE]
        [--split=val]

Each workdir is a run trained on ``defects:<category>`` (its good crops). Its
Method scores the category's fixed test set: image AUROC from ``anomaly_score``
(:class:`~gen_jax.registry.HasAnomalyScore`; without one, the maximum of the map),
pixel AUROC and PRO from ``anomaly_map`` (:class:`~gen_jax.registry.HasAnomalyMap`),
optionally Gaussian-smoothed with ``sigma`` pixels (as MVTec AD baselines smooth
reconstruction-error maps), overall and per defect type. Writes JSON (default
``<workdir>/anomaly_eval.json``; several workdirs: one JSON keyed by category).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np
from scipy import ndimage

from gen_jax import registry
from gen_jax.anomaly import benchmark, metrics
from gen_jax.errors import ConfigError


def _batched(fn, state: Any, x: np.ndarray, rng: jax.Array, batch_size: int) -> np.ndarray:
    jitted = jax.jit(fn)
    out = [np.asarray(jitted(state, x[i:i + batch_size], jax.random.fold_in(rng, i)))
           for i in range(0, len(x), batch_size)]
    return np.concatenate(out)


def smooth(maps: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian smoothing of each (H, W) map (``sigma`` pixels; 0 = unchanged)."""
    if sigma <= 0:
        return maps
    return ndimage.gaussian_filter(np.asarray(maps, np.float64), sigma=(0, sigma, sigma), mode="reflect")


def evaluate_method(method: Any, state: Any, config: ml_collections.ConfigDict, *,
                    sigma: float = 0.0, seed: int = 0, batch_size: int = 64, split: str = "test") -> dict:
    """The benchmark metrics of a Method trained on ``config.data`` (``defects:<category>``).

    Args:
      method: the Method (HasAnomalyScore and/or HasAnomalyMap).
      state: its TrainState.
      config: the run's config (its data section decides the category, sizes and the
        preprocessing the Method expects).
      sigma: Gaussian smoothing of the maps, in pixels (0 = none).
      seed: root of the keys handed to the scoring functions (fold_in per batch).
      batch_size: examples per compiled call.
      split: "test" (the benchmark) or "val" (its development set,
        :func:`gen_jax.anomaly.benchmark.defect_set`: choose settings there).

    Returns:
      :func:`gen_jax.anomaly.metrics.evaluate_maps`'s dict plus "category", "sigma",
      "image_score" (where the image score came from) and "seconds".
    """
    from gen_jax.data import load_split, preprocess_as_split

    name = config.data.name
    if not name.startswith("defects:"):
        raise ConfigError(f"the defect benchmark evaluates runs trained on 'defects:<category>', "
                          f"not {name!r}")
    has_score = isinstance(method, registry.HasAnomalyScore)
    has_map = isinstance(method, registry.HasAnomalyMap)
    if not (has_score or has_map):
        raise ConfigError(f"method {config.method!r} has neither anomaly_score nor anomaly_map")
    start = time.time()
    category = name[len("defects:"):]
    test = benchmark.defect_set(category, *benchmark.sizes(config.data), split)
    if split == "test":
        x, labels = load_split(config, "test")  # the benchmark's crops, preprocessed as in training
        np.testing.assert_array_equal(labels, test.label)
    else:
        x = preprocess_as_split(config, test.x, split)
    r_score, r_map = jax.random.split(jax.random.key(seed))
    maps = smooth(_batched(method.anomaly_map, state, x, r_map, batch_size), sigma) if has_map else None
    if has_score:
        scores = _batched(method.anomaly_score, state, x, r_score, batch_size)
    else:
        scores = maps.reshape(len(maps), -1).max(1)
    out = metrics.evaluate_maps(scores, maps, test.mask, test.label, test.defect_type)
    return {"category": category, "split": split, "method": config.method, "sigma": sigma,
            "image_score": "anomaly_score" if has_score else "max of the anomaly map",
            **out, "seconds": round(time.time() - start, 1)}


def evaluate_workdir(workdir: str | Path, *, sigma: float = 0.0, seed: int = 0,
                     out: str | Path | None = None, split: str = "test") -> dict:
    """Loads a trained workdir (gen_jax.checkpoint.load_trained), evaluates it with
    :func:`evaluate_method` and writes the JSON to ``out`` (default
    ``<workdir>/anomaly_eval.json``)."""
    from gen_jax.checkpoint import load_trained

    method, state, config = load_trained(workdir)
    result = {"workdir": str(workdir), **evaluate_method(method, state, config, sigma=sigma, seed=seed,
                                                         split=split)}
    path = Path(out) if out else Path(workdir) / ("anomaly_eval.json" if split == "test" else
                                                  f"anomaly_eval_{split}.json")
    path.write_text(json.dumps(result, indent=1) + "\n")
    return result


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", action="append", required=True, help="a trained run (repeatable)")
    parser.add_argument("--sigma", type=float, default=0.0, help="Gaussian smoothing of the maps (px)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--split", default="test", choices=benchmark.DEFECT_SPLITS,
                        help="test (the benchmark) or val (its development set, to choose settings on)")
    parser.add_argument("--out", default="", help="JSON file (default: <workdir>/anomaly_eval.json)")
    args = parser.parse_args(argv)
    results = {}
    for workdir in args.workdir:
        r = evaluate_workdir(workdir, sigma=args.sigma, seed=args.seed, split=args.split,
                             out=None if (args.out and len(args.workdir) > 1) else (args.out or None))
        results[r["category"]] = r
        print(f"{r['method']} {r['category']}: " + ", ".join(f"{k} {v:.3f}" for k, v in r["overall"].items()))
    if args.out and len(args.workdir) > 1:
        Path(args.out).write_text(json.dumps(results, indent=1) + "\n")
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
