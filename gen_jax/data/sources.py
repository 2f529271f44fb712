"""Dataset sources: random-access raw examples for a split, plus what they are.

A source hands out *raw* examples (integer pixel levels for images, float
vectors for toy 2-D data); preprocess.py turns them into what a Method sees.
Splits are fixed: they do not depend on ``config.seed``, so every experiment
on a dataset evaluates on the same examples.
"""

from __future__ import annotations

import dataclasses
import functools
import gzip
import importlib.util
from pathlib import Path

import ml_collections
import numpy as np

from gen_jax.errors import DataError

SPLITS = ("train", "val", "test")
# Sizes of the fixed digits split (1797 images): 70% / 10% / 20%.
DIGITS_SPLIT = {"test": 360, "val": 180}
_DIGITS_SPLIT_SEED = 1234
# Toy splits get disjoint seeds, offset from config.seed-independent bases.
_TOY_SPLIT_SEED = {"train": 10_001, "val": 20_002, "test": 30_003}


@dataclasses.dataclass(frozen=True)
class DataInfo:
    """What a dataset is: its kind, one example's shape and its discrete scale.

    Attributes:
      name: the config's data.name.
      kind: "image" (NHWC integer levels) or "vector" (continuous (D,) data).
      shape: one example's shape, e.g. (8, 8, 1) or (2,).
      num_levels: number of discrete pixel levels (17 for digits, 256 for 8-bit
        images); None for continuous vector data.
      num_classes: number of labels, or None when the data has none.
    """

    name: str
    kind: str
    shape: tuple[int, ...]
    num_levels: int | None
    num_classes: int | None

    @property
    def dim(self) -> int:
        return int(np.prod(self.shape))

    def check_batch(self, x) -> None:
        """A DataError unless ``x`` is a batch of examples of this dataset's shape."""
        if tuple(x.shape[1:]) != tuple(self.shape):
            raise DataError(f"batch examples have shape {tuple(x.shape[1:])}, but {self.name!r} "
                            f"examples (and the model built for them) have shape {self.shape}")


class ArraySource:
    """An in-memory split: ``get(indices) -> (x_raw, y_or_None)``."""

    def __init__(self, info: DataInfo, x: np.ndarray, y: np.ndarray | None):
        self.info, self.x, self.y = info, x, y

    def __len__(self) -> int:
        return len(self.x)

    def get(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        return self.x[indices], None if self.y is None else self.y[indices]

    def labels(self) -> np.ndarray | None:
        return self.y


class SubsetSource:
    """The examples of another source at fixed indices (class filters, val splits)."""

    def __init__(self, base, indices: np.ndarray):
        self.base, self.indices, self.info = base, np.asarray(indices, np.int64), base.info

    def __len__(self) -> int:
        return len(self.indices)

    def get(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        return self.base.get(self.indices[indices])

    def labels(self) -> np.ndarray | None:
        y = self.base.labels()
        return None if y is None else y[self.indices]


@functools.lru_cache(maxsize=1)
def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's bundled 8x8 digits (no download), read from the package's
    ``datasets/data/digits.csv.gz`` (64 pixel levels and the label per row, what
    ``sklearn.datasets.load_digits`` reads) without importing scikit-learn, whose
    import alone costs about 2 s of every process start."""
    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("the digits dataset ships with scikit-learn, which is not installed: "
                        "pip install scikit-learn")
    path = Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "digits.csv.gz"
    with gzip.open(path, "rt") as f:
        table = np.loadtxt(f, delimiter=",", dtype=np.int64)
    x = table[:, :64].reshape(-1, 8, 8, 1).astype(np.uint8)  # (1797, 8, 8, 1), levels 0..16
    return x, table[:, 64].astype(np.int32)


def _digits(split: str) -> ArraySource:
    x, y = _digits_arrays()
    order = np.random.default_rng(_DIGITS_SPLIT_SEED).permutation(len(x))
    n_test, n_val = DIGITS_SPLIT["test"], DIGITS_SPLIT["val"]
    idx = {"test": order[:n_test], "val": order[n_test:n_test + n_val],
           "train": order[n_test + n_val:]}[split]
    idx = np.sort(idx)
    info = DataInfo("digits", "image", (8, 8, 1), 17, 10)
    return ArraySource(info, x[idx], y[idx])


def _toy(name: str, split: str, data: ml_collections.ConfigDict) -> ArraySource:
    from gen_jax.data.toy2d import sample_toy2d

    n = data.num_train if split == "train" else data.num_eval
    x, y = sample_toy2d(name, n, _TOY_SPLIT_SEED[split])
    num_classes = None if y is None else int(y.max()) + 1
    return ArraySource(DataInfo(name, "vector", (2,), None, num_classes), x, y)


def known_datasets() -> list[str]:
    """Names accepted as ``data.name`` (tfds datasets as ``tfds:<name>``; one bundled
    image or image file as ``image:<name>``, see gen_jax/data/bundled.py)."""
    from gen_jax.data.toy2d import TOY2D_NAMES

    return ["digits", *TOY2D_NAMES, "faces100", "patches", "image:<name>", "defects:<category>",
            "tfds:<name>"]


def get_source(data: ml_collections.ConfigDict, split: str):
    """The raw source of one split, with ``data.classes`` applied.

    Args:
      data: the ``config.data`` section.
      split: "train", "val" or "test".

    Returns:
      A source with ``info``, ``len``, ``get(indices)`` and ``labels()``.
    """
    from gen_jax.data.toy2d import TOY2D_NAMES

    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; use one of {SPLITS}")
    name = data.name
    if name == "digits":
        source = _digits(split)
    elif name in TOY2D_NAMES:
        source = _toy(name, split, data)
    elif name in ("faces100", "patches") or name.startswith("image:"):
        from gen_jax.data import bundled

        build = {"faces100": bundled.faces100_source, "patches": bundled.patches_source}.get(
            name, bundled.single_image_source)
        source = build(data, split)
    elif name.startswith("defects:"):
        from gen_jax.anomaly.benchmark import defects_source

        source = defects_source(data, split)
    elif name.startswith("tfds:"):
        from gen_jax.data.tfds_source import tfds_source

        source = tfds_source(name[len("tfds:"):], split, data.data_dir, data.val_fraction)
    else:
        raise DataError(f"unknown dataset {name!r}; known datasets: {', '.join(known_datasets())}")
    classes = tuple(data.classes or ())
    if classes:
        labels = source.labels()
        if labels is None:
            raise DataError(f"data.classes={classes} but dataset {name!r} has no labels")
        unknown = sorted(set(classes) - set(np.unique(labels).tolist()))
        if unknown:
            raise DataError(f"data.classes has labels {unknown} that {name!r} ({split}) lacks")
        source = SubsetSource(source, np.flatnonzero(np.isin(labels, classes)))
    if len(source) == 0:
        raise DataError(f"dataset {name!r} split {split!r} is empty")
    return source


def dataset_info(data: ml_collections.ConfigDict) -> DataInfo:
    """The DataInfo of ``config.data`` (from its training split)."""
    return get_source(data, "train").info
