"""MLP VAE on the 2-D two-moons data: samples as a scatter plot, density heat map."""

from gen_jax.config import config_module, parse_arg
from gen_jax.defaults import smoke

vae_digits = config_module("vae_digits", __file__)


def get_config(arg=None):
    opts = parse_arg(arg, smoke=False)
    config = vae_digits.get_config()
    config.data.name = "moons"
    config.data.dequantize = "none"  # continuous data: nothing to dequantize
    config.data.batch_size = 256

    config.model.arch = "mlp"
    config.model.latent_dim = 2
    config.model.hidden_sizes = (128, 128)

    config.optim.learning_rate = 1e-3
    config.optim.schedule = "constant"
    config.optim.warmup_steps = 0
    config.train.num_steps = 5000
    config.train.eval_every = 1000
    config.train.checkpoint_every = 1000
    config.eval.log_prob_samples = 100
    if opts.smoke:
        smoke(config)
    return config
