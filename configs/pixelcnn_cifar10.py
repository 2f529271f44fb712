"""PixelCNN on CIFAR-10 (tensorflow-datasets, read from disk; see README) with a
mixture of discretized logistics per subpixel and R -> G -> B channel masking.

Exact bits/dim of the 256-level RGB images. Prepare once on a machine with
internet and TensorFlow: ``tfds build cifar10 --file_format=array_record
--data_dir=DIR``, then pass ``--config.data.data_dir=DIR``. Made for a GPU.
"""

from gen_jax.config import config_module, parse_arg
from gen_jax.defaults import smoke

pixelcnn_digits = config_module("pixelcnn_digits", __file__)


def get_config(arg=None):
    opts = parse_arg(arg, smoke=False)
    config = pixelcnn_digits.get_config()
    config.data.name = "tfds:cifar10"
    config.data.batch_size = 64
    config.data.eval_batch_size = 64
    config.model.features = 96       # a multiple of 3: features split into R, G, B groups
    config.model.num_layers = 12
    config.model.first_kernel = 7
    config.model.head_features = 192
    config.model.head = "logistic_mixture"
    config.model.num_mixtures = 5
    config.optim.learning_rate = 1e-3
    config.optim.warmup_steps = 1000
    config.optim.grad_clip = 1.0
    config.train.num_steps = 100_000
    config.train.eval_every = 5000
    config.train.checkpoint_every = 5000
    config.train.num_grid_samples = 16
    config.eval.max_batches = 10
    config.eval.num_samples = 64
    if opts.smoke:
        smoke(config, **_SMOKE)
    return config


# The 3-step smoke test runs a tiny model (and 4 32x32 samples: 3072 network passes).
_SMOKE = {"model.features": 6, "model.num_layers": 1, "model.head_features": 6,
          "model.first_kernel": 3, "model.num_mixtures": 2}
