"""The PixelCNN and Gated PixelCNN networks.

Both map an image (N, H, W, F_in) whose F_in input features belong to
``num_channels`` colour groups (the image itself: F_in = C; one-hot codes of a
VQ-VAE: F_in = K, one group) to per-subpixel distribution parameters
(N, H, W, C, P). Output (i, j, c) depends only on inputs earlier in raster and
channel order (tests/autoregressive check this with a full Jacobian).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from gen_jax.nn.masked_conv import MaskedConv


class PixelCNNNet(nn.Module):
    """PixelCNN (van den Oord et al., 2016, "Pixel Recurrent Neural Networks", Sec. 3.4):
    a mask-A kxk convolution, residual blocks of mask-B convolutions
    (1x1 -> kxk -> 1x1, Fig. 5 there), and two mask-B 1x1 output layers.
    Its receptive field has the known blind spot up and to the right.

    Attributes:
      num_channels: colour channels C (the output has C subpixels per pixel).
      num_params: distribution parameters P per subpixel.
      features: residual width (2 * features between blocks).
      num_layers: residual blocks.
      first_kernel: kernel size of the mask-A layer.
      kernel: kernel size inside the residual blocks.
      head_features: width of the output layers.
    """

    num_channels: int
    num_params: int
    features: int = 64
    num_layers: int = 5
    first_kernel: int = 7
    kernel: int = 3
    head_features: int = 128

    @nn.compact
    def __call__(self, x: jax.Array, labels: jax.Array | None = None) -> jax.Array:
        c, f = self.num_channels, self.features
        h = MaskedConv(2 * f, (self.first_kernel,) * 2, c, "full", "A")(x)
        for _ in range(self.num_layers):
            r = MaskedConv(f, (1, 1), c, "full", "B")(nn.relu(h))
            r = MaskedConv(f, (self.kernel,) * 2, c, "full", "B")(nn.relu(r))
            h = h + MaskedConv(2 * f, (1, 1), c, "full", "B")(nn.relu(r))
        h = MaskedConv(self.head_features, (1, 1), c, "full", "B")(nn.relu(h))
        out = MaskedConv(c * self.num_params, (1, 1), c, "full", "B")(nn.relu(h))
        return out.reshape(*out.shape[:3], c, self.num_params)


class GatedPixelCNNNet(nn.Module):
    """Gated PixelCNN (van den Oord et al., 2016, "Conditional Image Generation with
    PixelCNN Decoders", Sec. 2.2-2.3, Fig. 2).

    A vertical stack sees the rows above (its first layer excludes the current
    row, so it can feed the horizontal stack at the same position without a
    shift), a horizontal stack sees the current row to the left (and, through
    channel groups, the current pixel's earlier channels). Every layer is the
    gated unit y = tanh(W_f * x + V_f h) . sigmoid(W_g * x + V_g h), with the
    vertical stack's pre-activations added to the horizontal's through a 1x1
    convolution, a residual connection on the horizontal stack and skip
    connections to the output. Class conditioning: h is a learned embedding of
    the label, added as a per-layer bias to both stacks' gates.

    Attributes:
      num_channels, num_params, features, num_layers, first_kernel, kernel,
      head_features: as in :class:`PixelCNNNet` (``features`` is the stack width).
      num_classes: classes of the conditioning label; 0 = unconditional.
    """

    num_channels: int
    num_params: int
    features: int = 64
    num_layers: int = 5
    first_kernel: int = 7
    kernel: int = 3
    head_features: int = 128
    num_classes: int = 0

    @nn.compact
    def __call__(self, x: jax.Array, labels: jax.Array | None = None) -> jax.Array:
        c, f = self.num_channels, self.features
        k0, k = self.first_kernel, self.kernel
        if self.num_classes:
            if labels is None:
                raise ValueError("a class-conditional Gated PixelCNN needs labels")
            onehot = jax.nn.one_hot(labels, self.num_classes, dtype=x.dtype)
        v = MaskedConv(f, (k0, k0), c, "vertical", "A")(x)
        h = MaskedConv(f, (1, k0), c, "horizontal", "A")(x)
        skip = jnp.zeros((*x.shape[:3], f), x.dtype)
        for _ in range(self.num_layers):
            v_pre = MaskedConv(2 * f, (k, k), c, "vertical", "B")(v)
            h_pre = (MaskedConv(2 * f, (1, k), c, "horizontal", "B", out_splits=2)(h)
                     + nn.Dense(2 * f)(v_pre))  # vertical -> horizontal: earlier rows only
            if self.num_classes:
                v_pre = v_pre + nn.Dense(2 * f, use_bias=False)(onehot)[:, None, None, :]
                h_pre = h_pre + nn.Dense(2 * f, use_bias=False)(onehot)[:, None, None, :]
            v = _gate(v_pre)
            gated = _gate(h_pre)
            skip = skip + MaskedConv(f, (1, 1), c, "full", "B")(gated)
            h = h + MaskedConv(f, (1, 1), c, "full", "B")(gated)
        out = MaskedConv(self.head_features, (1, 1), c, "full", "B")(nn.relu(skip))
        out = MaskedConv(c * self.num_params, (1, 1), c, "full", "B")(nn.relu(out))
        return out.reshape(*out.shape[:3], c, self.num_params)


def _gate(pre: jax.Array) -> jax.Array:
    """tanh(first half) * sigmoid(second half): the gated activation unit."""
    a, b = jnp.split(pre, 2, axis=-1)
    return jnp.tanh(a) * jax.nn.sigmoid(b)


ARCHS = {"pixelcnn": PixelCNNNet, "gated": GatedPixelCNNNet}
