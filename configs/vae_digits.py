"""Convolutional VAE on scikit-learn's 8x8 digits: the default job (~1 min on CPU).

Gaussian decoder on uniformly dequantized 17-level pixels, so the ELBO and the
IWAE bound are bounds on the discrete data's log-likelihood (bits/dim of
17-level data; the uniform model is log2(17) = 4.09 bits/dim).
"""

from gen_jax.config import parse_arg
from gen_jax.defaults import get_config as default_config
from gen_jax.defaults import smoke


def get_config(arg=None):
    opts = parse_arg(arg, smoke=False)
    config = default_config()
    config.method = "vae"
    config.data.name = "digits"
    config.data.dequantize = "uniform"
    config.data.batch_size = 128

    config.model.arch = "conv"
    config.model.latent_dim = 8
    config.model.channels = (16, 32)   # 8 -> 4 -> 2
    config.model.hidden_sizes = (128,)
    config.model.decoder = "gaussian"
    config.model.decoder_std = "network"
    config.model.fixed_std = 0.1
    config.model.upsample = "pixel_shuffle"
    config.model.activation = "silu"
    config.model.beta = 1.0

    config.optim.learning_rate = 2e-3
    config.optim.schedule = "cosine"
    config.optim.warmup_steps = 100
    config.train.num_steps = 2000
    config.train.log_every = 50
    config.train.eval_every = 500
    config.train.checkpoint_every = 500
    config.train.ema_decay = 0.999

    if opts.smoke:
        smoke(config)
    return config
