"""ProGAN (Karras et al., 2018) on the 100 LFW faces bundled with scikit-image (``faces100``,
grayscale, 32x32, values in [-1, 1]): progressive growing 4 -> 8 -> 16 -> 32, each stage
after the first fading its new layers in over ``progan.fade_steps`` steps, then training
them for ``progan.stable_steps`` (400 steps of 16 images each, a CPU-sized schedule of
2800 steps; the paper shows 800k images per phase). ``:res=64`` grows on to 64x64 (the
25x25 faces upsampled).

The paper's settings otherwise: equalized learning rate, pixel norm in G, minibatch
stddev (groups of 4) in D, WGAN-GP (lambda 10) with drift 0.001, one critic update per
generator update, Adam(1e-3, b1=0, b2=0.99) with moments reset at every phase, G EMA
0.999. Channels are narrower than the paper's 512 for CPU.
"""

import ml_collections

from gen_jax.config import parse_arg
from gen_jax.defaults import get_config as default_config
from gen_jax.defaults import smoke

_CHANNELS = {4: 64, 8: 64, 16: 32, 32: 16, 64: 8}


def get_config(arg=None):
    opts = parse_arg(arg, smoke=False, res=32)
    config = default_config()
    config.method = "progan"
    config.data.name = "faces100"
    config.data.image_size = opts.res
    config.data.value_range = (-1.0, 1.0)
    config.data.batch_size = 16
    config.data.eval_batch_size = 40  # divides 1, 2, 4 and 8 devices (100 did not divide 8)

    resolutions = tuple(4 * 2 ** k for k in range(8) if 4 * 2 ** k <= opts.res)  # 4, 8, ..., res
    m = config.model
    m.latent_dim = 64
    m.g_channels = tuple(_CHANNELS[r] for r in resolutions)  # one width per resolution
    m.d_channels = tuple(_CHANNELS[r] for r in resolutions)

    config.progan = ml_collections.ConfigDict()
    p = config.progan
    p.resolutions = resolutions
    p.stable_steps = 400
    p.fade_steps = 400
    p.gp_weight = 10.0
    p.drift_weight = 0.001             # eps_drift
    p.mbstd_group = 4                  # 0 = no minibatch stddev
    p.pixel_norm = True
    p.reset_optimizer = True           # fresh Adam moments at each fade and stable phase

    for opt in (config.optim,):
        opt.learning_rate = 1e-3
        opt.b1 = 0.0
        opt.b2 = 0.99
    config.d_optim = ml_collections.ConfigDict(config.optim.to_dict())
    config.train.ema_decay = 0.999
    config.train.num_steps = p.stable_steps + (len(resolutions) - 1) * (p.fade_steps + p.stable_steps)
    config.train.log_every = 50
    config.train.eval_every = 800
    config.train.checkpoint_every = 400
    config.train.num_grid_samples = 64
    config.eval.num_samples = 500
    if opts.smoke:
        smoke(config, **_SMOKE)
    return config


# Two stages (4 -> 8 on 8x8 faces) whose first lasts the 3 smoke steps: a second stage's
# program (a second-order gradient through D) would double the compile time, so crossing
# the boundary is left to tests/gans/test_progan.py; the 8x8 path is still compiled and run
# by the sampler and the evaluation.
_SMOKE = {"data.image_size": 8, "model.latent_dim": 8, "model.g_channels": (8, 4),
          "model.d_channels": (4, 8), "progan.resolutions": (4, 8), "progan.stable_steps": 3,
          "progan.fade_steps": 1}
