"""Probabilistic PCA (Tipping & Bishop, 1999) on scikit-learn's 8x8 digits (seconds on CPU).

Closed-form fit on the whole training split, handed to the Method's ``fit`` by the runtime; the "training"
steps only report the training NLL (10 x 128 = one epoch). Density of
uniformly dequantized 17-level pixels (bits/dim of 17-level data; the uniform
model is 4.09). Sample grids show the mean of p(x|z); the recon grid is the
projection onto the principal subspace. num_components was chosen on the
validation split: the NLL falls until about M = 50 (3.43 bits/dim at M = 20,
2.95 at M = 50, flat after), because σ² must shrink to the tiny variance of the
near-constant border pixels; use --config.model.num_components=10 for a
visibly compressed recon grid.
"""

from gen_jax.config import parse_arg
from gen_jax.defaults import get_config as default_config
from gen_jax.defaults import smoke


def get_config(arg=None):
    opts = parse_arg(arg, smoke=False)
    config = default_config()
    config.method = "pca"
    config.data.name = "digits"
    config.data.dequantize = "uniform"
    config.data.batch_size = 128

    config.model.num_components = 50
    config.model.method = "auto"  # "auto" | "covariance" | "gram" (inner-product trick)

    config.train.num_steps = 10
    config.train.log_every = 10
    config.train.eval_every = 0
    config.train.checkpoint_every = 0
    if opts.smoke:
        smoke(config)
    return config
