"""Sparse autoencoder on 8x8 digits: an overcomplete MLP code (64 sigmoid units for
64 pixels) with Ng's KL sparsity penalty towards a mean activation of 0.05."""

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
import ae_digits  # noqa: E402


def get_config():
    config = ae_digits.get_config()
    config.method = "sae"
    config.model.arch = "mlp"
    config.model.hidden = (256,)
    config.model.latent_dim = 64
    config.model.code_activation = "sigmoid"
    config.model.sparsity = "kl"
    config.model.sparsity_weight = 0.01
    config.model.sparsity_target = 0.05
    return config
