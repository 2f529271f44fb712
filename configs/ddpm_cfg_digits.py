"""Class-conditional DDPM on digits with classifier-free guidance (Ho & Salimans, 2021).

configs/ddpm_digits.py plus a label embedding (label 10 = "no label"), labels
dropped with probability 0.2 during training, and guidance w = 2 at sampling:
ε = ε_c + w (ε_c - ε_∅). Sample grids cycle through the classes 0..9.
"""

from gen_jax.config import config_module, parse_arg
from gen_jax.defaults import smoke

ddpm_digits = config_module("ddpm_digits", __file__)


def get_config(arg=None):
    opts = parse_arg(arg, smoke=False)
    config = ddpm_digits.get_config()
    config.model.num_classes = 10
    config.model.cfg_dropout = 0.2
    config.sampler.guidance = 2.0
    if opts.smoke:
        smoke(config, **_SMOKE)
    return config


# A tiny MLP denoiser: the smoke test checks labels, label dropout and guided
# sampling through the runtime; the UNet is exercised by ddpm_digits' smoke test.
_SMOKE = {"model.arch": "mlp", "model.hidden": 16, "model.depth": 1,
          "model.num_timesteps": 50, "sampler.num_steps": 3}
