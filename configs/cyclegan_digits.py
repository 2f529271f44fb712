"""CycleGAN on 8x8 digits between two unpaired domains: domain A = one half of the
images as they are, domain B = the other (disjoint) half inverted (model.task;
'thicken' dilates them instead). Two U-Net generators, two PatchGANs, LSGAN terms,
cycle weight 10, identity weight 0.5, Adam(2e-4, b1=0.5) as in Zhu et al. (2017)."""

from gen_jax.config import config_module, parse_arg
from gen_jax.defaults import get_config as default_config
from gen_jax.defaults import smoke

gan_toy2d = config_module("gan_toy2d", __file__)


def get_config(arg=None):
    opts = parse_arg(arg, smoke=False)
    config = gan_toy2d.gan_defaults(default_config())
    config.method = "cyclegan"
    config.data.name = "digits"
    config.data.value_range = (-1.0, 1.0)
    config.data.batch_size = 32
    m = config.model
    m.task = "invert"          # invert | thicken | labels (tfds cycle_gan/*: label = domain)
    m.downsample = 1           # average-pool images by this factor first (large tfds images)
    m.g_channels = (32, 64, 128)
    m.d_channels = (32, 64)
    m.g_norm = "instance"
    m.d_norm = "instance"
    config.gan.objective = "lsgan"
    config.gan.cycle_weight = 10.0
    config.gan.identity_weight = 0.5
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
