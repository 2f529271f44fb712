"""Autoencoder family: VAE, AE / DAE / SAE, MAE, VQ-VAE and VQ-VAE-2.

Importing this package registers its Methods: "ae", "dae", "sae" (ae.py),
"mae" (mae.py), "vae" (vae.py), "vqvae" (vqvae.py) and "vqvae2" (vqvae2.py).
"""

from gen_jax.autoencoders import ae, mae, vae, vqvae, vqvae2  # noqa: F401
