"""Nearest-neighbour patch distance (SPADE / PatchCore family; gen_jax/anomaly/knn.py) on
the offline defect benchmark's ``brick`` category: a whitened memory bank of frozen
FID-Inception Conv2d_4a_3x3 features of good 64x64 grayscale crops (interior locations),
the distance to the nearest bank row as the anomaly map. ``:category=grass`` / ``gravel``
picks another category. Evaluate with ``python -m gen_jax.anomaly.evaluate --workdir=RUN --sigma=4``.

The input size (256 px: a 60x60 map), border (2), bank (16384 rows), k (1), the image
score's blur (2 px) and the 8 random subsets of 64 channels (one map each, averaged: one
subset's result depends on which channels it drew) were chosen on the benchmark's
validation defects (``--split=val``; experiments/results/anomaly_flows/README.md), the
same for every category. A closed-form fit of the whole training split (the runtime calls the Method's
``fit``); the one train step only reports the training distance.
"""

import ml_collections

from gen_jax.config import parse_arg
from gen_jax.defaults import get_config as default_config
from gen_jax.defaults import smoke


def get_config(arg=None):
    opts = parse_arg(arg, smoke=False, category="brick")
    config = default_config()
    config.method = "feature_knn"
    config.data.name = f"defects:{opts.category}"
    config.data.image_size = 256        # the texture is resized to this side
    config.data.patch_size = 64         # crop side
    config.data.num_train = 2048        # good crops (left half of the image)
    config.data.num_eval = 128          # val: good crops of the top right quarter
    config.data.batch_size = 64
    config.data.eval_batch_size = 64

    config.features = ml_collections.ConfigDict()
    config.features.network = "inception"   # "inception" (FID weights, frozen) | "tiny" (tests)
    config.features.layers = ("Conv2d_4a_3x3",)
    config.features.input_size = 256    # crops are resized to this side before the network
    config.features.num_channels = 64   # random subset of each layer's channels; 0 = all

    config.knn = ml_collections.ConfigDict()
    config.knn.border = 2               # feature locations left out on every side (padding)
    config.knn.bank_size = 16384        # whitened interior cells kept, drawn at random
    config.knn.k = 1                    # nearest neighbours averaged
    config.knn.reg = 0.01               # added to the covariance's diagonal before whitening
    config.knn.score_sigma = 2.0        # px, Gaussian blur of the map before its maximum
    config.knn.fit_batch_size = 64      # crops per feature batch of the fit
    config.knn.num_subsets = 8          # random channel subsets per layer, one map each, averaged

    config.train.num_steps = 1          # the fit is closed-form: one step of training metrics
    config.train.log_every = 1
    config.train.eval_every = 0
    config.train.checkpoint_every = 0
    config.train.num_grid_samples = 16
    config.eval.sample_metrics = False  # not a generative model: no sample-quality metrics
    if opts.smoke:
        smoke(config, **_SMOKE)
    return config


# 16 px crops of a 64 px texture, the tiny random stand-in network (a 7x7 conv2 map).
_SMOKE = {"data.image_size": 64, "data.patch_size": 16, "data.num_train": 64, "data.num_eval": 16,
          "features.network": "tiny", "features.layers": ("conv1",), "features.input_size": 16,
          "features.num_channels": 4, "knn.bank_size": 256, "knn.fit_batch_size": 16, "knn.num_subsets": 2}
