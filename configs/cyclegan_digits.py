"""CycleGAN on 8x8 digits between two unpaired domains: domain A = one half of the
images as they are, domain B = the other (disjoint) half inverted (model.task;
'thicken' dilates them instead). Two U-Net generators, two PatchGANs, LSGAN terms,
cycle weight 10, identity weight 0.5, Adam(2e-4, b1=0.5) as in Zhu et al. (2017)."""

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
import default  # noqa: E402
import gan_toy2d  # noqa: E402


def get_config():
    config = gan_toy2d.gan_defaults(default.get_config())
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
    return config


TEST_OVERRIDES = {"model.g_channels": (8, 8), "model.d_channels": (8, 8)}
