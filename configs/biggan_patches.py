"""BigGAN (Brock et al., 2019) on the labelled ``patches`` source: 32x32 RGB crops of ten
bundled images (three textures, seven photos), the class being the source image.

The official code's 32x32 (CIFAR) layout, narrower for CPU: G 4 -> 8 -> 16 -> 32 with
three residual up-blocks, D four residual blocks (32 -> 16 -> 8, then two at 8x8);
hierarchical latents (z of 96 split into 4 chunks of 24), a shared class embedding of
32, spectral norm in G and D, orthogonal regularization 1e-4, hinge loss with two D
steps per G step (the ImageNet setting; CIFAR's is four), Adam(2e-4, b1=0, b2=0.999)
for both nets as the official CIFAR script, G EMA 0.995 from G step 600 (CIFAR: 0.9999
from 1000; a time constant of 200 steps suits a short run), standing statistics over 256
draws. Widths 32 (the official CIFAR model: 256) and 1200 steps of batch 32 fit ~20
minutes of the shared, loaded 2-core CPU.
``biggan.truncation`` is the sampler's threshold (0 = off); the fidelity/variety curve
over it is experiments/biggan_truncation.py.
"""

import ml_collections

from gen_jax.config import parse_arg
from gen_jax.defaults import get_config as default_config
from gen_jax.defaults import smoke


def get_config(arg=None):
    opts = parse_arg(arg, smoke=False)
    config = default_config()
    config.method = "biggan"
    config.data.name = "patches"
    config.data.value_range = (-1.0, 1.0)
    config.data.patch_size = 32
    config.data.patch_image_side = 256
    config.data.batch_size = 32
    config.data.eval_batch_size = 100
    config.data.num_eval = 500         # val and test crops (50 per class)

    m = config.model
    m.latent_dim = 96              # hierarchical: len(g_channels) chunks of 24
    m.shared_dim = 32              # the shared class embedding
    m.g_channels = (32, 32, 32, 32)  # 4x4 width, then one up-block per entry: 8, 16, 32
    m.d_channels = (32, 32, 32, 32)
    m.d_downsample = (True, True, False, False)
    m.attention_resolution = 0     # self-attention after the G and D blocks at this size; 0 = none

    config.biggan = ml_collections.ConfigDict()
    b = config.biggan
    b.d_steps = 2                  # D updates per G update, each on its own chunk of the batch
    b.ortho_weight = 1e-4          # beta of the orthogonal regularization
    b.ema_start = 600              # G steps before the EMA starts averaging (a copy until then)
    b.standing_samples = 256       # draws for standing statistics; 0 = the sampled batch's
    b.truncation = 0.0             # sampler's truncation threshold psi; 0 = off

    config.optim.learning_rate = 2e-4
    config.optim.b1 = 0.0
    config.optim.b2 = 0.999
    config.d_optim = ml_collections.ConfigDict(config.optim.to_dict())
    config.train.ema_decay = 0.995
    config.train.num_steps = 1200
    config.train.log_every = 100
    config.train.eval_every = 600
    config.train.checkpoint_every = 300
    config.train.num_grid_samples = 100  # 10 classes x 10
    # FID/KID/precision/recall (Inception, ~0.4 CPU-s an image here): 500 samples against
    # the 500 test crops (held-out regions of the same images).
    config.eval.num_samples = 500
    config.eval.reference_split = "test"
    if opts.smoke:
        smoke(config, **_SMOKE)
    return config


_SMOKE = {"data.patch_size": 8, "data.patch_image_side": 64, "biggan.d_steps": 1,
          "data.num_train": 64, "data.num_eval": 64,
          "model.latent_dim": 6, "model.shared_dim": 4, "model.g_channels": (8, 8),
          "model.d_channels": (8, 8), "model.d_downsample": (True, False),
          "biggan.ema_start": 3, "biggan.standing_samples": 32, "train.num_grid_samples": 10}
