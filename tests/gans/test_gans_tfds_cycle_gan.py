"""tfds cycle_gan/* read as labelled train/val/test splits (label = domain) under mock data."""

from __future__ import annotations

import ml_collections
import numpy as np
import tensorflow_datasets as tfds

from gen_jax.data import get_source


def test_cycle_gan_splits_are_domains_with_labels():
    data = ml_collections.ConfigDict({"name": "tfds:cycle_gan/horse2zebra", "data_dir": "",
                                      "val_fraction": 0.2, "classes": ()})
    with tfds.testing.mock_data(num_examples=5):
        train, val, test = (get_source(data, s) for s in ("train", "val", "test"))
        assert (len(train), len(val), len(test)) == (8, 2, 10)  # 4+4, 1+1, 5+5
        np.testing.assert_array_equal(train.labels(), [0] * 4 + [1] * 4)
        np.testing.assert_array_equal(val.labels(), [0, 1])
        x, y = train.get(np.array([0, 5]))
        assert x.shape == (2, 256, 256, 3) and x.dtype == np.uint8  # mock images of any size fitted
        np.testing.assert_array_equal(y, [0, 1])
        info = train.info
        assert (info.shape, info.num_levels, info.num_classes) == ((256, 256, 3), 256, 2)
        # The images really come from the domain splits: trainB's first image is example 4.
        raw = np.asarray(tfds.data_source("cycle_gan/horse2zebra", split="trainB")[0]["image"])
        h, w = raw.shape[:2]
        want = raw[(np.arange(256) * h) // 256][:, (np.arange(256) * w) // 256]
        np.testing.assert_array_equal(train.get(np.array([4]))[0][0], want)
