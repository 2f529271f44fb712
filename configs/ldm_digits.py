"""Latent diffusion (Rombach et al., 2022) on digits: a class-conditional DDPM over the
8-dim latents (encoder means) of the conv VAE of configs/vae_digits.py, the label
entering through cross-attention, classifier-free guidance at sampling.

Train the VAE first:
  python -m gen_jax --config=configs/vae_digits.py --workdir=runs/vae_digits
then this config (``--config.model.ae_workdir`` points elsewhere; a "vqvae" workdir
works too, with data.* set as its config: the latent is then its pre-quantization map).
The data section must be the autoencoder's (digits in [0, 1], uniformly dequantized).
Samples are the VAE decoder's means of the sampled latents.
"""

import ml_collections

from gen_jax.config import parse_arg
from gen_jax.defaults import get_config as default_config
from gen_jax.defaults import smoke


def get_config(arg=None):
    """Variants: ``smoke`` (a tiny denoiser; point ``model.ae_workdir`` at a VAE
    trained with ``configs/vae_digits.py:smoke``)."""
    opts = parse_arg(arg, smoke=False)
    config = default_config()
    config.method = "ldm"
    config.data.name = "digits"
    config.data.dequantize = "uniform"   # as configs/vae_digits.py: must match the autoencoder
    config.data.value_range = (0.0, 1.0)
    config.data.batch_size = 128

    m = config.model
    m.ae_workdir = "runs/vae_digits"
    # The cross-attention denoiser over the latent.
    m.hidden = 256
    m.depth = 3
    m.heads = 4
    m.context_tokens = 4       # label -> 4 context tokens of width context_dim
    m.context_dim = 64
    m.dropout = 0.0
    # The DDPM over the scaled latents (gen_jax/diffusion/ddpm.py's keys).
    m.schedule = "linear"
    m.num_timesteps = 1000
    m.pred = "eps"             # "eps" | "x0" | "v"
    m.variance = "beta_tilde"  # "beta" | "beta_tilde" | "learned"
    m.loss = "simple"          # "simple" | "hybrid" | "vlb"
    m.vlb_weight = 0.001
    m.timestep_sampler = "uniform"
    m.num_classes = 10         # 0 = unconditional; label 10 = the null context
    m.cfg_dropout = 0.1

    config.sampler = ml_collections.ConfigDict()
    s = config.sampler
    s.name = "dpm_solver++"  # as configs/ddpm_digits.py
    s.num_steps = 25
    s.spacing = ""
    s.eta = 0.0
    s.order = 2
    s.guidance = 1.0           # w of eps_c + w (eps_c - eps_null); the best digits-FD of 0-3 in a pilot
    s.clip_x0 = True           # pixels only: latents are never clipped

    config.optim.learning_rate = 1e-3
    config.optim.schedule = "cosine"
    config.optim.warmup_steps = 200
    config.optim.grad_clip = 1.0
    # 8800 steps: with the VAE's 2000 steps, the training FLOPs of configs/ddpm_digits.py's
    # 2000 steps (XLA cost analysis; experiments/results/ldm_digits/results.md).
    config.train.num_steps = 8800
    config.train.log_every = 200
    config.train.eval_every = 2200
    config.train.checkpoint_every = 2200
    config.train.ema_decay = 0.999
    config.eval.num_samples = 1000
    if opts.smoke:
        smoke(config, **_SMOKE)
    return config


_SMOKE = {"model.hidden": 16, "model.depth": 1, "model.heads": 2, "model.context_tokens": 2,
          "model.context_dim": 8, "model.num_timesteps": 50, "sampler.num_steps": 3}
