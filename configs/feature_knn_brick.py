"""Nearest-neighbour patch distance (SPADE / PatchCore family; gen_jax/anomaly/knn.py) on
the offline defect benchmark's ``brick`` category: a whitened memory bank of frozen
FID-Inception Conv2d_4a_3x3 features of good 64x64 grayscale crops (interior locations),
the distance to the nearest bank row as the anomaly map. ``:category=grass`` / ``gravel``
picks another category. Evaluate with ``python -m gen_jax.anomaly.evaluate --workdir=RUN --sigma=4``.
``:digits`` fits scikit-learn's 8x8 digits instead (padim_brick.py's ``:digits``: 75 px, a 15x15
map, 11x11 inside the border), for the one-class protocol (with ``data.classes=(k,)``).

The input size (256 px: a 60x60 map), border (2), bank (16384 rows), k (1), the image
score's blur (2 px) and the 8 random subsets of 64 channels (one map each, averaged: one
subset's result depends on which channels it drew) were chosen on the benchmark's
validation defects (``--split=val``; experiments/results/anomaly_flows/README.md), the
same for every category. The data, feature network and layer, channel count and train/eval settings are
configs/padim_brick.py's. A closed-form fit of the whole training split (the runtime calls the Method's
``fit``); the one train step only reports the training distance.
"""

import ml_collections

from gen_jax.config import config_module, parse_arg
from gen_jax.defaults import smoke

padim_brick = config_module("padim_brick", __file__)


def get_config(arg=None):
    opts = parse_arg(arg, smoke=False, category="brick", digits=False)
    config = padim_brick.get_config(f"category={opts.category}")  # data, features, train, eval
    config.method = "feature_knn"
    del config["padim"]
    config.features.input_size = 256    # crops are resized to this side before the network

    config.knn = ml_collections.ConfigDict()
    config.knn.border = 2               # feature locations left out on every side (padding)
    config.knn.bank_size = 16384        # whitened interior cells kept, drawn at random
    config.knn.k = 1                    # nearest neighbours averaged
    config.knn.reg = 0.01               # added to the covariance's diagonal before whitening
    config.knn.score_sigma = 2.0        # px, Gaussian blur of the map before its maximum
    config.knn.fit_batch_size = 64      # crops per feature batch of the fit
    config.knn.num_subsets = 8          # random channel subsets per layer, one map each, averaged
    if opts.digits:  # one-class digits (with data.classes=(k,)): 8x8 images
        config.data.name = "digits"
        config.features.input_size = 75  # Inception's smallest input, as padim_brick.py's :digits
        config.knn.score_sigma = 0.0    # 2 px of a 64 px crop is a quarter pixel of a digit: no blur
    if opts.smoke:
        smoke(config, **_SMOKE)
    return config


# 16 px crops of a 64 px texture, the tiny random stand-in network (a 7x7 conv1 map).
_SMOKE = {"data.image_size": 64, "data.patch_size": 16, "data.num_train": 64, "data.num_eval": 16,
          "features.network": "tiny", "features.layers": ("conv1",), "features.input_size": 16,
          "features.num_channels": 4, "knn.bank_size": 256, "knn.fit_batch_size": 16, "knn.num_subsets": 2}
