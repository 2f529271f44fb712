"""MLP VAE on the 2-D two-moons data: samples as a scatter plot, density heat map."""

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
import default  # noqa: E402


def get_config():
    config = default.get_config()
    config.method = "vae"
    config.data.name = "moons"
    config.data.batch_size = 256

    config.model.arch = "mlp"
    config.model.latent_dim = 2
    config.model.channels = (32, 64)  # unused by the MLP
    config.model.hidden = (128, 128)
    config.model.decoder = "gaussian"
    config.model.decoder_std = "network"
    config.model.fixed_std = 0.1
    config.model.upsample = "pixel_shuffle"
    config.model.activation = "silu"
    config.model.beta = 1.0

    config.optim.learning_rate = 1e-3
    config.train.num_steps = 5000
    config.train.eval_every = 1000
    config.train.checkpoint_every = 1000
    config.train.ema_decay = 0.999
    config.eval.log_prob_samples = 100
    return config
