"""A deterministic, resumable batch iterator over a random-access source.

The batch at (seed, epoch, position) is a pure function of those three numbers,
so an iterator restored from its saved state continues with exactly the
batches an uninterrupted run would have seen.
"""

from __future__ import annotations

from typing import Callable, Iterator

import numpy as np

from gen_jax.errors import ConfigError

PreprocessFn = Callable[[np.ndarray, "np.random.Generator | None"], np.ndarray]


def _batch(x: np.ndarray, y: np.ndarray | None) -> dict:
    return {"x": x} if y is None else {"x": x, "y": y.astype(np.int32)}


class BatchIterator:
    """Shuffled batches, epoch after epoch; drops each epoch's last partial batch.

    Args:
      source: object with ``len()`` and ``get(indices) -> (x_raw, y)``.
      batch_size: the global batch size.
      seed: shuffling and random-preprocessing seed.
      preprocess: ``(x_raw, rng) -> x``.
      process_index / process_count: each host reads only its slice of every
        global batch (multi-host data parallelism).
    """

    def __init__(self, source, batch_size: int, seed: int, preprocess: PreprocessFn,
                 process_index: int = 0, process_count: int = 1):
        if batch_size > len(source):
            raise ConfigError(f"data.batch_size={batch_size} exceeds the {len(source)} "
                              "training examples")
        if batch_size % process_count:
            raise ConfigError(f"data.batch_size={batch_size} is not divisible by the "
                              f"{process_count} processes")
        self.source, self.batch_size, self.seed = source, batch_size, seed
        self.preprocess = preprocess
        self.process_index, self.process_count = process_index, process_count
        self.batches_per_epoch = len(source) // batch_size
        self.epoch, self.position = 0, 0
        self._perm_epoch, self._perm = -1, None

    def get_state(self) -> dict:
        """The position to save in a checkpoint."""
        return {"epoch": int(self.epoch), "position": int(self.position), "seed": int(self.seed)}

    def set_state(self, state: dict) -> None:
        """Continues from a saved position."""
        if int(state["seed"]) != self.seed:
            raise ConfigError(f"data iterator state was saved with seed {state['seed']}, "
                              f"not {self.seed}")
        self.epoch, self.position = int(state["epoch"]), int(state["position"])

    def __iter__(self) -> Iterator[dict]:
        return self

    def __next__(self) -> dict:
        if self._perm_epoch != self.epoch:
            self._perm = np.random.default_rng([self.seed, self.epoch]).permutation(len(self.source))
            self._perm_epoch = self.epoch
        start = self.position * self.batch_size
        idx = self._perm[start:start + self.batch_size]
        local = self.batch_size // self.process_count
        idx = idx[self.process_index * local:(self.process_index + 1) * local]
        x_raw, y = self.source.get(idx)
        # The noise of the whole global batch is drawn and sliced, so the data
        # does not depend on the number of hosts.
        rng = np.random.default_rng([self.seed, self.epoch, self.position, 1])
        x = self.preprocess(x_raw, _SliceRng(rng, self.process_index, self.process_count))
        self.position += 1
        if self.position == self.batches_per_epoch:
            self.epoch, self.position = self.epoch + 1, 0
        return _batch(x, y)


class _SliceRng:
    """Draws ``random(shape)`` for the whole global batch and returns this host's slice."""

    def __init__(self, rng: np.random.Generator, index: int, count: int):
        self.rng, self.index, self.count = rng, index, count

    def random(self, shape, dtype=np.float64):
        shape = (shape[0] * self.count, *shape[1:])
        u = self.rng.random(shape, dtype=dtype)
        n = shape[0] // self.count
        return u[self.index * n:(self.index + 1) * n]


def eval_batches(source, batch_size: int, seed: int, preprocess: PreprocessFn,
                 multiple_of: int = 1, max_batches: int = 0) -> Iterator[dict]:
    """The whole split in order, in batches of ``batch_size``.

    The last batch is cut to a multiple of ``multiple_of`` (the device count),
    so at most ``multiple_of - 1`` examples are left out.
    """
    n = len(source)
    count = 0
    for start in range(0, n, batch_size):
        stop = min(start + batch_size, n)
        stop = start + (stop - start) // multiple_of * multiple_of
        if stop <= start or (max_batches and count >= max_batches):
            return
        x_raw, y = source.get(np.arange(start, stop))
        rng = np.random.default_rng([seed, start, 2])
        yield _batch(preprocess(x_raw, rng), y)
        count += 1
