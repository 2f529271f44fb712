"""Class-conditional Gated PixelCNN on scikit-learn's 8x8 digits (exact bits/dim).

The label enters every gated layer as a learned bias; sample grids cycle
through the classes 0..9. ``log_prob`` without labels is the exact marginal
log (1/10) sum_y p(x | y) (what --mode=eval reports); ``eval_step``'s loss is
the conditional NLL given the true label.
"""

from gen_jax.config import config_module, parse_arg
from gen_jax.defaults import smoke

pixelcnn_digits = config_module("pixelcnn_digits", __file__)


def get_config(arg=None):
    opts = parse_arg(arg, smoke=False)
    config = pixelcnn_digits.get_config()
    config.method = "gated_pixelcnn"
    config.model.features = 32        # width of the vertical and horizontal stacks
    config.model.num_layers = 5       # gated layers
    config.model.first_kernel = 5
    config.model.conditional = True
    config.train.num_grid_samples = 60  # six of each class
    if opts.smoke:
        smoke(config, **_SMOKE)
    return config


# The 3-step smoke test (tests/test_configs.py) runs a tiny model.
_SMOKE = {"model.features": 4, "model.num_layers": 1, "model.head_features": 4,
          "model.first_kernel": 3}
