"""DCGAN on CIFAR-10 from tensorflow-datasets (read from disk): 4x4 -> 8 -> 16 -> 32
generator, 32 -> 16 -> 8 -> 4 discriminator, Adam(2e-4, b1=0.5)."""

from gen_jax.config import config_module, parse_arg
from gen_jax.defaults import smoke

dcgan_digits = config_module("dcgan_digits", __file__)


def get_config(arg=None):
    opts = parse_arg(arg, smoke=False)
    config = dcgan_digits.get_config()
    config.data.name = "tfds:cifar10"
    config.data.batch_size = 128
    config.model.latent_dim = 100
    config.model.g_channels = (256, 128, 64)
    config.model.d_channels = (64, 128, 256)
    config.train.num_steps = 50000
    config.train.eval_every = 5000
    config.train.checkpoint_every = 5000
    config.eval.max_batches = 10
    if opts.smoke:
        smoke(config, **_SMOKE)
    return config


_SMOKE = {"model.g_channels": (8, 4, 4), "model.d_channels": (4, 4, 8), "model.latent_dim": 8}
