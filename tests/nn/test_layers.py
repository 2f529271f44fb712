"""Shared layers: depth-to-space against an explicit index formula, upsampling modes, MLP."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from gen_jax.errors import ConfigError
from gen_jax.nn.conv import UPSAMPLE_MODES, ConvDecoder, ConvEncoder, depth_to_space
from gen_jax.nn.mlp import MLP, get_activation


def test_depth_to_space_matches_the_index_formula():
    n, h, w, c, b = 2, 3, 4, 5, 2
    x = np.arange(n * h * w * c * b * b, dtype=np.float32).reshape(n, h, w, c * b * b)
    y = np.asarray(depth_to_space(x, b))
    assert y.shape == (n, h * b, w * b, c)
    # out[n, i*b + di, j*b + dj, k] = in[n, i, j, (di*b + dj)*c + k]  (TF's DepthToSpace, NHWC)
    for i, j, di, dj, k in [(0, 0, 0, 0, 0), (1, 2, 1, 0, 3), (2, 3, 1, 1, 4), (0, 1, 0, 1, 2)]:
        assert y[1, i * b + di, j * b + dj, k] == x[1, i, j, (di * b + dj) * c + k]
    with pytest.raises(ValueError, match="divisible"):
        depth_to_space(np.zeros((1, 2, 2, 3)), 2)


@pytest.mark.parametrize("mode", UPSAMPLE_MODES)
def test_decoder_upsampling_modes_give_the_image_shape(mode):
    dec = ConvDecoder((28, 28), (16, 8), 32, 3, upsample=mode)
    z = np.zeros((2, 5), np.float32)
    params = jax.jit(dec.init)(jax.random.key(0), z)
    assert dec.apply(params, z).shape == (2, 28, 28, 3)


def test_bad_sizes_and_names_are_config_errors():
    with pytest.raises(ConfigError, match="divisible"):
        ConvDecoder((10, 10), (8, 8, 8), 16, 1).init(jax.random.key(0), np.zeros((1, 2)))
    with pytest.raises(ConfigError, match="upsampling"):
        ConvDecoder((8, 8), (8,), 16, 1, upsample="bicubic").init(jax.random.key(0), np.zeros((1, 2)))
    with pytest.raises(ConfigError, match="known: relu"):
        get_activation("swish2")


def test_encoder_and_mlp_shapes():
    enc = ConvEncoder((8, 16), 32, 6)
    x = np.zeros((3, 8, 8, 1), np.float32)
    assert enc.apply(jax.jit(enc.init)(jax.random.key(0), x), x).shape == (3, 6)
    mlp = MLP((7, 4))
    v = np.ones((5, 2, 3), np.float32)  # flattened to (5, 6)
    params = mlp.init(jax.random.key(0), v)
    out = mlp.apply(params, v)
    assert out.shape == (5, 4)
    # No activation after the last layer: a linear output can be negative.
    w1, b1 = params["params"]["Dense_0"]["kernel"], params["params"]["Dense_0"]["bias"]
    w2, b2 = params["params"]["Dense_1"]["kernel"], params["params"]["Dense_1"]["bias"]
    h = jax.nn.silu(v.reshape(5, 6) @ w1 + b1)
    np.testing.assert_allclose(out, h @ w2 + b2, rtol=1e-5, atol=1e-6)
