"""Autoencoder family: VAE, AE / DAE / SAE and MAE; VQ-VAE joins later.

Importing this package registers its Methods: "ae", "dae", "sae" (ae.py),
"mae" (mae.py) and "vae" (vae.py).
"""

from gen_jax.autoencoders import ae, mae, vae  # noqa: F401
