"""Gaussian mixture (K = 8, full covariances) on the 2-D ring of 8 Gaussians.

The data are themselves an 8-component mixture (std 0.05), so EM should find
the modes exactly: the density plot (samples/density.png) shows 8 round
bumps and the test NLL matches the generating mixture's. Seconds on CPU.
"""

from gen_jax.config import config_module, parse_arg
from gen_jax.defaults import smoke

gmm_digits = config_module("gmm_digits", __file__)


def get_config(arg=None):
    opts = parse_arg(arg, smoke=False)
    config = gmm_digits.get_config()
    config.data.name = "ring8"
    config.data.dequantize = "none"  # continuous data: nothing to dequantize
    config.data.batch_size = 400

    config.model.num_components = 8
    config.model.covariance_type = "full"
    config.model.reg_covar = 1e-6
    config.model.num_restarts = 4

    config.train.num_steps = 50  # one epoch of the 20000 training points
    config.train.log_every = 50
    config.eval.num_samples = 1000
    if opts.smoke:
        smoke(config)
    return config
