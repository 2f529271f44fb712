"""SinGAN (Shaham et al., 2019) on one image bundled with scikit-image: by default the
``brick`` texture (grayscale), its longer side shrunk to 64 px, 4 scales from a 24 px
coarsest scale, 600 steps per scale (a few CPU minutes; the paper: 250 px, ~8 scales,
2000 steps each). ``:image=<name>`` trains on another bundled image (``china``,
``gravel``, ``astronaut``, ...; see gen_jax/data/bundled.py) or an image file path.

The official settings otherwise: 5 layers of 3x3 convs with 32 channels, 3 critic and
3 generator updates per step, WGAN-GP with the per-pixel penalty (weight 0.1),
reconstruction weight 10, noise amplitude 0.1 x RMSE, Adam(5e-4, b1=0.5) decayed by
10x after 80% of each scale.
"""

import ml_collections

from gen_jax.config import parse_arg
from gen_jax.defaults import get_config as default_config
from gen_jax.defaults import smoke


def get_config(arg=None):
    opts = parse_arg(arg, smoke=False, image="brick", size=64)
    config = default_config()
    config.method = "singan"
    config.data.name = f"image:{opts.image}"
    config.data.image_size = opts.size  # the longer side, in pixels
    config.data.value_range = (-1.0, 1.0)
    config.data.batch_size = 1          # the one image
    config.data.eval_batch_size = 1

    m = config.model
    m.channels = 32
    m.num_layers = 5
    m.kernel = 3
    m.norm = "instance"                 # "instance" | "none"
    m.conv = "wdot"                     # "wdot" (fast conv gradients on CPU) | "xla" (lax.conv)

    config.singan = ml_collections.ConfigDict()
    s = config.singan
    s.num_scales = 4
    s.min_size = 24                     # the coarsest scale's shorter side
    s.steps_per_scale = 600
    s.d_steps = 3
    s.g_steps = 3
    s.gp = "pixel"                      # "pixel" (official) | "image" (Gulrajani et al.)
    s.gp_weight = 0.1
    s.rec_weight = 10.0                 # alpha
    s.noise_amp = 0.1                   # amp_n = noise_amp * RMSE(real_n, up(rec_{n-1}))
    s.lr_decay_at = 0.8                 # fraction of each scale's steps
    s.lr_gamma = 0.1

    config.optim.learning_rate = 5e-4
    config.optim.b1 = 0.5
    config.d_optim = ml_collections.ConfigDict(config.optim.to_dict())
    config.train.num_steps = s.num_scales * s.steps_per_scale
    config.train.log_every = 50
    config.train.eval_every = 600
    config.train.checkpoint_every = 600
    config.train.num_grid_samples = 16
    config.eval.num_samples = 16
    if opts.smoke:
        smoke(config, **_SMOKE)
    return config


# Two scales of a 24 px image, 2 steps each: the 3 smoke steps cross the scale boundary.
# lax.conv and no norm compile in about half the time (tests/gans/test_singan.py covers both).
_SMOKE = {"data.image_size": 24, "data.batch_size": 1, "data.eval_batch_size": 1,
          "model.channels": 8, "model.num_layers": 3, "model.norm": "none", "model.conv": "xla",
          "singan.num_scales": 2, "singan.min_size": 16, "singan.steps_per_scale": 2,
          "singan.d_steps": 1, "singan.g_steps": 1}
