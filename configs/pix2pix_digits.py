"""pix2pix on 8x8 digits: edges -> digit (model.task='lowres' for 4x4 -> 8x8
super-resolution). U-Net G (8 -> 4 -> 2 -> 1 and back, skips), PatchGAN D on
(input, output) pairs, lambda = 100 L1, Adam(2e-4, b1=0.5) as in Isola et al. (2017)."""

from gen_jax.config import config_module, parse_arg
from gen_jax.defaults import get_config as default_config
from gen_jax.defaults import smoke

gan_toy2d = config_module("gan_toy2d", __file__)


def get_config(arg=None):
    opts = parse_arg(arg, smoke=False)
    config = gan_toy2d.gan_defaults(default_config())
    config.method = "pix2pix"
    config.data.name = "digits"
    config.data.value_range = (-1.0, 1.0)
    config.data.batch_size = 32
    m = config.model
    m.task = "edges"           # edges | lowres
    m.lowres_factor = 2
    m.g_channels = (32, 64, 128)
    m.d_channels = (32, 64)
    m.g_norm = "batch"
    m.d_norm = "batch"
    m.dropout = 0.5
    config.gan.objective = "nonsaturating"
    config.gan.l1_weight = 100.0
    for opt in (config.optim, config.d_optim):
        opt.learning_rate = 2e-4
        opt.b1 = 0.5
    config.train.num_steps = 3000
    config.train.log_every = 100
    config.train.eval_every = 1000
    config.train.checkpoint_every = 1000
    if opts.smoke:
        smoke(config, **_SMOKE)
    return config


_SMOKE = {"model.g_channels": (8, 8), "model.d_channels": (8, 8)}
