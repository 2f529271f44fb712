"""DCGAN on MNIST from tensorflow-datasets (read from disk; see configs/vae_mnist.py for
how to prepare it): 7x7 -> 14 -> 28 generator, 28 -> 14 -> 7 discriminator."""

from gen_jax.config import config_module, parse_arg
from gen_jax.defaults import smoke

dcgan_digits = config_module("dcgan_digits", __file__)


def get_config(arg=None):
    opts = parse_arg(arg, smoke=False)
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
    if opts.smoke:
        smoke(config, **_SMOKE)
    return config


_SMOKE = {"model.g_channels": (8, 4), "model.d_channels": (4, 8), "model.latent_dim": 8}
