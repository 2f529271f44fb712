"""DDPM on MNIST from tensorflow-datasets (read from disk; see README for preparing it).

A DDPM-style UNet sized for 28x28 (widths 64/128/128, attention at 14x14, two
residual blocks per level), linear schedule with T = 1000, L_simple, EMA 0.9999,
Adam 2e-4 with warm-up and gradient clipping as in Ho et al. (2020). ``log_prob``
is the full variational bound in bits/dim of the 256-level images.
"""

from gen_jax.config import config_module, parse_arg
from gen_jax.defaults import smoke

ddpm_digits = config_module("ddpm_digits", __file__)


def get_config(arg=None):
    opts = parse_arg(arg, smoke=False)
    config = ddpm_digits.get_config()
    config.data.name = "tfds:mnist"
    config.data.batch_size = 128
    m = config.model
    m.ch = 64
    m.ch_mult = (1, 2, 2)         # 28 -> 14 -> 7
    m.num_res_blocks = 2
    m.attn_resolutions = (14,)
    m.dropout = 0.1
    config.optim.learning_rate = 2e-4
    config.optim.schedule = "constant"
    config.optim.warmup_steps = 5000
    config.train.num_steps = 100_000
    config.train.eval_every = 5000
    config.train.checkpoint_every = 5000
    config.train.ema_decay = 0.9999
    config.eval.max_batches = 10
    if opts.smoke:
        smoke(config, **_SMOKE)
    return config


# The smoke test checks the config and the tfds path, not the UNet (tests/diffusion
# covers it and its parameter count): a tiny MLP denoiser keeps it to seconds.
_SMOKE = {"model.arch": "mlp", "model.hidden": 16, "model.depth": 1,
          "model.num_timesteps": 50, "sampler.num_steps": 3}
