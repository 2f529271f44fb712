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
from gen_jax.defaults import digits_unet_config, smoke


def get_config(arg=None):
    opts = parse_arg(arg, smoke=False)
    config = digits_unet_config("flow_matching")
    config.data.dequantize = "uniform"

    config.sampler = ml_collections.ConfigDict()
    s = config.sampler
    s.name = "heun"             # "euler" | "heun" | "rk45"
    s.num_steps = 20              # fixed-step solvers (and fixed-step log_prob)
    s.rtol = 1e-4                 # rk45
    s.atol = 1e-4
    s.log_prob_solver = "rk45"    # "heun" | "rk4" | "rk45"
    s.divergence = "rademacher"   # "exact" | "rademacher" | "gaussian"

    if opts.smoke:
        smoke(config, **_SMOKE)
    return config


# The smoke run takes the MLP (the UNet path is the ddpm_digits smoke's network: a UNet
# train step alone compiles for longer than the smoke budget of ~6 s).
_SMOKE = {"model.arch": "mlp", "model.hidden": 16, "model.depth": 1, "sampler.num_steps": 2,
          "sampler.log_prob_solver": "heun"}
