"""DCGAN on scikit-learn's 8x8 digits (a minute or two on CPU).

Strided 4x4 convs with LeakyReLU in D, pixel-shuffle upsampling with batchnorm and
ReLU in G, tanh output, non-saturating loss, Adam(2e-4, b1=0.5) as in Radford et
al. (2016); images in [-1, 1].
"""

from gen_jax.config import config_module, parse_arg
from gen_jax.defaults import get_config as default_config
from gen_jax.defaults import smoke

gan_toy2d = config_module("gan_toy2d", __file__)


def get_config(arg=None):
    opts = parse_arg(arg, smoke=False)
    config = gan_toy2d.gan_defaults(default_config())
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
    if opts.smoke:
        smoke(config, **_SMOKE)
    return config


_SMOKE = {"model.g_channels": (16, 8), "model.d_channels": (8, 16), "model.latent_dim": 8}
