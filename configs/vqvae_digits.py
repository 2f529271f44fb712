"""VQ-VAE on scikit-learn's 8x8 digits: 4x4 code maps over a 32-code codebook.

EMA codebook updates and dead-code restarts are on. ``sample`` of a bare
VQ-VAE decodes uniformly random codes; configs/vqvae_prior_digits.py fits the
PixelCNN prior over this model's code maps (the generative model).
"""

from gen_jax.config import parse_arg
from gen_jax.defaults import get_config as default_config
from gen_jax.defaults import smoke


def get_config(arg=None):
    opts = parse_arg(arg, smoke=False)
    config = default_config()
    config.method = "vqvae"
    config.data.name = "digits"
    config.data.dequantize = "none"
    config.data.value_range = (-1.0, 1.0)
    config.data.batch_size = 64

    config.model.channels = 64
    config.model.num_res = 1
    config.model.downsample = 1        # 8x8 -> 4x4 code map
    config.model.num_codes = 32
    config.model.code_dim = 16
    config.model.beta = 0.25           # commitment weight
    config.model.codebook = "ema"      # "ema" | "loss"
    config.model.ema_decay = 0.99      # also the decay of the code-usage statistics
    config.model.ema_eps = 1e-5
    config.model.restart_dead = True
    config.model.restart_threshold = 0.5  # running uses per batch below which a code restarts
    config.model.upsample = "pixel_shuffle"

    config.optim.learning_rate = 1e-3
    config.train.num_steps = 2000
    config.train.log_every = 100
    config.train.eval_every = 1000
    config.train.checkpoint_every = 1000
    if opts.smoke:
        smoke(config, **_SMOKE)
    return config


# The 3-step smoke test (tests/test_configs.py) runs a tiny model.
_SMOKE = {"model.channels": 8, "model.code_dim": 4, "model.num_codes": 8,
          "model.num_res": 0}
