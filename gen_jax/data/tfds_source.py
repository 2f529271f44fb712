"""tensorflow-datasets input through ``tfds.data_source`` (random access, no TensorFlow).

Datasets are read from disk only; nothing is downloaded. A dataset must be
prepared in the ArrayRecord format, e.g. on a machine with internet and
TensorFlow: ``tfds build mnist --file_format=array_record --data_dir=DIR``,
then ``--config.data.data_dir=DIR``.
"""

from __future__ import annotations

import numpy as np

from gen_jax.data.sources import DataInfo, SubsetSource
from gen_jax.errors import DataError


class TfdsSource:
    """One tfds split read by index; images as uint8 NHWC, labels as int32."""

    def __init__(self, info: DataInfo, ds, image_key: str, label_key: str | None):
        self.info, self._ds, self._image_key, self._label_key = info, ds, image_key, label_key
        self._labels = None

    def __len__(self) -> int:
        return len(self._ds)

    def _read(self, indices) -> list[dict]:
        return [self._ds[int(i)] for i in indices]

    def get(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        records = self._read(indices)
        x = np.stack([np.asarray(r[self._image_key]) for r in records]).astype(np.uint8)
        if self._label_key is None:
            return x, None
        return x, np.asarray([r[self._label_key] for r in records], np.int32)

    def labels(self) -> np.ndarray | None:
        if self._label_key is None:
            return None
        if self._labels is None:  # one pass over the split, then cached
            self._labels = np.asarray(
                [r[self._label_key] for r in self._read(range(len(self)))], np.int32)
        return self._labels


def _open(name: str, split: str, data_dir: str | None):
    import tensorflow_datasets as tfds

    try:
        return tfds.data_source(name, split=split, data_dir=data_dir, download=False)
    except tfds.core.registered.DatasetNotFoundError:
        raise DataError(f"tfds has no dataset named {name!r}") from None
    except Exception as e:  # not prepared, wrong format, missing split, ...
        where = data_dir or "the tfds default data_dir (~/tensorflow_datasets)"
        raise DataError(
            f"tfds dataset {name!r} split {split!r} is not prepared in {where} ({e.__class__.__name__}: "
            f"{str(e).splitlines()[0] if str(e) else ''}). Prepare it on a machine with internet and "
            f"TensorFlow: `tfds build {name} --file_format=array_record --data_dir=DIR`, copy DIR here "
            "and pass --config.data.data_dir=DIR") from None


# tfds cycle_gan/* (Zhu et al., 2017): unpaired domains as splits trainA/trainB/testA/testB
# of 256x256 RGB images (declared with a variable size, so images are fitted to it).
CYCLE_GAN_SIZE = 256


def _fit(image: np.ndarray, size: int) -> np.ndarray:
    """Nearest-neighbour resize of an HWC image to size x size (a no-op at that size)."""
    h, w = image.shape[:2]
    if (h, w) == (size, size):
        return image
    return image[(np.arange(size) * h) // size][:, (np.arange(size) * w) // size]


class DomainSource:
    """Examples gathered from several tfds splits, labelled by the split they came from."""

    def __init__(self, info: DataInfo, parts: list[tuple[object, np.ndarray, int]]):
        self.info, self._ds = info, [ds for ds, _, _ in parts]
        self._where = np.concatenate([np.stack([np.full(len(idx), j), idx], 1)
                                      for j, (_, idx, _) in enumerate(parts)]).astype(np.int64)
        self._labels = np.concatenate([np.full(len(idx), label, np.int32) for _, idx, label in parts])

    def __len__(self) -> int:
        return len(self._labels)

    def get(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        size = self.info.shape[0]
        x = np.stack([_fit(np.asarray(self._ds[j][int(i)]["image"]), size)
                      for j, i in self._where[np.asarray(indices)]]).astype(np.uint8)
        return x, self._labels[indices]

    def labels(self) -> np.ndarray:
        return self._labels


def _cycle_gan_source(name: str, split: str, data_dir: str | None, val_fraction: float) -> DomainSource:
    """cycle_gan/* as our splits: label = domain (0 = A, 1 = B); "test" = testA + testB,
    "train"/"val" = the first / last ``val_fraction`` of trainA and of trainB."""
    info = DataInfo(f"tfds:{name}", "image", (CYCLE_GAN_SIZE, CYCLE_GAN_SIZE, 3), 256, 2)
    parts = []
    for label, domain in enumerate("AB"):
        if split == "test":
            ds = _open(name, f"test{domain}", data_dir)
            parts.append((ds, np.arange(len(ds)), label))
            continue
        ds = _open(name, f"train{domain}", data_dir)
        n_val = int(round(len(ds) * val_fraction))
        if n_val <= 0 or n_val >= len(ds):
            raise DataError(f"data.val_fraction={val_fraction} leaves no train or val examples "
                            f"in {name!r} train{domain}")
        cut = len(ds) - n_val
        parts.append((ds, np.arange(cut) if split == "train" else np.arange(cut, len(ds)), label))
    return DomainSource(info, parts)


def tfds_source(name: str, split: str, data_dir: str, val_fraction: float):
    """The train/val/test split of a tfds dataset.

    "val" is the dataset's "validation" split when it has one, else the last
    ``val_fraction`` of "train" (and "train" is then the rest). The unpaired
    ``cycle_gan/*`` datasets are read as labelled data, see _cycle_gan_source.
    """
    import tensorflow_datasets as tfds

    data_dir = data_dir or None
    if name.split("/")[0] == "cycle_gan":
        return _cycle_gan_source(name, split, data_dir, val_fraction)
    try:
        builder_info = tfds.builder(name, data_dir=data_dir).info
    except tfds.core.registered.DatasetNotFoundError:
        raise DataError(f"tfds has no dataset named {name!r}") from None
    features = builder_info.features
    image_key = next((k for k in ("image", "img") if k in features), None)
    if image_key is None:
        raise DataError(f"tfds dataset {name!r} has no 'image' feature (features: {list(features)})")
    label_key = "label" if "label" in features else None
    shape = tuple(features[image_key].shape)
    if None in shape:
        raise DataError(f"tfds dataset {name!r} has images of varying size {shape}; not supported")
    num_classes = features[label_key].num_classes if label_key else None
    info = DataInfo(f"tfds:{name}", "image", shape, 256, num_classes)
    split_names = set(builder_info.splits.keys())
    if split == "test":
        return TfdsSource(info, _open(name, "test", data_dir), image_key, label_key)
    if split == "val" and "validation" in split_names:
        return TfdsSource(info, _open(name, "validation", data_dir), image_key, label_key)
    train = TfdsSource(info, _open(name, "train", data_dir), image_key, label_key)
    if "validation" in split_names:
        return train
    n_val = int(round(len(train) * val_fraction))
    if n_val <= 0 or n_val >= len(train):
        raise DataError(f"data.val_fraction={val_fraction} leaves no train or val examples")
    cut = len(train) - n_val
    return SubsetSource(train, np.arange(cut) if split == "train" else np.arange(cut, len(train)))
