"""Denoising autoencoder on 8x8 digits: masking noise, each pixel set to black with
probability 0.25 (Vincent et al., 2008); the rest as configs/ae_digits.py."""

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
import ae_digits  # noqa: E402


def get_config():
    config = ae_digits.get_config()
    config.method = "dae"
    config.model.noise = "masking"
    config.model.mask_prob = 0.25
    return config
