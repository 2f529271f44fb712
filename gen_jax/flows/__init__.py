"""Normalizing flows: the bijector contract, NICE, RealNVP, Glow, Flow++.

Importing this package registers the Methods "nice", "realnvp", "glow" and
"flowpp" (gen_jax/flows/method.py). Bijectors: bijectors.py and couplings.py;
the four architectures and Flow++'s variational dequantizer: architectures.py.
"""

from gen_jax.flows import method  # noqa: F401  (registers the Methods)
from gen_jax.flows.method import Flow, discrete_bits_per_dim, discrete_offset

__all__ = ["Flow", "discrete_bits_per_dim", "discrete_offset"]
