"""Glow (actnorm, LU 1x1 conv, affine coupling; split with learned prior) on 8x8 digits.

Uniformly dequantized 17-level pixels, shifted to [-0.5, 0.5] inside the flow:
bits/dim of 17-level data (uniform model: 4.09). Level 1: squeeze to 4x4x4,
``steps_per_level`` steps, split; level 2: squeeze to 2x2x8, steps, learned top prior.
"""

from gen_jax.config import parse_arg
from gen_jax.defaults import get_config as default_config
from gen_jax.defaults import smoke


def get_config(arg=None):
    opts = parse_arg(arg, smoke=False)
    config = default_config()
    config.method = "glow"
    config.data.name = "digits"
    config.data.dequantize = "uniform"
    config.data.batch_size = 64

    config.model.num_levels = 2  # multi-scale levels (squeeze, steps, split), not pixel levels
    config.model.steps_per_level = 4
    config.model.hidden = 64         # conditioner channels (units for vector data)
    config.model.num_layers = 2      # MLP hidden layers (vector data only)
    config.model.num_blocks = 0      # 0 = Glow's 3x3 / 1x1 / zero-init 3x3 network
    config.model.coupling = "affine"  # "affine" | "additive"
    config.model.learn_top = True
    config.model.split_prior = True

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


_SMOKE = {"model.steps_per_level": 1, "model.hidden": 8}
