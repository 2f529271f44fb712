"""Flow matching / rectified flow (Lipman et al., 2023; Liu et al., 2023) on
scikit-learn's 8x8 digits: the ddpm_digits UNet predicts the velocity ε - x_0 of
the straight path x_t = (1 - t) x_0 + t ε (t = 0 data, t = 1 noise); samples by
Heun's method (20 steps, 40 network calls).

The 17-level pixels are uniformly dequantized into (-1, 1), so ``log_prob`` (the
instantaneous change of variables with Hutchinson's divergence estimator and
adaptive RK45) bounds the discrete data's log-likelihood.
"""

import ml_collections

from gen_jax.config import parse_arg
from gen_jax.defaults import get_config as default_config
from gen_jax.defaults import smoke


def get_config(arg=None):
    opts = parse_arg(arg, smoke=False)
    config = default_config()
    config.method = "flow_matching"
    config.data.name = "digits"
    config.data.value_range = (-1.0, 1.0)
    config.data.dequantize = "uniform"
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

    config.sampler = ml_collections.ConfigDict()
    s = config.sampler
    s.method = "heun"             # "euler" | "heun" | "rk45"
    s.num_steps = 20              # fixed-step solvers (and fixed-step log_prob)
    s.rtol = 1e-4                 # rk45
    s.atol = 1e-4
    s.log_prob_solver = "rk45"    # "heun" | "rk4" | "rk45"
    s.divergence = "rademacher"   # "exact" | "rademacher" | "gaussian"

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
_SMOKE = {"model.arch": "mlp", "model.hidden": 16, "model.depth": 1, "sampler.num_steps": 2,
          "sampler.log_prob_solver": "heun"}
