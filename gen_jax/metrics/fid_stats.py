"""FID reference statistics as files: compute them for a dataset split, read them in eval.

::

    python -m gen_jax.metrics.fid_stats --config=configs/x.py --split=test --out=stats.npz

streams the split's images (any source gen_jax reads offline: tfds on disk, the
bundled digits, ...) through the FID Inception network in batches under one
jit and writes an .npz with

- ``mu`` (2048,) and ``sigma`` (2048, 2048), float64 (the keys pytorch-fid and
  the TTUR code use, so their published statistics files are read too),
- ``n`` (examples), ``source`` (dataset, split, classes), ``weights`` (the
  Inception weight file and its sha256), ``preprocess``,
- ``features``: the pool3 features of a fixed random subset (``--keep_features``,
  default 2000) for KID and precision/recall.

``--config.eval.fid_reference_stats=stats.npz`` makes ``--mode=eval`` compare its
samples with the file instead of computing the reference split's statistics.
Bad input is one line on stderr and exit status 2.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from gen_jax.errors import ConfigError, GenJaxError
from gen_jax.metrics.frechet import FeatureStats

PREPROCESS = "[0, 1] intensities (level / (levels - 1)); bilinear resize to 299x299; 2x - 1"


@dataclasses.dataclass
class ReferenceStats:
    """Inception statistics of a reference set.

    Attributes:
      mu, sigma: pool3 mean and (n - 1) covariance.
      n: examples (None when the file does not say: e.g. a TTUR statistics file).
      source: what the statistics are of.
      weights: the Inception weights that computed them ("" when unknown).
      features: (k, 2048) features of a random subset, or None.
    """

    mu: np.ndarray
    sigma: np.ndarray
    n: int | None
    source: str
    weights: str
    features: np.ndarray | None = None


def split_batches(config, split: str, batch_size: int):
    """(number of examples, generator of [0, 1] NHWC image batches) of a dataset split."""
    from gen_jax import data as data_lib

    source = data_lib.get_source(config.data, split)
    info = source.info
    if info.kind != "image":
        raise ConfigError(f"dataset {config.data.name!r} is not images: no Inception statistics")
    scale = 1.0 / (info.num_levels - 1)
    n = len(source)
    batches = (np.asarray(source.get(np.arange(s, min(s + batch_size, n)))[0], np.float32) * scale
               for s in range(0, n, batch_size))
    return n, batches


def stream_stats(apply_fn, batches, n: int, batch_size: int, keep: int,
                 seed: int = 0) -> tuple[FeatureStats, np.ndarray]:
    """Pool3 :class:`FeatureStats` of ``n`` examples given in batches of ``batch_size``, and the
    features of a fixed random subset of ``keep`` of them (in order), never holding more.

    Args:
      apply_fn: :func:`gen_jax.metrics.inception.inception_apply_fn`'s function.
      batches: [0, 1] NHWC image batches, all of ``batch_size`` but the last.
      n: examples in all.
      batch_size: the batches' size.
      keep: how many examples' features to keep (capped at n).
      seed: the subset's seed.
    """
    from gen_jax.metrics import inception as inc

    keep_idx = np.sort(np.random.default_rng(seed).permutation(n)[:keep])
    stats, kept = FeatureStats.empty(inc.POOL_DIM), []
    for s, (pool, _) in zip(range(0, n, batch_size), inc.inception_features(apply_fn, batches, False),
                            strict=True):
        stats = stats.update(pool)
        kept.append(pool[keep_idx[(keep_idx >= s) & (keep_idx < s + batch_size)] - s])
    return stats, np.concatenate(kept)


def source_description(config, split: str) -> str:
    classes = tuple(config.data.get("classes", None) or ())
    return f"{config.data.name}:{split}" + (f" classes={list(classes)}" if classes else "")


def save(path: str | Path, stats: FeatureStats, features: np.ndarray | None, source: str,
         weights: str) -> None:
    """Writes statistics atomically (see the module docstring for the keys)."""
    from gen_jax.workdir import write_atomic

    arrays: dict[str, Any] = {"mu": stats.mean, "sigma": stats.covariance(), "n": np.int64(stats.count),
                              "source": np.str_(source), "weights": np.str_(weights),
                              "preprocess": np.str_(PREPROCESS)}
    if features is not None and len(features):
        arrays["features"] = np.asarray(features, np.float32)

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)

    write_atomic(Path(path), write)


def load(path: str | Path, dim: int = 2048) -> ReferenceStats:
    """Reads a statistics file (this module's, or any .npz with ``mu`` and ``sigma``).

    Raises:
      ConfigError: a missing or unreadable file, or one without valid mu/sigma (one line).
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"eval.fid_reference_stats={str(path)!r} does not exist; make it with "
                          "`python -m gen_jax.metrics.fid_stats --config=... --split=... --out=...`")
    try:
        with np.load(path, allow_pickle=False) as z:
            if "mu" not in z.files or "sigma" not in z.files:
                raise ConfigError(f"{path} is not an FID statistics file: it needs arrays 'mu' and "
                                  f"'sigma', it has {sorted(z.files)[:6]}")
            mu, sigma = np.asarray(z["mu"], np.float64), np.asarray(z["sigma"], np.float64)
            n = int(z["n"]) if "n" in z.files else None
            source = str(z["source"]) if "source" in z.files else str(path)
            weights = str(z["weights"]) if "weights" in z.files else ""
            feats = np.asarray(z["features"], np.float64) if "features" in z.files else None
    except (OSError, ValueError) as e:
        if isinstance(e, ConfigError):
            raise
        raise ConfigError(f"cannot read FID statistics {path}: {e}") from None
    if mu.shape != (dim,) or sigma.shape != (dim, dim) or not (np.isfinite(mu).all()
                                                              and np.isfinite(sigma).all()):
        raise ConfigError(f"{path}: mu {mu.shape} / sigma {sigma.shape} are not finite pool3 statistics "
                          f"of dimension {dim}")
    if feats is not None and (feats.ndim != 2 or feats.shape[1] != dim):
        raise ConfigError(f"{path}: features of shape {feats.shape}, expected (k, {dim})")
    return ReferenceStats(mu, sigma, n, source, weights, feats)


def check_same_weights(stats: ReferenceStats, weights: str, path: str | Path) -> None:
    """A ConfigError when the file names weights (by sha256) other than ``weights``."""
    def digest(s: str) -> str:
        return s.rpartition("sha256:")[2] if "sha256:" in s else ""

    if digest(stats.weights) and digest(weights) and digest(stats.weights) != digest(weights):
        raise ConfigError(f"{path} was computed with other Inception weights ({stats.weights}) than "
                          f"this eval's ({weights}): recompute it, or set eval.inception_path to match")


def compute(config, split: str, out: str | Path, inception_path: str = "", batch_size: int = 50,
            keep_features: int = 2000) -> dict:
    """Computes a split's statistics and writes them to ``out``; returns a summary."""
    from gen_jax.metrics import inception as inc
    from gen_jax.workdir import check_writable

    if batch_size < 1 or keep_features < 0:
        raise ConfigError(f"--batch_size={batch_size} must be >= 1 and --keep_features={keep_features} >= 0")
    out = Path(out)
    if out.suffix != ".npz":
        raise ConfigError(f"--out={str(out)!r}: the statistics file must end in .npz")
    check_writable(out.absolute().parent, "--out directory")
    n, batches = split_batches(config, split, batch_size)
    variables, weights = inc.load_weights(inception_path)
    apply_fn = inc.inception_apply_fn(variables)
    t0 = time.perf_counter()
    stats, feats = stream_stats(apply_fn, batches, n, batch_size, keep_features)
    seconds = time.perf_counter() - t0
    if stats.count < 2:
        raise ConfigError(f"split {split!r} has {stats.count} example(s): statistics need at least 2")
    save(out, stats, feats, source_description(config, split), weights)
    return {"out": str(out), "n": stats.count, "features_kept": len(feats), "source":
            source_description(config, split), "weights": weights, "seconds": seconds,
            "samples_per_sec": stats.count / seconds}


def main(argv: list[str]) -> None:
    from absl import flags

    del argv
    f = flags.FLAGS
    try:
        if f.config is None:
            raise ConfigError("--config is required (e.g. --config=configs/vae_digits.py)")
        from gen_jax.config import validate_config

        validate_config(f.config)
        path = f.inception_path if f.inception_path is not None else f.config.eval.get("inception_path", "")
        result = compute(f.config, f.split, f.out, path, f.batch_size, f.keep_features)
    except GenJaxError as e:
        print(f"gen_jax.metrics.fid_stats: error: {e.__class__.__name__}: {e}", file=sys.stderr)
        sys.exit(2)
    print(" ".join(f"{k}={v}" for k, v in result.items()))


def _define_flags() -> None:
    from absl import flags
    from ml_collections import config_flags

    config_flags.DEFINE_config_file("config", None, "Config file whose data section names the dataset.",
                                    lock_config=True)
    flags.DEFINE_enum("split", "test", ["train", "val", "test"], "The split.")
    flags.DEFINE_string("out", None, "Output .npz.", required=True)
    flags.DEFINE_string("inception_path", None, "Inception weights (default: the config's "
                        "eval.inception_path, \"\" = the installed ones).")
    flags.DEFINE_integer("batch_size", 50, "Images per Inception batch.")
    flags.DEFINE_integer("keep_features", 2000, "Features of a random subset kept for KID.")


if __name__ == "__main__":
    from absl import flags

    _define_flags()
    try:
        _argv = flags.FLAGS(sys.argv)
    except Exception as e:  # a bad flag or config file: one line, not absl's usage page
        print(f"gen_jax.metrics.fid_stats: error: {' '.join(str(e).split())}", file=sys.stderr)
        sys.exit(2)
    main(_argv)
