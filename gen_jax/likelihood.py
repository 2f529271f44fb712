"""Each likelihood formula once: bits/dim, the discrete-likelihood offset of
dequantized data, Gaussian and Bernoulli log-densities, and the Gaussian KL.

Every family reports log-likelihoods in nats per example on the data's discrete
scale (DESIGN.md, "Data"); these are the pieces they share.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp

from gen_jax.value_range import ValueRange

if TYPE_CHECKING:  # the data package imports this module; no cycle at run time
    import ml_collections

    from gen_jax.data.sources import DataInfo

LOG_2PI = math.log(2.0 * math.pi)
LN2 = math.log(2.0)


def bits_per_dim(nats_per_example, dim: int):
    """Nats per example -> bits per dimension (negate a log-likelihood first for an NLL)."""
    return nats_per_example / (dim * LN2)


def discrete_log_prob_offset(info: "DataInfo", data: "ml_collections.ConfigDict") -> float | None:
    """What to add to a continuous log-density of a preprocessed example to get
    a lower bound on the log-probability of the discrete example (nats).

    With y = lo + (hi - lo) (x + u) / L and u ~ U[0, 1)^D,
    log P(x) >= E_u[log p(y)] + D log((hi - lo) / L)  (Theis et al., 2016);
    see :func:`dequantization_offset`.

    Returns:
      The offset, 0.0 for continuous vector data, and None where no continuous
      density gives a discrete likelihood (images without dequantization, or
      binarized images, which need a discrete model).
    """
    if info.kind == "vector":
        return 0.0
    if data.binarize != "none" or data.dequantize != "uniform":
        return None
    return dequantization_offset(info, data)


def dequantization_offset(info: "DataInfo", data: "ml_collections.ConfigDict") -> float:
    """D log((hi - lo) / L): the log-volume of one example's uniform-dequantization
    bins (gen_jax.value_range), whether the data or the model dequantizes."""
    return info.dim * math.log(ValueRange.from_config(data, info).bin_width)


def standard_normal_log_prob(z: jax.Array) -> jax.Array:
    """log N(z; 0, I) per example, summed over all non-batch dims."""
    return -0.5 * (z.reshape(z.shape[0], -1) ** 2 + LOG_2PI).sum(-1)


def gaussian_log_prob(x: jax.Array, mean: jax.Array, log_std: jax.Array) -> jax.Array:
    """log N(x; mean, exp(log_std)^2) per example, summed over all non-batch dims."""
    z = (x - mean) * jnp.exp(-log_std)
    lp = -0.5 * (z**2 + LOG_2PI) - log_std
    return lp.reshape(x.shape[0], -1).sum(-1)


def diag_gaussian_log_prob(z: jax.Array, mean: jax.Array, logvar: jax.Array) -> jax.Array:
    """log N(z; mean, diag(exp(logvar))) summed over the last axis."""
    return -0.5 * jnp.sum((z - mean) ** 2 * jnp.exp(-logvar) + logvar + LOG_2PI, axis=-1)


def gaussian_log_prob_elementwise(x: jax.Array, mean: jax.Array, logvar: jax.Array) -> jax.Array:
    """log N(x; mean, exp(logvar)) elementwise (no sum)."""
    return -0.5 * (LOG_2PI + logvar + (x - mean) ** 2 * jnp.exp(-logvar))


def bernoulli_log_prob(b: jax.Array, logits: jax.Array) -> jax.Array:
    """log Bernoulli(b; sigmoid(logits)) per example, b in {0, 1}."""
    lp = b * jax.nn.log_sigmoid(logits) + (1.0 - b) * jax.nn.log_sigmoid(-logits)
    return lp.reshape(b.shape[0], -1).sum(-1)


def gaussian_kl(mean: jax.Array, logvar: jax.Array) -> jax.Array:
    """KL(N(mean, exp(logvar)) || N(0, I)) per example, summed over the last axis."""
    return 0.5 * jnp.sum(mean**2 + jnp.exp(logvar) - 1.0 - logvar, axis=-1)
