"""Normalizing flows: the bijector contract, NICE, RealNVP, Glow, Flow++."""
