"""Sparse autoencoder on 8x8 digits: an overcomplete MLP code (64 sigmoid units for
64 pixels) with Ng's KL sparsity penalty towards a mean activation of 0.05."""

from gen_jax.config import config_module, parse_arg
from gen_jax.defaults import smoke

ae_digits = config_module("ae_digits", __file__)


def get_config(arg=None):
    opts = parse_arg(arg, smoke=False)
    config = ae_digits.get_config()
    config.method = "sae"
    config.model.arch = "mlp"
    config.model.hidden_sizes = (256,)
    config.model.latent_dim = 64
    config.model.code_activation = "sigmoid"
    config.model.sparsity = "kl"
    config.model.sparsity_weight = 0.01
    config.model.sparsity_target = 0.05
    if opts.smoke:
        smoke(config)
    return config
