"""Flow++ with variational dequantization on CIFAR-10 from tensorflow-datasets.

Read from disk (``tfds build cifar10 --file_format=array_record --data_dir=DIR``,
then ``--config.data.data_dir=DIR``). A reduced Flow++ (the paper uses 96
channels, 10 blocks and 32 mixture components): bits/dim of the 256-level
images (variational dequantization bound).
"""

from gen_jax.config import config_module, parse_arg
from gen_jax.defaults import smoke

flowpp_digits = config_module("flowpp_digits", __file__)


def get_config(arg=None):
    opts = parse_arg(arg, smoke=False)
    config = flowpp_digits.get_config()
    config.data.name = "tfds:cifar10"
    config.data.batch_size = 64
    config.model.steps_per_level = 4
    config.model.hidden = 96
    config.model.num_blocks = 4
    config.model.num_components = 16
    config.model.dequant_steps = 4
    config.train.num_steps = 100000
    config.train.eval_every = 5000
    config.train.checkpoint_every = 5000
    config.eval.max_batches = 4
    config.eval.log_prob_samples = 4
    if opts.smoke:
        smoke(config, **_SMOKE)
    return config


# The smoke test drops attention here: configs/flowpp_digits.py's smoke run keeps it.
_SMOKE = {"model.steps_per_level": 1, "model.hidden": 8, "model.num_blocks": 1,
          "model.num_heads": 0, "model.num_components": 2, "model.dequant_steps": 1,
          "eval.log_prob_samples": 1}
