"""Shared defaults: they live in the package (gen_jax/defaults.py); this file keeps
``import default`` working for config files written before."""

from gen_jax.defaults import get_config  # noqa: F401
