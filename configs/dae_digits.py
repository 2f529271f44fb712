"""Denoising autoencoder on 8x8 digits: masking noise, each pixel set to black with
probability 0.25 (Vincent et al., 2008); the rest as configs/ae_digits.py."""

from gen_jax.config import config_module, parse_arg
from gen_jax.defaults import smoke

ae_digits = config_module("ae_digits", __file__)


def get_config(arg=None):
    opts = parse_arg(arg, smoke=False)
    config = ae_digits.get_config()
    config.method = "dae"
    config.model.noise = "masking"
    config.model.mask_prob = 0.25
    if opts.smoke:
        smoke(config)
    return config
