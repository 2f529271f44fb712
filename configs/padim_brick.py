"""PaDiM (Defard et al., 2021) on the offline defect benchmark's ``brick`` category
(gen_jax/anomaly/padim.py): per-location Gaussians of frozen FID-Inception features of
good 64x64 grayscale crops, Mahalanobis distance as the anomaly map. The feature-distance
baseline of FastFlow (configs/fastflow_brick.py): the same features, layer, input size
and channel count. ``:category=grass`` / ``gravel`` picks another category. Evaluate
with ``python -m gen_jax.anomaly.evaluate --workdir=RUN``. ``:digits`` fits scikit-learn's
8x8 digits instead, resized to 75 px (the smallest input Inception takes: a 15x15 map), for
the one-class protocol (with ``data.classes=(k,)``; experiments/results/anomaly_digits/).

A closed-form fit of the whole training split (the runtime calls the Method's ``fit``);
the one train step only reports the training distance.
"""

import ml_collections

from gen_jax.config import parse_arg
from gen_jax.defaults import get_config as default_config
from gen_jax.defaults import smoke


def get_config(arg=None):
    opts = parse_arg(arg, smoke=False, category="brick", digits=False)
    config = default_config()
    config.method = "padim"
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
    config.features.input_size = 128    # crops are resized to this side before the network
    config.features.num_channels = 64   # random subset of each layer's channels; 0 = all

    config.padim = ml_collections.ConfigDict()
    config.padim.reg = 0.01             # added to every covariance's diagonal (the paper's)
    config.padim.fit_batch_size = 64    # crops per feature batch of the fit

    config.train.num_steps = 1          # the fit is closed-form: one step of training metrics
    config.train.log_every = 1
    config.train.eval_every = 0
    config.train.checkpoint_every = 0
    config.train.num_grid_samples = 16
    config.eval.sample_metrics = False  # not a generative model: no sample-quality metrics
    if opts.digits:  # one-class digits (with data.classes=(k,)): 8x8 images
        config.data.name = "digits"
        config.features.input_size = 75  # Inception's smallest input (9.4 px per digit pixel)
    if opts.smoke:
        smoke(config, **_SMOKE)
    return config


# 16 px crops of a 64 px texture, the tiny random stand-in network.
_SMOKE = {"data.image_size": 64, "data.patch_size": 16, "data.num_train": 64, "data.num_eval": 16,
          "features.network": "tiny", "features.layers": ("conv1",), "features.input_size": 16,
          "features.num_channels": 4, "padim.fit_batch_size": 16}
