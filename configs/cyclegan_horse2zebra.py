"""CycleGAN on tfds cycle_gan/horse2zebra (read from disk; prepare with
``tfds build cycle_gan/horse2zebra --file_format=array_record --data_dir=DIR``): the
256x256 images are average-pooled to 64x64, domains from the labels (0 = horse, 1 = zebra).
Other pairs: --config.data.name=tfds:cycle_gan/apple2orange or
tfds:cycle_gan/summer2winter_yosemite."""

from gen_jax.config import config_module, parse_arg
from gen_jax.defaults import smoke

cyclegan_digits = config_module("cyclegan_digits", __file__)


def get_config(arg=None):
    opts = parse_arg(arg, smoke=False)
    config = cyclegan_digits.get_config()
    config.data.name = "tfds:cycle_gan/horse2zebra"
    config.data.value_range = (-1.0, 1.0)
    config.data.batch_size = 8
    config.data.eval_batch_size = 32
    config.data.val_fraction = 0.05
    m = config.model
    m.task = "labels"
    m.downsample = 4
    m.g_channels = (64, 128, 256, 256)
    m.d_channels = (64, 128, 256)
    config.train.num_steps = 50000
    config.train.eval_every = 5000
    config.train.checkpoint_every = 5000
    config.train.num_grid_samples = 16
    config.eval.max_batches = 4
    if opts.smoke:
        smoke(config, **_SMOKE)
    return config


_SMOKE = {"model.downsample": 16, "model.g_channels": (4, 4), "model.d_channels": (4, 4),
          "data.eval_batch_size": 16}
