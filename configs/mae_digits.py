"""Masked autoencoder (He et al., 2022) on 8x8 digits: 2x2 patches (16 per image),
75% hidden, a 4-block ViT encoder on the visible patches and a 2-block decoder.

AdamW with weight decay 0.05, warm-up and cosine decay, as in the paper's
pre-training recipe (scaled down).
"""

from gen_jax.config import parse_arg
from gen_jax.defaults import get_config as default_config
from gen_jax.defaults import smoke


def get_config(arg=None):
    opts = parse_arg(arg, smoke=False)
    config = default_config()
    config.method = "mae"
    config.data.name = "digits"
    config.data.batch_size = 128

    config.model.patch_size = 2
    config.model.mask_ratio = 0.75
    config.model.enc_dim = 64
    config.model.enc_depth = 4
    config.model.enc_heads = 4
    config.model.dec_dim = 32
    config.model.dec_depth = 2
    config.model.dec_heads = 4
    config.model.mlp_ratio = 2.0
    config.model.norm_pix_loss = False  # 2x2 patches of mostly black pixels: raw targets
    config.model.patch_stats_decay = 0.99  # running patch moments, for `sample`

    config.optim.name = "adamw"
    config.optim.learning_rate = 1e-3
    config.optim.b2 = 0.95
    config.optim.weight_decay = 0.05
    config.optim.schedule = "cosine"
    config.optim.warmup_steps = 200
    config.train.num_steps = 3000
    config.train.log_every = 50
    config.train.eval_every = 1000
    config.train.checkpoint_every = 1000
    if opts.smoke:
        smoke(config, **_SMOKE)
    return config


# One encoder and one decoder block (the blocks repeat; tests/autoencoders/test_mae.py trains deeper ones).
_SMOKE = {"model.enc_dim": 16, "model.enc_depth": 1, "model.enc_heads": 2, "model.dec_dim": 16,
          "model.dec_depth": 1, "model.dec_heads": 2}
