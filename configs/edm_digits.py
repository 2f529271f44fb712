"""EDM (Karras et al., 2022) on scikit-learn's 8x8 digits: the ddpm_digits UNet
under EDM's preconditioning, log-normal σ training, and the deterministic Heun
sampler on the ρ = 7 schedule (18 steps, 35 network calls).

The 17-level pixels are scaled to (-1, 1), where EDM's σ_data = 0.5 is the paper's
choice for images (the digits' pixel standard deviation is 0.75 there).
"""

import ml_collections

from gen_jax.config import parse_arg
from gen_jax.defaults import digits_unet_config, smoke


def get_config(arg=None):
    opts = parse_arg(arg, smoke=False)
    config = digits_unet_config("edm")

    m = config.model
    m.sigma_data = 0.5
    m.p_mean = -1.2               # ln σ ~ N(P_mean, P_std²) in training
    m.p_std = 1.2

    config.sampler = ml_collections.ConfigDict()
    s = config.sampler
    s.name = "heun"             # "heun" | "euler" | "stochastic"
    s.num_steps = 18              # N; Heun makes 2N - 1 network calls
    s.sigma_min = 0.002
    s.sigma_max = 80.0
    s.rho = 7.0
    s.s_churn = 0.0               # "stochastic" only (Alg. 2)
    s.s_min = 0.0
    s.s_max = float("inf")
    s.s_noise = 1.0

    if opts.smoke:
        smoke(config, **_SMOKE)
    return config


# The smoke run takes the MLP (the UNet path is the ddpm_digits smoke's network: a UNet
# train step alone compiles for longer than the smoke budget of ~6 s).
_SMOKE = {"model.arch": "mlp", "model.hidden": 16, "model.depth": 1, "sampler.num_steps": 2}
