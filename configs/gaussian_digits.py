"""One full-covariance Gaussian on scikit-learn's 8x8 digits: the simplest baseline.

Maximum-likelihood fit (mean and covariance of the training split, handed to
the Method's ``fit`` by the runtime); the "training" steps only report the training NLL (10 x 128 = one
epoch). Density of uniformly dequantized 17-level pixels (bits/dim of 17-level
data; the uniform model is 4.09).
"""

from gen_jax.config import parse_arg
from gen_jax.defaults import get_config as default_config
from gen_jax.defaults import smoke


def get_config(arg=None):
    opts = parse_arg(arg, smoke=False)
    config = default_config()
    config.method = "gaussian"
    config.data.name = "digits"
    config.data.dequantize = "uniform"
    config.data.batch_size = 128

    config.model.covariance_type = "full"  # "full" | "diag"
    config.model.reg_covar = 1e-4          # chosen on the validation split (barely matters)

    config.train.num_steps = 10
    config.train.log_every = 10
    config.train.eval_every = 0
    config.train.checkpoint_every = 0
    if opts.smoke:
        smoke(config)
    return config
