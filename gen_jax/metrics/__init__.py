"""Metrics shared by families (FID, KID, precision/recall, ... join here)."""

from gen_jax.data.preprocess import bits_per_dim
from gen_jax.metrics.auroc import auroc

__all__ = ["auroc", "bits_per_dim"]
