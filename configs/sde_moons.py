"""Score SDE (VP) on the 2-D moons: denoising score matching over continuous t,
sampled by the probability-flow ODE with adaptive RK45, exact likelihoods through
the same ODE (the Jacobian trace is exact in 2-D). Song et al. (2021)."""

import ml_collections

from gen_jax.config import parse_arg
from gen_jax.defaults import get_config as default_config
from gen_jax.defaults import smoke


def get_config(arg=None):
    opts = parse_arg(arg, smoke=False)
    config = default_config()
    config.method = "score_sde"
    config.data.name = "moons"
    config.data.batch_size = 256
    m = config.model
    m.arch = "mlp"
    m.hidden = 128
    m.depth = 3
    m.dropout = 0.0
    m.sde = "vp"                  # "vp" | "subvp" | "ve"
    m.beta_min = 0.1
    m.beta_max = 20.0
    m.sigma_min = 0.01            # VE only
    m.sigma_max = 10.0
    m.t_eps = 1e-3

    config.sampler = ml_collections.ConfigDict()
    s = config.sampler
    s.name = "ode"              # "euler_maruyama" | "pc" | "ode"
    s.num_steps = 200             # SDE steps, or fixed-step ODE steps
    s.ode_solver = "rk45"         # "rk4" | "heun" | "rk45"
    s.rtol = 1e-4
    s.atol = 1e-4
    s.snr = 0.16
    s.corrector_steps = 1
    s.divergence = "exact"        # "rademacher" | "gaussian" | "exact"

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


_SMOKE = {"model.hidden": 16, "model.depth": 1, "sampler.ode_solver": "rk4",
          "sampler.num_steps": 2, "data.num_train": 512, "data.num_eval": 256}
