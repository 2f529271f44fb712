"""Autoregressive family: PixelCNN, Gated PixelCNN and the PixelCNN prior over VQ-VAE codes.

Importing this package registers "pixelcnn" and "gated_pixelcnn" (pixelcnn.py)
and "vqvae_prior" (vqvae_prior.py).
"""

from gen_jax.autoregressive import pixelcnn, vqvae_prior  # noqa: F401
