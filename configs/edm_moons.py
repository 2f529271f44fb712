"""EDM (Karras et al., 2022) on the 2-D moons: a residual MLP under EDM's
preconditioning, sampled by the deterministic Heun sampler (the moons' coordinates
have standard deviations 1.16 and 0.67; σ_data = 1)."""

import ml_collections

from gen_jax.config import parse_arg
from gen_jax.defaults import get_config as default_config
from gen_jax.defaults import smoke


def get_config(arg=None):
    opts = parse_arg(arg, smoke=False)
    config = default_config()
    config.method = "edm"
    config.data.name = "moons"
    config.data.batch_size = 256
    m = config.model
    m.arch = "mlp"
    m.hidden = 128
    m.depth = 3
    m.dropout = 0.0
    m.sigma_data = 1.0
    m.p_mean = -1.2
    m.p_std = 1.2

    config.sampler = ml_collections.ConfigDict()
    s = config.sampler
    s.name = "heun"             # "heun" | "euler" | "stochastic"
    s.num_steps = 18
    s.sigma_min = 0.002
    s.sigma_max = 80.0
    s.rho = 7.0
    s.s_churn = 0.0
    s.s_min = 0.0
    s.s_max = float("inf")
    s.s_noise = 1.0

    config.optim.learning_rate = 2e-3
    config.optim.schedule = "cosine"
    config.optim.warmup_steps = 100
    config.train.num_steps = 4000
    config.train.log_every = 100
    config.train.eval_every = 0
    config.train.checkpoint_every = 1000
    config.train.ema_decay = 0.999
    config.eval.num_samples = 2000
    if opts.smoke:
        smoke(config, **_SMOKE)
    return config


_SMOKE = {"model.hidden": 16, "model.depth": 1, "sampler.num_steps": 2, "data.num_train": 512,
          "data.num_eval": 256}
