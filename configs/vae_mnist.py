"""Convolutional VAE on MNIST from tensorflow-datasets (read from disk; see README).

Prepare once on a machine with internet and TensorFlow:
``tfds build mnist --file_format=array_record --data_dir=DIR``, then pass
``--config.data.data_dir=DIR``. Likelihoods are bounds in bits/dim of the
256-level images.
"""

from gen_jax.config import config_module, parse_arg
from gen_jax.defaults import smoke

vae_digits = config_module("vae_digits", __file__)


def get_config(arg=None):
    opts = parse_arg(arg, smoke=False)
    config = vae_digits.get_config()
    config.data.name = "tfds:mnist"
    config.data.batch_size = 128
    config.model.latent_dim = 32
    config.model.channels = (32, 64)   # 28 -> 14 -> 7
    config.model.hidden_sizes = (512,)
    config.train.num_steps = 20000
    config.train.eval_every = 2000
    config.train.checkpoint_every = 2000
    config.eval.max_batches = 10
    if opts.smoke:
        smoke(config)
    return config
