"""DCGAN on scikit-learn's 8x8 digits (a minute or two on CPU).

Strided 4x4 convs with LeakyReLU in D, pixel-shuffle upsampling with batchnorm and
ReLU in G, tanh output, non-saturating loss, Adam(2e-4, b1=0.5) as in Radford et
al. (2016); images in [-1, 1].
"""

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
import default  # noqa: E402
import gan_toy2d  # noqa: E402


def get_config():
    config = gan_toy2d.gan_defaults(default.get_config())
    config.data.name = "digits"
    config.data.value_range = (-1.0, 1.0)
    config.data.batch_size = 64
    m = config.model
    m.arch = "dcgan"
    m.latent_dim = 32
    m.g_channels = (128, 64)   # 2x2x128 -> 4x4x64 -> 8x8x1
    m.d_channels = (64, 128)   # 8 -> 4 -> 2
    m.g_norm = "batch"
    m.d_norm = "batch"
    m.upsample = "pixel_shuffle"
    config.gan.objective = "nonsaturating"
    for opt in (config.optim, config.d_optim):
        opt.learning_rate = 2e-4
        opt.b1 = 0.5
    config.train.ema_decay = 0.999
    config.train.num_steps = 3000
    config.train.log_every = 100
    config.train.eval_every = 1000
    config.train.checkpoint_every = 1000
    return config


TEST_OVERRIDES = {"model.g_channels": (16, 8), "model.d_channels": (8, 16), "model.latent_dim": 8}
