"""DifferNet (Rudolph et al., 2021) on the offline defect benchmark's ``brick`` category
(gen_jax/anomaly/feature_flow.py): a normalizing flow on a vector of frozen
FID-Inception features, average-pooled over locations, of each layer at several input
sizes (multi-scale), trained on random rotations / reflections of good 64x64 grayscale
crops; image score: the mean NLL over the 8 rotations / reflections. Image level only
(no anomaly map: the evaluation reports image AUROC alone). ``:category=grass`` /
``gravel`` picks another category. Evaluate with
``python -m gen_jax.anomaly.evaluate --workdir=RUN``. ``:digits`` trains on scikit-learn's
8x8 digits instead, for the one-class protocol (with ``data.classes=(k,)``;
experiments/results/anomaly_digits/), at one input size, 75 px (Inception's smallest): each
size is a 9x or larger blow-up of the same 64 pixels, and the three sizes cost 6.5x the
time of a train step (1.18 s against 0.18 s per 16 digits on the 2-core CPU, measured).

The paper: AlexNet features of 448 / 224 / 112 px images (3 x 256 pooled channels), 8
coupling blocks with fully connected subnets (hidden 2048), 192 epochs, mean over 64
transformed copies. Here: Inception's Mixed_5d and Mixed_6e at 128 / 96 / 75 px, a
random 64 channels of each (3 x 2 x 64 = 384 dimensions), 8 couplings of 256 hidden
units, 300 steps of 16 crops.
"""

import ml_collections

from gen_jax.config import parse_arg
from gen_jax.defaults import get_config as default_config
from gen_jax.defaults import smoke


def get_config(arg=None):
    opts = parse_arg(arg, smoke=False, category="brick", digits=False)
    config = default_config()
    config.method = "differnet"
    config.data.name = f"defects:{opts.category}"
    config.data.image_size = 256        # the texture is resized to this side
    config.data.patch_size = 64         # crop side
    config.data.num_train = 2048        # good crops (left half of the image)
    config.data.num_eval = 128          # val: good crops of the top right quarter
    config.data.batch_size = 16
    config.data.eval_batch_size = 64

    config.features = ml_collections.ConfigDict()
    config.features.network = "inception"   # "inception" (FID weights, frozen) | "tiny" (tests)
    config.features.layers = ("Mixed_5d", "Mixed_6e")
    config.features.input_size = 128    # the size the kept channels are drawn at (any works)
    config.features.num_channels = 64   # random subset of each layer's channels; 0 = all

    config.differnet = ml_collections.ConfigDict()
    config.differnet.input_sizes = (128, 96, 75)  # the multi-scale input (Inception needs >= 75)

    config.model.steps_per_level = 8    # affine couplings (after one actnorm)
    config.model.hidden = 256           # coupling MLP width

    config.optim.learning_rate = 1e-3
    config.optim.schedule = "cosine"
    config.optim.warmup_steps = 20
    config.optim.grad_clip = 1.0
    config.optim.weight_decay = 1e-5
    config.optim.name = "adamw"
    config.train.num_steps = 300
    config.train.log_every = 50
    config.train.eval_every = 150
    config.train.checkpoint_every = 150
    config.train.num_grid_samples = 16
    config.eval.sample_metrics = False  # not a generative model: no sample-quality metrics
    if opts.digits:  # one-class digits (with data.classes=(k,)): 8x8 images
        config.data.name = "digits"
        config.differnet.input_sizes = (75,)  # one scale, Inception's smallest (module doc)
        config.train.num_steps = 600
    if opts.smoke:
        smoke(config, **_SMOKE)
    return config


# 16 px crops of a 64 px texture, the tiny random stand-in network at two sizes, a 2-step flow.
_SMOKE = {"data.image_size": 64, "data.patch_size": 16, "data.num_train": 64, "data.num_eval": 16,
          "features.network": "tiny", "features.layers": ("conv1", "conv2"), "features.input_size": 16,
          "differnet.input_sizes": (16, 24), "model.steps_per_level": 2, "model.hidden": 8}
