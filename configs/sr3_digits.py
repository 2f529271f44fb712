"""SR3 super-resolution (Saharia et al., 2021) on scikit-learn's 8x8 digits: 4x4 -> 8x8.

The low-resolution input is the 8x8 digit average-pooled by 2 (pix2pix's "lowres" task),
upsampled bicubic to 8x8 and concatenated to the noisy image's channels of the digits
DDPM's small UNet (widths 32/64, attention at 4x4); L_simple with ε-prediction, the linear
schedule with T = 1000, 2000 steps; samples by DPM-Solver++(2M), 25 steps. ``--mode=eval``
reports PSNR/SSIM of the super-resolved test split against the true digits, beside the
bicubic and nearest upsampling baselines (experiments/sr3_digits.py: pix2pix and a cascade).
"""

import ml_collections

from gen_jax.config import parse_arg
from gen_jax.defaults import digits_unet_config, smoke


def get_config(arg=None):
    opts = parse_arg(arg, smoke=False)
    config = digits_unet_config("sr3")

    m = config.model
    m.lowres_factor = 2           # 8x8 -> 4x4 by average pooling
    m.upsample = "bicubic"        # "bicubic" | "nearest": how the 4x4 input is brought to 8x8
    m.schedule = "linear"
    m.num_timesteps = 1000
    m.pred = "eps"                # "eps" | "x0" | "v"
    m.variance = "beta_tilde"     # "beta" | "beta_tilde" (the ancestral sampler's σ_t²)

    config.sampler = ml_collections.ConfigDict()
    s = config.sampler
    s.name = "dpm_solver++"     # "ddpm" | "ddim" | "dpm_solver" | "dpm_solver++"
    s.num_steps = 25              # 0 = T for ddpm, 20 otherwise
    s.spacing = ""                # "" = the sampler's default
    s.eta = 0.0
    s.order = 2
    s.clip_x0 = True

    if opts.smoke:
        smoke(config, **_SMOKE)
    return config


# As configs/ddpm_digits.py's smoke variant: one resolution level, T = 50, 3 sampler steps.
_SMOKE = {"model.ch": 8, "model.groups": 4, "model.ch_mult": (1,), "model.attn_resolutions": (),
          "model.num_timesteps": 50, "sampler.num_steps": 3}
