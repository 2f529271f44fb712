"""Class-conditional Gated PixelCNN on MNIST (tensorflow-datasets, read from disk)
with a 256-way softmax per pixel: exact bits/dim of the 256-level images.

Prepare once on a machine with internet and TensorFlow: ``tfds build mnist
--file_format=array_record --data_dir=DIR``, then pass ``--config.data.data_dir=DIR``.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
import gated_pixelcnn_digits  # noqa: E402


def get_config():
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
    return config


TEST_OVERRIDES = {"model.features": 4, "model.num_layers": 1, "model.head_features": 4,
                  "model.first_kernel": 3}
