"""NICE (additive couplings + diagonal scaling) on scikit-learn's 8x8 digits.

Uniformly dequantized 17-level pixels, flattened to 64-d vectors; the exact
flow likelihood is a bound on the discrete data's (bits/dim of 17-level data;
the uniform model is 4.09).
"""

from gen_jax.config import parse_arg
from gen_jax.defaults import get_config as default_config
from gen_jax.defaults import smoke


def get_config(arg=None):
    opts = parse_arg(arg, smoke=False)
    config = default_config()
    config.method = "nice"
    config.data.name = "digits"
    config.data.dequantize = "uniform"
    config.data.batch_size = 64

    config.model.num_couplings = 4
    config.model.hidden = 256
    config.model.num_layers = 3

    config.optim.learning_rate = 1e-3
    config.optim.schedule = "cosine"
    config.optim.warmup_steps = 100
    config.optim.grad_clip = 100.0
    config.train.num_steps = 4000
    config.train.log_every = 100
    config.train.eval_every = 1000
    config.train.checkpoint_every = 1000
    if opts.smoke:
        smoke(config, **_SMOKE)
    return config


_SMOKE = {"model.hidden": 16, "model.num_layers": 1}
