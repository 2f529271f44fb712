"""Class-conditional Gated PixelCNN on MNIST (tensorflow-datasets, read from disk)
with a 256-way softmax per pixel: exact bits/dim of the 256-level images.

Prepare once on a machine with internet and TensorFlow: ``tfds build mnist
--file_format=array_record --data_dir=DIR``, then pass ``--config.data.data_dir=DIR``.
"""

from gen_jax.config import config_module, parse_arg
from gen_jax.defaults import smoke

gated_pixelcnn_digits = config_module("gated_pixelcnn_digits", __file__)


def get_config(arg=None):
    opts = parse_arg(arg, smoke=False)
    config = gated_pixelcnn_digits.get_config()
    config.data.name = "tfds:mnist"
    config.data.batch_size = 64
    config.data.eval_batch_size = 64
    config.model.features = 64
    config.model.num_layers = 8
    config.model.first_kernel = 7
    config.model.head_features = 256
    config.optim.warmup_steps = 500
    config.train.num_steps = 30_000
    config.train.eval_every = 3000
    config.train.checkpoint_every = 3000
    config.train.num_grid_samples = 20
    config.eval.max_batches = 10
    config.eval.num_samples = 100
    if opts.smoke:
        smoke(config, **_SMOKE)
    return config


_SMOKE = {"model.features": 4, "model.num_layers": 1, "model.head_features": 4,
          "model.first_kernel": 3}
