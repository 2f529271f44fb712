"""Deterministic conv autoencoder on scikit-learn's 8x8 digits (MSE on [0, 1] pixels).

Samples decode codes drawn from a Gaussian fitted to the training codes
(gen_jax/autoencoders/ae.py). dae_digits.py and sae_digits.py derive from it.
"""

from gen_jax.config import parse_arg
from gen_jax.defaults import get_config as default_config
from gen_jax.defaults import smoke


def get_config(arg=None):
    opts = parse_arg(arg, smoke=False)
    config = default_config()
    config.method = "ae"
    config.data.name = "digits"
    config.data.batch_size = 128

    config.model.arch = "conv"          # "conv" | "mlp"
    config.model.latent_dim = 8
    config.model.channels = (16, 32)    # 8 -> 4 -> 2
    config.model.hidden_sizes = (128,)
    config.model.upsample = "pixel_shuffle"
    config.model.activation = "silu"
    config.model.code_activation = "none"  # "none" | "sigmoid" | "relu" | "tanh"
    # Denoising ("dae"): corruption of the input.
    config.model.noise = "none"         # "none" | "gaussian" | "masking" | "block"
    config.model.noise_std = 0.3        # "gaussian"
    config.model.mask_prob = 0.25       # "masking": each pixel hidden with this probability
    config.model.block_size = 3         # "block": side of the hidden square
    # Sparse ("sae"): penalty on the codes.
    config.model.sparsity = "none"      # "none" | "l1" | "kl"
    config.model.sparsity_weight = 0.0
    config.model.sparsity_target = 0.05  # "kl": desired mean activation rho
    # Running moments of the codes, for sampling.
    config.model.code_stats_decay = 0.99

    config.optim.learning_rate = 2e-3
    config.optim.schedule = "cosine"
    config.optim.warmup_steps = 100
    config.train.num_steps = 2000
    config.train.log_every = 50
    config.train.eval_every = 500
    config.train.checkpoint_every = 500
    if opts.smoke:
        smoke(config)
    return config
