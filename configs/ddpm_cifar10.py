"""DDPM on CIFAR-10 with the paper's settings (Ho et al., 2020, App. B).

The 35.7M-parameter UNet (ch 128, multipliers (1, 2, 2, 2), two residual blocks
per level, attention at 16x16, dropout 0.1), linear β from 1e-4 to 0.02 over
T = 1000, L_simple, Adam 2e-4 with 5000 warm-up steps, gradient clipping at 1,
batch 128, EMA 0.9999, 800k steps. (The paper also used random horizontal flips,
which the data pipeline does not do.) Read from disk via tfds; see README.
"""

from gen_jax.config import config_module, parse_arg
from gen_jax.defaults import smoke

ddpm_digits = config_module("ddpm_digits", __file__)


def get_config(arg=None):
    opts = parse_arg(arg, smoke=False)
    config = ddpm_digits.get_config()
    config.data.name = "tfds:cifar10"
    config.data.batch_size = 128
    m = config.model
    m.ch = 128
    m.ch_mult = (1, 2, 2, 2)      # 32 -> 16 -> 8 -> 4
    m.num_res_blocks = 2
    m.attn_resolutions = (16,)
    m.dropout = 0.1
    config.sampler.num_steps = 20
    config.optim.learning_rate = 2e-4
    config.optim.schedule = "constant"
    config.optim.warmup_steps = 5000
    config.optim.grad_clip = 1.0
    config.train.num_steps = 800_000
    config.train.log_every = 100
    config.train.eval_every = 10_000
    config.train.checkpoint_every = 10_000
    config.train.ema_decay = 0.9999
    config.eval.max_batches = 10
    config.eval.num_samples = 1000
    if opts.smoke:
        smoke(config, **_SMOKE)
    return config


# The smoke test checks the config and the tfds path, not the UNet (tests/diffusion
# covers it and its parameter count): a tiny MLP denoiser keeps it to seconds.
_SMOKE = {"model.arch": "mlp", "model.hidden": 16, "model.depth": 1,
          "model.num_timesteps": 50, "sampler.num_steps": 3}
