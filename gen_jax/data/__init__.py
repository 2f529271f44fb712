"""Data: sources (digits, toy 2-D, images bundled with scikit-image, tfds),
preprocessing and the batch iterator.

Public: :func:`load_split`, :func:`preprocess_as_split`, :func:`dataset_info`, :func:`make_train_iterator`,
:func:`make_eval_batches`.
"""

from __future__ import annotations

import ml_collections
import numpy as np

from gen_jax.data.iterator import BatchIterator, eval_batches
from gen_jax.data.preprocess import bits_per_dim, check_data_config, discrete_log_prob_offset, preprocess
from gen_jax.data.sources import SPLITS, DataInfo, dataset_info, get_source, known_datasets

__all__ = ["BatchIterator", "DataInfo", "SPLITS", "bits_per_dim", "dataset_info",
           "discrete_log_prob_offset", "get_source", "known_datasets", "load_split",
           "make_eval_batches", "make_train_iterator", "preprocess", "preprocess_as_split"]

_SPLIT_SEED = {"train": 0, "val": 1, "test": 2}


def _preprocess_fn(config: ml_collections.ConfigDict, info: DataInfo):
    check_data_config(info, config.data)
    return lambda x_raw, rng: preprocess(x_raw, info, config.data, rng)


def load_split(config: ml_collections.ConfigDict, split: str) -> tuple[np.ndarray, np.ndarray | None]:
    """A whole split as arrays ``(x, y)``, preprocessed as the Method sees it.

    Random preprocessing (dequantization, stochastic binarization) is drawn
    from a fixed seed derived from ``config.seed`` and the split, so repeated
    calls return the same arrays.

    Args:
      config: an experiment config.
      split: "train", "val" or "test".

    Returns:
      x (float32, NHWC images or (N, D) vectors) and y (int32 labels or None).
    """
    source = get_source(config.data, split)
    x_raw, y = source.get(np.arange(len(source)))
    return preprocess_as_split(config, x_raw, split, source.info), y


def preprocess_as_split(config: ml_collections.ConfigDict, x_raw: np.ndarray, split: str,
                        info: DataInfo | None = None) -> np.ndarray:
    """Raw arrays of ``config.data``'s kind (e.g. uint8 images), preprocessed exactly as
    :func:`load_split` preprocesses ``split`` (same fixed seed)."""
    info = info or dataset_info(config.data)
    rng = np.random.default_rng([config.seed, _SPLIT_SEED[split], 3])
    return _preprocess_fn(config, info)(x_raw, rng)


def make_train_iterator(config: ml_collections.ConfigDict, seed: int,
                        process_index: int = 0, process_count: int = 1) -> BatchIterator:
    """The resumable training iterator of ``config`` (see BatchIterator)."""
    source = get_source(config.data, "train")
    return BatchIterator(source, config.data.batch_size, seed, _preprocess_fn(config, source.info),
                         process_index, process_count)


def make_eval_batches(config: ml_collections.ConfigDict, split: str, multiple_of: int = 1,
                      max_batches: int = 0):
    """Batches over a whole evaluation split, in order, deterministic."""
    source = get_source(config.data, split)
    return eval_batches(source, config.data.eval_batch_size,
                        config.seed * 1000 + _SPLIT_SEED[split],
                        _preprocess_fn(config, source.info), multiple_of, max_batches)
