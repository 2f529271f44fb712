"""Metrics shared by families (FID, KID, precision/recall, AUROC, ... join here)."""

from gen_jax.data.preprocess import bits_per_dim

__all__ = ["bits_per_dim"]
