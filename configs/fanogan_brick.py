"""f-AnoGAN (Schlegl et al., 2019) on the offline defect benchmark's ``brick`` category
(gen_jax/anomaly/benchmark.py): a WGAN-GP trained on good 64x64 grayscale crops of
the left half of scikit-image's brick texture for ``fanogan.gan_steps`` steps, then
its izi_f encoder for the remaining steps with the GAN frozen
(gen_jax/anomaly/fanogan.py). ``:category=grass`` / ``gravel`` picks another
category. Evaluate with ``python -m gen_jax.anomaly.evaluate --workdir=RUN``.
``:digits`` trains on scikit-learn's 8x8 digits instead, for the one-class protocol
(with ``data.classes=(k,)``).

The paper: 64 px images, residual WGAN-GP nets, latent 128, 5 critic steps per
generator step, gradient-penalty weight 10, Adam(1e-4, b1=0, b2=0.9) for the GAN
(WGAN-GP's settings), kappa = 1. Here: DCGAN nets with LayerNorm of the GAN family,
fewer steps for CPU runs of minutes.
"""

import ml_collections

from gen_jax.config import config_module, parse_arg
from gen_jax.defaults import get_config as default_config
from gen_jax.defaults import smoke

gan_toy2d = config_module("gan_toy2d", __file__)


def get_config(arg=None):
    opts = parse_arg(arg, smoke=False, category="brick", digits=False)
    config = gan_toy2d.gan_defaults(default_config())
    config.method = "fanogan"
    config.data.name = f"defects:{opts.category}"
    config.data.value_range = (-1.0, 1.0)  # the generator's tanh range
    config.data.image_size = 256        # the texture is resized to this side
    config.data.patch_size = 64         # crop side
    config.data.num_train = 4096        # good crops (left half of the image)
    config.data.num_eval = 128          # val: good crops of the top right quarter
    config.data.batch_size = 40         # 5 critic chunks of 8
    config.data.eval_batch_size = 64

    m = config.model
    m.arch = "dcgan"
    m.latent_dim = 64
    m.g_channels = (128, 64, 32)        # G: z -> 8x8x128 -> 16 -> 32 -> 64
    m.d_channels = (32, 64, 128)        # critic: 64 -> 8, features f = the last 8x8x128 block
    m.enc_channels = (32, 64, 128)      # E: 64 -> 8, then linear to z
    m.upsample = "pixel_shuffle"
    m.g_norm = "layer"                  # not "batch": G scores G(E(x)) per example
    m.d_norm = "layer"                  # WGAN-GP penalizes per-example gradients

    g = config.gan
    g.objective = "wgan_gp"
    g.d_steps = 5
    g.gp_weight = 10.0

    config.fanogan = ml_collections.ConfigDict()
    config.fanogan.gan_steps = 1500     # stage 0 (WGAN-GP) steps; the encoder trains after them
    config.fanogan.kappa = 1.0          # weight of the critic-feature residual

    for opt in (config.optim, config.d_optim):
        opt.learning_rate = 1e-4
        opt.b1 = 0.0
        opt.b2 = 0.9
    config.e_optim = ml_collections.ConfigDict(config.optim.to_dict())
    config.e_optim.learning_rate = 1e-3
    config.e_optim.b1 = 0.9
    config.e_optim.b2 = 0.999
    config.train.num_steps = 2000
    config.train.log_every = 50
    config.train.eval_every = 500
    config.train.checkpoint_every = 500
    config.train.num_grid_samples = 16
    config.eval.sample_metrics = False  # a detector: no sample-quality metrics by default
    if opts.digits:  # one-class digits (with data.classes=(k,)): 8x8 images, two-level nets
        config.data.name = "digits"
        config.data.batch_size = 64
        m.latent_dim = 16
        m.enc_channels, m.g_channels, m.d_channels = (16, 32), (32, 16), (16, 32)
        config.train.num_steps = 600
        config.gan.d_steps = 4          # chunks of 16 of the batch of 64
        config.fanogan.gan_steps = 400
    if opts.smoke:  # (digits: a batch that splits into its 4 critic chunks)
        smoke(config, **{**_SMOKE, **({"data.batch_size": 8} if opts.digits else {})})
    return config


# 16 px crops of a 64 px texture, one-level nets of 4 channels; 2 GAN steps, 1 encoder step.
_SMOKE = {"data.image_size": 64, "data.patch_size": 16, "data.num_train": 64, "data.num_eval": 16,
          "data.batch_size": 10, "model.latent_dim": 4, "model.g_channels": (4,),
          "model.d_channels": (4,), "model.enc_channels": (4,), "fanogan.gan_steps": 2}
