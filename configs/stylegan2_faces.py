"""StyleGAN2 (Karras et al., 2020) with DiffAugment (Zhao et al., 2020) on the 100 LFW faces
bundled with scikit-image (``faces100``, grayscale, 32x32, values in [-1, 1]), a 100-shot
set as in DiffAugment's few-shot experiments.

The paper's settings, narrower for CPU: mapping network of 8 layers (w of 128, lr
multiplier 0.01), skip generator and residual discriminator at 4, 8, 16, 32, minibatch
stddev groups of 4, non-saturating logistic loss, lazy R1 every 16 D steps and lazy
path-length regularization (weight 2, decay 0.01, half batch) every 4 G steps, style
mixing with probability 0.9, Adam(2e-3, b1=0, b2=0.99) (the paper's lr; the Method
rescales it and the betas by k / (k + 1) for each network's lazy interval), G EMA with
decay 0.999 (a half-life of 693 steps) capped by StyleGAN2-ADA's rampup at 0.05 x the steps
so far (40 steps at the end). 800 steps of batch 16, ~10 CPU-minutes on the shared 2-core
machine (the paper trains for 25M images). R1 gamma = 0.01: StyleGAN2-ADA's
heuristic 0.0002 res^2 / batch at 32x32, batch 16 (its CIFAR-10 setting is 0.01).
DiffAugment policy color,translation,cutout (the paper's choice for 100-shot data).
Evaluation as progan_faces: 500 EMA samples (untruncated) against the 100 faces.
"""

import ml_collections

from gen_jax.config import parse_arg
from gen_jax.defaults import get_config as default_config
from gen_jax.defaults import smoke


def get_config(arg=None):
    opts = parse_arg(arg, smoke=False)
    config = default_config()
    config.method = "stylegan2"
    config.data.name = "faces100"
    config.data.image_size = 32
    config.data.value_range = (-1.0, 1.0)
    config.data.batch_size = 16
    config.data.eval_batch_size = 40   # divides 1, 2, 4 and 8 devices (as progan_faces)

    m = config.model
    m.latent_dim = 128
    m.w_dim = 128
    m.mapping_layers = 8
    m.g_channels = (64, 64, 32, 16)    # widths at 4, 8, 16, 32
    m.d_channels = (64, 64, 32, 16)

    config.stylegan2 = ml_collections.ConfigDict()
    s = config.stylegan2
    s.mapping_lr_mul = 0.01
    s.r1_gamma = 0.01
    s.r1_every = 16                    # lazy R1: one D update on it every 16 steps
    s.pl_weight = 2.0
    s.pl_every = 4                     # lazy path-length: one G update on it every 4 steps
    s.pl_decay = 0.01
    s.pl_batch_shrink = 2
    s.style_mixing_prob = 0.9
    s.mbstd_group = 4                  # 0 = no minibatch stddev
    s.w_avg_beta = 0.995
    s.ema_rampup = 0.05                # EMA half-life <= 0.05 x steps so far; 0 = off
    s.augment = "color,translation,cutout"  # DiffAugment policy; "" = off
    s.truncation = 1.0                 # the sampler's psi; 1 = off

    config.optim.learning_rate = 2e-3
    config.optim.b1 = 0.0
    config.optim.b2 = 0.99
    config.d_optim = ml_collections.ConfigDict(config.optim.to_dict())
    config.train.ema_decay = 0.999
    config.train.num_steps = 800       # ~0.6 CPU-s a step on the 2-core machine: ~10 CPU-minutes
    config.train.log_every = 50
    config.train.eval_every = 400
    config.train.checkpoint_every = 200
    config.train.num_grid_samples = 64
    config.eval.num_samples = 500
    if opts.smoke:
        smoke(config, **_SMOKE)
    return config


# 8x8 (two resolutions), both lazy terms at steps 0 and 2 of the 3 smoke steps, an EMA
# half-life of at most 1 x step (decays 0.5, 0.71, 0.79: visible in 3 steps), a checkpoint
# after every step (tests/gans/test_stylegan2.py reads them).
_SMOKE = {"data.image_size": 8, "model.latent_dim": 8, "model.w_dim": 8, "model.mapping_layers": 2,
          "model.g_channels": (8, 4), "model.d_channels": (4, 8), "stylegan2.r1_every": 2,
          "stylegan2.pl_every": 2, "stylegan2.ema_rampup": 1.0,
          "train.checkpoint_every": 1, "train.keep_checkpoints": 0}
