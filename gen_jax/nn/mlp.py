"""A plain multi-layer perceptron and the activation lookup shared by networks."""

from __future__ import annotations

from typing import Callable, Sequence

import flax.linen as nn
import jax

from gen_jax.errors import ConfigError

_ACTIVATIONS = {"relu": nn.relu, "silu": nn.silu, "gelu": nn.gelu, "tanh": nn.tanh,
                "leaky_relu": nn.leaky_relu, "elu": nn.elu}


def get_activation(name: str) -> Callable[[jax.Array], jax.Array]:
    """The activation function called ``name`` (ConfigError lists the known ones)."""
    if name not in _ACTIVATIONS:
        raise ConfigError(f"unknown activation {name!r}; known: {', '.join(_ACTIVATIONS)}")
    return _ACTIVATIONS[name]


class MLP(nn.Module):
    """Dense layers with an activation between them, none after the last.

    Attributes:
      features: widths of the hidden layers followed by the output width.
      activation: name of the activation.
    """

    features: Sequence[int]
    activation: str = "silu"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        act = get_activation(self.activation)
        x = x.reshape(x.shape[0], -1)
        for i, width in enumerate(self.features):
            x = nn.Dense(width)(x)
            if i < len(self.features) - 1:
                x = act(x)
        return x
