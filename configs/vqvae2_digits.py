"""VQ-VAE-2 on scikit-learn's 8x8 digits: a 2x2 top and a 4x4 bottom code map.

8x8 images are small for two levels, but the hierarchy works: the top map
holds 2x2 coarse codes and the bottom map refines them (reconstruction grids
in the workdir's samples/recon_*.png).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
import vqvae_digits  # noqa: E402


def get_config():
    config = vqvae_digits.get_config()
    config.method = "vqvae2"
    config.model.downsample = 1        # bottom 4x4, top 2x2
    config.model.num_codes = 32
    return config


# The 3-step smoke test (tests/test_configs.py) runs a tiny model.
TEST_OVERRIDES = {"model.channels": 8, "model.code_dim": 4, "model.num_codes": 8,
                  "model.num_res": 0}
