"""DRAEM (Zavrtanik et al., 2021) on the offline defect benchmark's ``brick`` category
(gen_jax/anomaly/benchmark.py): trained on good 64x64 grayscale crops of the left
half of scikit-image's brick texture, with Perlin-noise anomalies filled from other
bundled photos (gen_jax/anomaly/draem.py). ``:category=grass`` / ``gravel`` picks
another category. Evaluate with
``python -m gen_jax.anomaly.evaluate --workdir=RUN``.
``:digits`` trains on scikit-learn's 8x8 digits instead, for the one-class protocol
(with ``data.classes=(k,)``; experiments/results/anomaly_digits/).

The paper: 256 px images, a 128-wide reconstructive and a 64-wide 6-level
discriminative network, 700 epochs, Adam 1e-4 (x0.2 at 80% and 90%). Here: 64 px
crops, 3-level networks, a few thousand steps, for CPU runs of minutes.
"""

import ml_collections

from gen_jax.config import parse_arg
from gen_jax.defaults import get_config as default_config
from gen_jax.defaults import smoke


def get_config(arg=None):
    opts = parse_arg(arg, smoke=False, category="brick", digits=False)
    config = default_config()
    config.method = "draem"
    config.data.name = f"defects:{opts.category}"
    config.data.image_size = 256        # the texture is resized to this side
    config.data.patch_size = 64         # crop side
    config.data.num_train = 4096        # good crops (left half of the image)
    config.data.num_eval = 128          # val: good crops of the top right quarter
    config.data.batch_size = 16
    config.data.eval_batch_size = 64

    config.model.recon_channels = (16, 32, 64)
    config.model.disc_channels = (16, 32, 64)

    config.draem = ml_collections.ConfigDict()
    config.draem.perlin_scales = 4      # lattice 1, 2, 4, 8 cells per axis (official: 1..32 at 256 px)
    config.draem.normal_prob = 0.5      # fraction of training images left without an anomaly
    config.draem.focal_gamma = 2.0
    config.draem.score_window = 7       # mean filter of the image score (official 21 px at 256 px)

    config.optim.learning_rate = 1e-3
    config.optim.schedule = "cosine"
    config.optim.warmup_steps = 50
    config.train.num_steps = 2000
    config.train.log_every = 50
    config.train.eval_every = 500
    config.train.checkpoint_every = 500
    config.train.num_grid_samples = 16
    config.eval.sample_metrics = False  # not a generative model: no sample-quality metrics
    if opts.digits:  # one-class digits (with data.classes=(k,)): 8x8 images, the same 3-level nets
        config.data.name = "digits"     # (8 -> 4 -> 2), [0, 1] pixels; anomaly sources 16 px photos
        config.data.batch_size = 64
        config.draem.perlin_scales = 3  # lattice 1, 2, 4 cells per axis (2 px cells at the finest)
        config.draem.score_window = 1   # 21 / 256 of the side (official) is under a pixel: the map's max
        config.train.num_steps = 600
    if opts.smoke:
        smoke(config, **_SMOKE)
    return config


# 16 px crops of a 64 px texture, one-level networks of 4 channels (compile time).
_SMOKE = {"data.image_size": 64, "data.patch_size": 16, "data.num_train": 64, "data.num_eval": 16,
          "model.recon_channels": (4,), "model.disc_channels": (4,), "draem.perlin_scales": 3,
          "draem.score_window": 5}
