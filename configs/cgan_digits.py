"""Class-conditional DCGAN on 8x8 digits with a projection discriminator (Miyato &
Koyama, 2018) and hinge loss; sample grids have one row per class (0..9).
"""

from gen_jax.config import config_module, parse_arg
from gen_jax.defaults import smoke

dcgan_digits = config_module("dcgan_digits", __file__)


def get_config(arg=None):
    opts = parse_arg(arg, smoke=False)
    config = dcgan_digits.get_config()
    config.model.conditional = True
    config.model.projection = True   # False = one-hot label maps concatenated to D's input
    config.model.spectral_norm = True
    config.model.d_norm = "none"     # spectral normalization instead
    config.gan.objective = "hinge"
    config.train.num_grid_samples = 100  # 10 classes x 10 samples
    if opts.smoke:
        smoke(config, **_SMOKE)
    return config


_SMOKE = {"model.g_channels": (16, 8), "model.d_channels": (8, 16), "model.latent_dim": 8,
          "train.num_grid_samples": 20}
