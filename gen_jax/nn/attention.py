"""Vision-transformer pieces: patchify/unpatchify, fixed 2-D sin-cos position
embeddings and pre-norm transformer blocks.

The blocks follow ViT (Dosovitskiy et al., 2021, "An Image is Worth 16x16
Words"): LayerNorm before attention and before the MLP, residual connections
around both. The 2-D sin-cos embedding is the one MAE uses (He et al., 2022,
"Masked Autoencoders Are Scalable Vision Learners"), after the 1-D one of
Vaswani et al. (2017).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import numpy as np

from gen_jax.errors import ConfigError


def patchify(x: jax.Array, patch: int) -> jax.Array:
    """Cuts images into non-overlapping square patches, row-major.

    Args:
      x: (N, H, W, C) images; H and W divisible by ``patch``.
      patch: side of a patch in pixels.

    Returns:
      (N, (H/patch) * (W/patch), patch * patch * C); patch ``i * (W/patch) + j``
      covers rows ``i*patch..`` and columns ``j*patch..``, flattened in (row,
      column, channel) order.
    """
    n, h, w, c = x.shape
    if h % patch or w % patch:
        raise ValueError(f"image size {(h, w)} is not divisible by the patch size {patch}")
    gh, gw = h // patch, w // patch
    x = x.reshape(n, gh, patch, gw, patch, c).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(n, gh * gw, patch * patch * c)


def unpatchify(patches: jax.Array, patch: int, image_shape: tuple[int, int, int]) -> jax.Array:
    """The inverse of :func:`patchify`.

    Args:
      patches: (N, L, patch * patch * C).
      patch: side of a patch in pixels.
      image_shape: (H, W, C) of the images.

    Returns:
      (N, H, W, C) images.
    """
    h, w, c = image_shape
    gh, gw = h // patch, w // patch
    n = patches.shape[0]
    x = patches.reshape(n, gh, gw, patch, patch, c).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(n, h, w, c)


def sincos_pos_embed_2d(dim: int, grid_h: int, grid_w: int) -> np.ndarray:
    """Fixed 2-D sin-cos position embeddings for a row-major grid of tokens.

    The first half of the ``dim`` features encodes the row, the second half the
    column; each half is ``[sin(p * w_k), cos(p * w_k)]`` for k < dim / 4 with
    ``w_k = 10000^(-k / (dim / 4))`` (Vaswani et al., 2017, applied per axis as in MAE).

    Args:
      dim: embedding width, divisible by 4.
      grid_h: rows of tokens.
      grid_w: columns of tokens.

    Returns:
      float32 array (grid_h * grid_w, dim).
    """
    if dim % 4:
        raise ConfigError(f"a 2-D sin-cos position embedding needs a width divisible by 4, got {dim}")
    quarter = dim // 4
    omega = 1.0 / 10000.0 ** (np.arange(quarter, dtype=np.float64) / quarter)
    rows, cols = np.meshgrid(np.arange(grid_h), np.arange(grid_w), indexing="ij")

    def embed(pos: np.ndarray) -> np.ndarray:
        angles = pos.reshape(-1)[:, None] * omega[None, :]
        return np.concatenate([np.sin(angles), np.cos(angles)], axis=1)

    return np.concatenate([embed(rows), embed(cols)], axis=1).astype(np.float32)


class TransformerBlock(nn.Module):
    """Pre-norm block: x + MHA(LN(x)), then x + MLP(LN(x)) (GELU, width ``mlp_ratio * dim``).

    Attributes:
      num_heads: attention heads; the token width must be divisible by it.
      mlp_ratio: hidden width of the MLP relative to the token width.
    """

    num_heads: int
    mlp_ratio: float = 4.0

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        dim = x.shape[-1]
        h = nn.LayerNorm()(x)
        x = x + nn.MultiHeadDotProductAttention(num_heads=self.num_heads)(h, h)
        h = nn.LayerNorm()(x)
        h = nn.Dense(int(self.mlp_ratio * dim))(h)
        h = nn.Dense(dim)(nn.gelu(h))
        return x + h


class Transformer(nn.Module):
    """``depth`` TransformerBlocks followed by a final LayerNorm.

    Attributes:
      depth: number of blocks.
      num_heads: attention heads per block.
      mlp_ratio: MLP width relative to the token width.
    """

    depth: int
    num_heads: int
    mlp_ratio: float = 4.0

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        for _ in range(self.depth):
            x = TransformerBlock(self.num_heads, self.mlp_ratio)(x)
        return nn.LayerNorm()(x)
