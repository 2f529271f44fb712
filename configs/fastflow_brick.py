"""FastFlow (Yu et al., 2021) on the offline defect benchmark's ``brick`` category
(gen_jax/anomaly/benchmark.py): a 2-D normalizing flow on frozen FID-Inception feature
maps of good 64x64 grayscale crops (gen_jax/anomaly/feature_flow.py).
``:category=grass`` / ``gravel`` picks another category. Evaluate with
``python -m gen_jax.anomaly.evaluate --workdir=RUN``.

The paper: ResNet18 / WideResNet50 / CaiT features of 256 px MVTec images, 8 flow
steps per layer, Adam 1e-3, 500 epochs. Here: Inception's Conv2d_4a_3x3 (192 channels
at stride 4: a 28x28 map) on the crop resized to 128 px, a random 64 of its channels, 8
coupling steps of 32 hidden channels, 300 steps of 16 crops after the fit of the
per-location normalisation on the whole split: about 700 CPU-s in all (measured on grass,
experiments/results/anomaly_flows/README.md). The anomaly map is the official code's
-exp(-0.5 mean z^2) per location (``fastflow.map="nll"``: the full per-location NLL).
``:digits`` trains on scikit-learn's 8x8 digits instead, resized to 75 px (the smallest
input Inception takes: a 15x15 map), for the one-class protocol (with ``data.classes=(k,)``;
experiments/results/anomaly_digits/).
"""

import ml_collections

from gen_jax.config import parse_arg
from gen_jax.defaults import get_config as default_config
from gen_jax.defaults import smoke


def get_config(arg=None):
    opts = parse_arg(arg, smoke=False, category="brick", digits=False)
    config = default_config()
    config.method = "fastflow"
    config.data.name = f"defects:{opts.category}"
    config.data.image_size = 256        # the texture is resized to this side
    config.data.patch_size = 64         # crop side
    config.data.num_train = 2048        # good crops (left half of the image)
    config.data.num_eval = 128          # val: good crops of the top right quarter
    config.data.batch_size = 16
    config.data.eval_batch_size = 64

    config.features = ml_collections.ConfigDict()
    config.features.network = "inception"   # "inception" (FID weights, frozen) | "tiny" (tests)
    config.features.layers = ("Conv2d_4a_3x3",)
    config.features.input_size = 128    # crops are resized to this side before the network
    config.features.num_channels = 64   # random subset of each layer's channels; 0 = all

    config.model.steps_per_level = 8    # flow steps per feature layer (3x3 / 1x1 subnets alternating)
    config.model.hidden = 32            # subnet channels

    config.fastflow = ml_collections.ConfigDict()
    config.fastflow.position_frequencies = 4  # sinusoidal position condition (16 channels); 0 = none
    config.fastflow.map = "prob"        # anomaly map: "prob" (-exp(-mean z^2 / 2), official code) | "nll"

    config.optim.learning_rate = 1e-3
    config.optim.schedule = "cosine"
    config.optim.warmup_steps = 20
    config.optim.grad_clip = 1.0
    config.train.num_steps = 300
    config.train.log_every = 50
    config.train.eval_every = 150
    config.train.checkpoint_every = 150
    config.train.num_grid_samples = 16
    config.eval.sample_metrics = False  # not a generative model: no sample-quality metrics
    if opts.digits:  # one-class digits (with data.classes=(k,)): 8x8 images
        config.data.name = "digits"
        config.features.input_size = 75  # Inception's smallest input (9.4 px per digit pixel)
        config.train.num_steps = 600
    if opts.smoke:
        smoke(config, **_SMOKE)
    return config


# 16 px crops of a 64 px texture, the tiny random stand-in network, a 2-step flow.
_SMOKE = {"data.image_size": 64, "data.patch_size": 16, "data.num_train": 64, "data.num_eval": 16,
          "features.network": "tiny", "features.layers": ("conv1",), "features.input_size": 16,
          "features.num_channels": 4, "model.steps_per_level": 2, "model.hidden": 8,
          "fastflow.position_frequencies": 1}
