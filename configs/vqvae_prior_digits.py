"""Class-conditional Gated PixelCNN prior over the 4x4 code maps of a trained
VQ-VAE on digits (configs/vqvae_digits.py): the VQ-VAE's generative model.

Train the VQ-VAE first:
  python -m gen_jax --config=configs/vqvae_digits.py --workdir=runs/vqvae_digits
then this config (``--config.model.vqvae_workdir`` points elsewhere).
Samples draw a code map position by position and decode it.
"""

from gen_jax.config import parse_arg
from gen_jax.defaults import get_config as default_config
from gen_jax.defaults import smoke


def get_config(arg=None):
    """Variants: ``smoke`` (a tiny prior; point ``model.vqvae_workdir`` at a VQ-VAE
    trained with ``configs/vqvae_digits.py:smoke``)."""
    opts = parse_arg(arg, smoke=False)
    config = default_config()
    config.method = "vqvae_prior"
    config.data.name = "digits"
    config.data.dequantize = "none"
    config.data.value_range = (-1.0, 1.0)  # must match the VQ-VAE's data
    config.data.batch_size = 64

    config.model.vqvae_workdir = "runs/vqvae_digits"
    config.model.arch = "gated"        # "gated" | "pixelcnn"
    config.model.features = 32
    config.model.num_layers = 2
    config.model.first_kernel = 3      # the code map is 4x4
    config.model.kernel = 3
    config.model.head_features = 64
    config.model.conditional = True

    config.optim.learning_rate = 1e-3
    config.optim.schedule = "cosine"
    config.optim.warmup_steps = 50
    config.train.num_steps = 400  # 1257 images x 16 codes: a bigger or longer prior overfits
    config.train.log_every = 100
    config.train.eval_every = 100
    config.train.checkpoint_every = 200
    config.train.num_grid_samples = 60
    if opts.smoke:
        smoke(config, **{"model.features": 8, "model.num_layers": 1, "model.head_features": 8})
    return config
