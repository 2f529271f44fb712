"""Autoencoder family: VAE (this issue); AE, DAE, MAE and VQ-VAE join later.

Importing this package registers its Methods.
"""

from gen_jax.autoencoders import vae  # noqa: F401  (registers "vae")
