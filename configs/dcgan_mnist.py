"""DCGAN on MNIST from tensorflow-datasets (read from disk; see configs/vae_mnist.py for
how to prepare it): 7x7 -> 14 -> 28 generator, 28 -> 14 -> 7 discriminator."""

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
import dcgan_digits  # noqa: E402


def get_config():
    config = dcgan_digits.get_config()
    config.data.name = "tfds:mnist"
    config.data.batch_size = 128
    config.model.latent_dim = 100
    config.model.g_channels = (128, 64)
    config.model.d_channels = (64, 128)
    config.train.num_steps = 20000
    config.train.eval_every = 2000
    config.train.checkpoint_every = 2000
    config.eval.max_batches = 10
    return config


TEST_OVERRIDES = {"model.g_channels": (8, 4), "model.d_channels": (4, 8), "model.latent_dim": 8}
