"""Class-conditional Gated PixelCNN prior over the 4x4 code maps of a trained
VQ-VAE on digits (configs/vqvae_digits.py): the VQ-VAE's generative model.

Train the VQ-VAE first:
  python -m gen_jax --config=configs/vqvae_digits.py --workdir=runs/vqvae_digits
then this config (``--config.model.vqvae_workdir`` points elsewhere).
Samples draw a code map position by position and decode it.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
import default  # noqa: E402


def get_config():
    config = default.get_config()
    config.method = "vqvae_prior"
    config.data.name = "digits"
    config.data.dequantize = "none"
    config.data.value_range = (-1.0, 1.0)  # must match the VQ-VAE's data
    config.data.batch_size = 64

    config.model.vqvae_workdir = "runs/vqvae_digits"
    config.model.arch = "gated"        # "gated" | "pixelcnn"
    config.model.features = 32
    config.model.num_layers = 2
    config.model.first_kernel = 3      # the code map is 4x4
    config.model.kernel = 3
    config.model.head_features = 64
    config.model.conditional = True

    config.optim.learning_rate = 1e-3
    config.optim.schedule = "cosine"
    config.optim.warmup_steps = 50
    config.train.num_steps = 400  # 1257 images x 16 codes: a bigger or longer prior overfits
    config.train.log_every = 100
    config.train.eval_every = 100
    config.train.checkpoint_every = 200
    config.train.num_grid_samples = 60
    return config


def TEST_OVERRIDES(scratch_dir):  # noqa: N802 (the name tests/test_configs.py looks up)
    """Trains a tiny VQ-VAE for 2 steps in ``scratch_dir`` and points the prior at it."""
    from gen_jax import load_config, train

    workdir = os.path.join(str(scratch_dir), "vqvae")
    vq = load_config(os.path.join(os.path.dirname(__file__), "vqvae_digits.py"), **{
        "model.channels": 8, "model.code_dim": 4, "model.num_codes": 8, "model.num_res": 0,
        "data.batch_size": 16, "data.eval_batch_size": 64, "train.num_steps": 2, "train.eval_every": 0,
        "train.checkpoint_every": 0, "train.log_every": 1, "train.num_grid_samples": 4,
        "eval.max_batches": 1})
    train.train_and_evaluate(vq, workdir)
    return {"model.vqvae_workdir": workdir, "model.features": 8, "model.num_layers": 1,
            "model.head_features": 8}
