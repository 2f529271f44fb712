"""Spread of samples against the 500 patches test crops: per-pixel std and the median
distance (RMSE) of each image to its nearest other image in the same set.

    python spread.py SAMPLES.npy ...   (NHWC float arrays in [-1, 1], e.g. --mode=sample output)
"""

import sys

import ml_collections
import numpy as np

from gen_jax.data import bundled


def spread(x: np.ndarray) -> tuple[float, float]:
    """(mean per-pixel std, median nearest-neighbour RMSE) of rows of ``x`` in [0, 1]."""
    rmse = np.sqrt(((x[:, None] - x[None]) ** 2).mean(-1))
    np.fill_diagonal(rmse, np.inf)
    return float(x.std(0).mean()), float(np.median(rmse.min(1)))


if __name__ == "__main__":
    data = ml_collections.ConfigDict({"name": "patches", "num_eval": 500, "num_train": 20000})
    src = bundled.patches_source(data, "test")
    crops = src.get(np.arange(len(src)))[0].reshape(len(src), -1) / 255.0
    print("test crops n=%d: pixel std %.3f, median NN RMSE %.3f" % (len(crops), *spread(crops)))
    for path in sys.argv[1:]:
        x = np.clip((np.load(path).astype(np.float64) + 1) / 2, 0, 1).reshape(-1, crops.shape[1])
        print(path, "n=%d: pixel std %.3f, median NN RMSE %.3f" % (len(x), *spread(x)))
