"""Glow on MNIST from tensorflow-datasets (read from disk; see configs/vae_mnist.py).

28x28 does not halve three times, so two levels: squeeze to 14x14x4, steps,
split with a learned prior, squeeze to 7x7x8, steps, learned top prior.
Bits/dim of the 256-level images (uniform dequantization bound).
"""

from gen_jax.config import config_module, parse_arg
from gen_jax.defaults import smoke

glow_digits = config_module("glow_digits", __file__)


def get_config(arg=None):
    opts = parse_arg(arg, smoke=False)
    config = glow_digits.get_config()
    config.data.name = "tfds:mnist"
    config.model.num_levels = 2  # multi-scale levels (squeeze, steps, split), not pixel levels
    config.model.steps_per_level = 16
    config.model.hidden = 256
    config.train.num_steps = 50000
    config.train.eval_every = 5000
    config.train.checkpoint_every = 5000
    config.eval.max_batches = 10
    if opts.smoke:
        smoke(config, **_SMOKE)
    return config


_SMOKE = {"model.steps_per_level": 1, "model.hidden": 8}
