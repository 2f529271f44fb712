"""Flow matching / rectified flow on the 2-D moons: a residual MLP velocity field,
Heun sampling, and exact likelihoods through the ODE (the Jacobian trace is exact
in 2-D) with adaptive RK45."""

import ml_collections

from gen_jax.config import parse_arg
from gen_jax.defaults import get_config as default_config
from gen_jax.defaults import smoke


def get_config(arg=None):
    opts = parse_arg(arg, smoke=False)
    config = default_config()
    config.method = "flow_matching"
    config.data.name = "moons"
    config.data.batch_size = 256
    m = config.model
    m.arch = "mlp"
    m.hidden = 128
    m.depth = 3
    m.dropout = 0.0

    config.sampler = ml_collections.ConfigDict()
    s = config.sampler
    s.name = "heun"             # "euler" | "heun" | "rk45"
    s.num_steps = 20
    s.rtol = 1e-4
    s.atol = 1e-4
    s.log_prob_solver = "rk45"    # "heun" | "rk4" | "rk45"
    s.divergence = "exact"        # "exact" | "rademacher" | "gaussian"

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


_SMOKE = {"model.hidden": 16, "model.depth": 1, "sampler.num_steps": 2, "sampler.log_prob_solver": "heun",
          "data.num_train": 512, "data.num_eval": 256}
