"""DDPM on scikit-learn's 8x8 digits: the diffusion family's default job (a few minutes on CPU).

A small UNet (widths 32/64, attention at 4x4) on the 17-level pixels scaled to
(-1, 1), L_simple with ε-prediction, the linear schedule with T = 1000. Sample
grids use DPM-Solver++(2M) with 25 steps; ``log_prob`` is the full variational
bound with a discretized decoder over the 17 levels (bits/dim of the discrete
data; the uniform model is 4.09).
"""

import ml_collections

from gen_jax.config import parse_arg
from gen_jax.defaults import digits_unet_config, smoke


def get_config(arg=None):
    opts = parse_arg(arg, smoke=False)
    config = digits_unet_config("ddpm")

    m = config.model
    m.schedule = "linear"
    m.num_timesteps = 1000
    m.pred = "eps"                # "eps" | "x0" | "v"
    m.variance = "beta_tilde"     # "beta" | "beta_tilde" | "learned"
    m.loss = "simple"             # "simple" | "hybrid" | "vlb"
    m.vlb_weight = 0.001          # λ of the hybrid loss
    m.timestep_sampler = "uniform"  # "uniform" | "importance"
    m.num_classes = 0             # > 0: class-conditional, label num_classes = null
    m.cfg_dropout = 0.0

    config.sampler = ml_collections.ConfigDict()
    s = config.sampler
    s.name = "dpm_solver++"     # "ddpm" | "ddim" | "dpm_solver" | "dpm_solver++"
    s.num_steps = 25              # 0 = T for ddpm, 20 otherwise
    s.spacing = ""                # "" = the sampler's default
    s.eta = 0.0
    s.order = 2
    s.guidance = 0.0
    s.clip_x0 = True

    if opts.smoke:
        smoke(config, **_SMOKE)
    return config


# The smallest UNet: one resolution level, its residual blocks and the middle attention
# (the down/up path at full size is traced by tests/diffusion's CIFAR-10 UNet test; each
# level compiled here costs ~6 s of the smoke test).
_SMOKE = {"model.ch": 8, "model.groups": 4, "model.ch_mult": (1,), "model.attn_resolutions": (),
          "model.num_timesteps": 50, "sampler.num_steps": 3}
