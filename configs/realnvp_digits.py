"""RealNVP (affine couplings, checkerboard + channel masks, multi-scale) on 8x8 digits.

Uniformly dequantized 17-level pixels in [0, 1], logit-preprocessed inside the
flow (its log-det counted): bits/dim of 17-level data (uniform model: 4.09).
Scale 1: 3 checkerboard couplings at 8x8x1, squeeze to 4x4x4, 3 channel
couplings, factor out half; scale 2: 4 checkerboard couplings at 4x4x2.
"""

from gen_jax.config import parse_arg
from gen_jax.defaults import get_config as default_config
from gen_jax.defaults import smoke


def get_config(arg=None):
    opts = parse_arg(arg, smoke=False)
    config = default_config()
    config.method = "realnvp"
    config.data.name = "digits"
    config.data.dequantize = "uniform"
    config.data.batch_size = 64

    config.model.num_scales = 2
    config.model.num_couplings = 6   # vector data only
    config.model.hidden = 32         # conditioner channels (units for vector data)
    config.model.num_layers = 2      # MLP hidden layers (vector data only)
    config.model.num_blocks = 2      # residual blocks per conditioner
    config.model.logit_alpha = 0.05

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


_SMOKE = {"model.hidden": 8, "model.num_blocks": 0}
