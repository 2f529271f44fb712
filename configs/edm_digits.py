"""EDM (Karras et al., 2022) on scikit-learn's 8x8 digits: the ddpm_digits UNet
under EDM's preconditioning, log-normal σ training, and the deterministic Heun
sampler on the ρ = 7 schedule (18 steps, 35 network calls).

The 17-level pixels are scaled to (-1, 1), where EDM's σ_data = 0.5 is the paper's
choice for images (the digits' pixel standard deviation is 0.75 there).
"""

import ml_collections

from gen_jax.config import parse_arg
from gen_jax.defaults import get_config as default_config
from gen_jax.defaults import smoke


def get_config(arg=None):
    opts = parse_arg(arg, smoke=False)
    config = default_config()
    config.method = "edm"
    config.data.name = "digits"
    config.data.value_range = (-1.0, 1.0)
    config.data.batch_size = 64

    m = config.model
    m.arch = "unet"               # "unet" | "mlp"
    m.ch = 32
    m.ch_mult = (1, 2)            # 8x8 -> 4x4
    m.num_res_blocks = 1
    m.attn_resolutions = (4,)
    m.dropout = 0.1
    m.groups = 32
    m.dtype = "float32"
    m.hidden = 256                # arch="mlp" only
    m.depth = 3
    m.sigma_data = 0.5
    m.p_mean = -1.2               # ln σ ~ N(P_mean, P_std²) in training
    m.p_std = 1.2

    config.sampler = ml_collections.ConfigDict()
    s = config.sampler
    s.method = "heun"             # "heun" | "euler" | "stochastic"
    s.num_steps = 18              # N; Heun makes 2N - 1 network calls
    s.sigma_min = 0.002
    s.sigma_max = 80.0
    s.rho = 7.0
    s.s_churn = 0.0               # "stochastic" only (Alg. 2)
    s.s_min = 0.0
    s.s_max = float("inf")
    s.s_noise = 1.0

    config.optim.learning_rate = 2e-3
    config.optim.schedule = "cosine"
    config.optim.warmup_steps = 200
    config.optim.grad_clip = 1.0
    config.train.num_steps = 2000
    config.train.log_every = 100
    config.train.eval_every = 0
    config.train.checkpoint_every = 500
    config.train.ema_decay = 0.999
    config.eval.num_samples = 360
    if opts.smoke:
        smoke(config, **_SMOKE)
    return config


# The smoke run takes the MLP (the UNet path is the ddpm_digits smoke's network: a UNet
# train step alone compiles for longer than the smoke budget of ~6 s).
_SMOKE = {"model.arch": "mlp", "model.hidden": 16, "model.depth": 1, "sampler.num_steps": 2}
