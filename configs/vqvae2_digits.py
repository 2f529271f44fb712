"""VQ-VAE-2 on scikit-learn's 8x8 digits: a 2x2 top and a 4x4 bottom code map.

8x8 images are small for two levels, but the hierarchy works: the top map
holds 2x2 coarse codes and the bottom map refines them (reconstruction grids
in the workdir's samples/recon_*.png).
"""

from gen_jax.config import config_module, parse_arg
from gen_jax.defaults import smoke

vqvae_digits = config_module("vqvae_digits", __file__)


def get_config(arg=None):
    opts = parse_arg(arg, smoke=False)
    config = vqvae_digits.get_config()
    config.method = "vqvae2"
    config.model.downsample = 1        # bottom 4x4, top 2x2
    config.model.num_codes = 32
    if opts.smoke:
        smoke(config, **_SMOKE)
    return config


# The 3-step smoke test (tests/test_configs.py) runs a tiny model.
_SMOKE = {"model.channels": 8, "model.code_dim": 4, "model.num_codes": 8,
          "model.num_res": 0}
