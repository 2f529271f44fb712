"""SR3 super-resolution (Saharia et al., 2021) on the bundled image ``patches``: 16x16 -> 64x64 RGB.

The data are 64x64 RGB crops of the ten bundled images (gen_jax/data/bundled.py: train
crops from each image's left half, val and test from the right quarters), in (-1, 1).
The low-resolution input is the crop average-pooled by 4 (pix2pix's "lowres" degradation,
16x16), upsampled bicubic to 64x64 and concatenated to the noisy image's channels of a
small DDPM UNet for 64 px (widths 32/64/64 at 64/32/16, one residual block per level, no
attention); L_simple with ε-prediction, the linear schedule with T = 1000, 1000 Adam steps
of batch 8 (1e-3, cosine decay), EMA 0.999; samples by DPM-Solver++(2M), 25 steps. Sized
for CPU: training took 809 s user + 361 s sys (about 20 CPU-minutes) on the shared 2-core
machine. At this budget SR3 is far from converged and loses to bicubic upsampling on every
metric (experiments/results/sr3_patches/README.md). ``--mode=eval`` reports PSNR/SSIM of
the super-resolved test crops against the true crops, beside the bicubic and nearest
baselines, and the sampling speed; FID/KID are experiments/sr3_patches.py's.
"""

from gen_jax.config import config_module, parse_arg
from gen_jax.defaults import smoke

sr3_digits = config_module("sr3_digits", __file__)


def get_config(arg=None):
    opts = parse_arg(arg, smoke=False)
    config = sr3_digits.get_config()
    config.data.name = "patches"
    config.data.value_range = (-1.0, 1.0)
    config.data.patch_size = 64
    config.data.patch_image_side = 256
    config.data.num_train = 20000      # distinct crop positions in the train table
    config.data.num_eval = 300         # val and test crops (30 per source image)
    config.data.batch_size = 8
    config.data.eval_batch_size = 50

    m = config.model
    m.lowres_factor = 4           # 64x64 -> 16x16 by average pooling
    m.ch = 32
    m.ch_mult = (1, 2, 2)         # 64 -> 32 -> 16
    m.num_res_blocks = 1
    m.attn_resolutions = ()
    m.dropout = 0.0
    m.groups = 16

    config.optim.learning_rate = 1e-3
    config.optim.warmup_steps = 100
    config.train.num_steps = 1000
    config.train.log_every = 100
    config.train.checkpoint_every = 500
    config.train.num_grid_samples = 16
    # --mode=eval: PSNR/SSIM of the 300 test crops and the sampling speed of 50 validation crops;
    # FID/KID (~0.4 CPU-s an image in the Inception network) are experiments/sr3_patches.py's,
    # on the test crops at equal n.
    config.eval.num_samples = 50
    config.eval.sample_metrics = False
    config.eval.reference_split = "val"
    if opts.smoke:
        smoke(config, **_SMOKE)
    return config


# A tiny model on 16 px crops (4x4 -> 16x16): one resolution level, T = 50, 3 sampler steps.
_SMOKE = {"data.patch_size": 16, "data.patch_image_side": 64, "data.num_train": 64, "data.num_eval": 64,
          "model.ch": 8, "model.groups": 4, "model.ch_mult": (1,), "model.attn_resolutions": (),
          "model.num_timesteps": 50, "sampler.num_steps": 3}
