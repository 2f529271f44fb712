"""RealNVP on 2-D toy data (default two moons): samples next to a density heat map.

Any toy set works: ``--config.data.name=checkerboard`` (or ring8, spirals,
pinwheel), and any flow: ``--config.method=glow`` / ``nice`` / ``flowpp`` use
the same MLP conditioners on vectors. The likelihood is the exact density of
the continuous data (nats per example).
"""

from gen_jax.config import parse_arg
from gen_jax.defaults import get_config as default_config
from gen_jax.defaults import smoke


def get_config(arg=None):
    opts = parse_arg(arg, smoke=False)
    config = default_config()
    config.method = "realnvp"
    config.data.name = "moons"
    config.data.batch_size = 256

    # Keys of every flow, so --config.method can switch between them.
    config.model.num_couplings = 8   # nice, realnvp
    config.model.steps_per_level = 8  # glow, flowpp
    config.model.hidden = 64
    config.model.num_layers = 2      # MLP hidden layers per conditioner
    config.model.num_blocks = 0
    config.model.num_scales = 1
    config.model.num_levels = 1      # glow: multi-scale levels (not the pixel levels)
    config.model.logit_alpha = 0.05
    config.model.coupling = "affine"
    config.model.learn_top = True
    config.model.split_prior = False
    config.model.num_heads = 0
    config.model.num_components = 4
    config.model.dequantize = "uniform"
    config.model.dequant_steps = 0

    config.optim.learning_rate = 2e-3
    config.optim.schedule = "cosine"
    config.optim.warmup_steps = 100
    config.optim.grad_clip = 100.0
    config.train.num_steps = 5000
    config.train.log_every = 100
    config.train.eval_every = 1000
    config.train.checkpoint_every = 1000
    if opts.smoke:
        smoke(config, **_SMOKE)
    return config


_SMOKE = {"model.num_couplings": 2, "model.hidden": 16, "data.num_train": 512,
          "data.num_eval": 256}
