"""PixelCNN on scikit-learn's 8x8 digits: exact bits/dim of the 17-level images.

The data stay discrete (``data.dequantize='none'``) and the model is a 17-way
softmax per pixel, so the test log-likelihood is exact (the uniform model is
log2(17) = 4.09 bits/dim). A few minutes on CPU.
"""

from gen_jax.config import parse_arg
from gen_jax.defaults import get_config as default_config
from gen_jax.defaults import smoke


def get_config(arg=None):
    opts = parse_arg(arg, smoke=False)
    config = default_config()
    config.method = "pixelcnn"
    config.data.name = "digits"
    config.data.dequantize = "none"
    config.data.batch_size = 64

    config.model.features = 32        # residual width (2x between blocks)
    config.model.num_layers = 4       # residual blocks
    config.model.first_kernel = 5     # mask-A layer (7 in the paper; images are 8x8 here)
    config.model.kernel = 3
    config.model.head_features = 64
    config.model.head = "categorical"  # "categorical" | "logistic_mixture"
    config.model.num_mixtures = 5
    config.model.conditional = False

    config.optim.learning_rate = 2e-3
    config.optim.schedule = "cosine"
    config.optim.warmup_steps = 100
    config.train.num_steps = 1000
    config.train.log_every = 100
    config.train.eval_every = 250
    config.train.checkpoint_every = 500
    config.eval.num_samples = 256
    if opts.smoke:
        smoke(config, **_SMOKE)
    return config


# The 3-step smoke test (tests/test_configs.py) runs a tiny model.
_SMOKE = {"model.features": 4, "model.num_layers": 1, "model.head_features": 4,
          "model.first_kernel": 3}
