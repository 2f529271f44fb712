"""GANomaly (Akçay et al., 2018) on the offline defect benchmark's ``brick`` category
(gen_jax/anomaly/benchmark.py): trained on good 64x64 grayscale crops of the left
half of scikit-image's brick texture (gen_jax/anomaly/ganomaly.py). ``:category=grass``
/ ``gravel`` picks another category. Evaluate with
``python -m gen_jax.anomaly.evaluate --workdir=RUN``.
``:digits`` trains on scikit-learn's 8x8 digits instead, for the one-class protocol
(with ``data.classes=(k,)``).

The paper: 32 px images, latent 100, BatchNorm DCGAN nets, Adam(2e-4, b1=0.5), 15
epochs, loss weights w_adv = 1, w_con = 50, w_enc = 1 (kept here). Here: 64 px
crops, three-level nets with LayerNorm (scores independent of the batch), a latent
of 64 and a few thousand steps for CPU runs of minutes.
"""

import ml_collections

from gen_jax.config import parse_arg
from gen_jax.defaults import get_config as default_config
from gen_jax.defaults import smoke


def get_config(arg=None):
    opts = parse_arg(arg, smoke=False, category="brick", digits=False)
    config = default_config()
    config.method = "ganomaly"
    config.data.name = f"defects:{opts.category}"
    config.data.value_range = (-1.0, 1.0)  # the generator's tanh range
    config.data.image_size = 256        # the texture is resized to this side
    config.data.patch_size = 64         # crop side
    config.data.num_train = 4096        # good crops (left half of the image)
    config.data.num_eval = 128          # val: good crops of the top right quarter
    config.data.batch_size = 32
    config.data.eval_batch_size = 64

    m = config.model
    m.latent_dim = 64
    m.enc_channels = (32, 64, 128)      # G_E and E: 64 -> 32 -> 16 -> 8, then linear to z
    m.g_channels = (128, 64, 32)        # G_D: z -> 8x8x128 -> 16 -> 32 -> 64
    m.d_channels = (32, 64, 128)        # D: 64 -> 8, features f = the last 8x8x128 block
    m.upsample = "pixel_shuffle"
    m.g_norm = "layer"                  # not "batch": the scoring networks act per example
    m.d_norm = "layer"

    config.ganomaly = ml_collections.ConfigDict()
    config.ganomaly.w_adv = 1.0         # feature matching on D's features
    config.ganomaly.w_con = 50.0        # contextual L1 |x - G(x)|
    config.ganomaly.w_enc = 1.0         # latent L2 (G_E(x) - E(G(x)))^2

    config.optim.learning_rate = 2e-4
    config.optim.b1 = 0.5
    config.d_optim = ml_collections.ConfigDict(config.optim.to_dict())
    config.train.num_steps = 2000
    config.train.log_every = 50
    config.train.eval_every = 500
    config.train.checkpoint_every = 500
    config.train.num_grid_samples = 16
    config.eval.sample_metrics = False  # not a generative model: no sample-quality metrics
    if opts.digits:  # one-class digits (with data.classes=(k,)): 8x8 images, two-level nets
        config.data.name = "digits"
        config.data.batch_size = 64
        m.latent_dim = 16
        m.enc_channels, m.g_channels, m.d_channels = (16, 32), (32, 16), (16, 32)
        config.train.num_steps = 600
    if opts.smoke:
        smoke(config, **_SMOKE)
    return config


# 16 px crops of a 64 px texture, one-level nets of 4 channels (compile time).
_SMOKE = {"data.image_size": 64, "data.patch_size": 16, "data.num_train": 64, "data.num_eval": 16,
          "model.latent_dim": 4, "model.enc_channels": (4,), "model.g_channels": (4,),
          "model.d_channels": (4,)}
