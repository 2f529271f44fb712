"""Class-conditional DDPM on digits with classifier-free guidance (Ho & Salimans, 2021).

configs/ddpm_digits.py plus a label embedding (label 10 = "no label"), labels
dropped with probability 0.2 during training, and guidance w = 2 at sampling:
ε = ε_c + w (ε_c - ε_∅). Sample grids cycle through the classes 0..9.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
import ddpm_digits  # noqa: E402


def get_config():
    config = ddpm_digits.get_config()
    config.model.num_classes = 10
    config.model.cfg_dropout = 0.2
    config.sampler.guidance = 2.0
    return config


# A tiny MLP denoiser: the smoke test checks labels, label dropout and guided
# sampling through the runtime; the UNet is exercised by ddpm_digits' smoke test.
TEST_OVERRIDES = {"model.arch": "mlp", "model.hidden": 16, "model.depth": 1,
                  "model.num_timesteps": 50, "sampler.num_steps": 3}
