"""VQ-VAE-2 (Razavi et al., 2019, "Generating Diverse High-Fidelity Images with VQ-VAE-2").

Two code maps: a top map at half the bottom map's resolution captures global
structure; the bottom map is quantized from the bottom encoder's features
concatenated with the top map decoded to the bottom resolution (Fig. 2a
there), and the decoder sees the upsampled top codes together with the bottom
codes. Losses, EMA updates, restarts and metrics are those of
:class:`gen_jax.autoencoders.vqvae.VQMethod`, once per level ("vq_top",
"vq_bottom"). Registered as "vqvae2".
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from gen_jax.autoencoders.vqvae import VectorQuantizer, VQDecoder, VQEncoder, VQMethod
from gen_jax.data import DataInfo
from gen_jax.nn import Conv
from gen_jax.registry import register


class VQVAE2Net(nn.Module):
    """x -> bottom features (``downsample`` halvings) -> top codes (one more halving);
    [bottom features, decoded top] -> bottom codes; [upsampled top, bottom] -> x."""

    out_channels: int
    channels: int
    num_res: int
    downsample: int
    num_codes: int
    code_dim: int
    ema: bool
    upsample_mode: str = "pixel_shuffle"

    def setup(self):
        c, r, d = self.channels, self.num_res, self.code_dim
        self.enc_b = VQEncoder(c, r, c, self.downsample)
        self.enc_t = VQEncoder(c, r, d, 1)
        self.vq_top = VectorQuantizer(self.num_codes, d, self.ema)
        self.dec_t = VQDecoder(c, r, d, 1, self.upsample_mode)
        self.pre_b = Conv(d, (1, 1))
        self.vq_bottom = VectorQuantizer(self.num_codes, d, self.ema)
        self.up_t = VQDecoder(c, 0, d, 1, self.upsample_mode)
        self.dec = VQDecoder(c, r, self.out_channels, self.downsample, self.upsample_mode)

    def _quantize(self, x: jax.Array):
        h_b = self.enc_b(x)
        z_t, aux_t = self.vq_top(self.enc_t(h_b))
        z_b, aux_b = self.vq_bottom(self.pre_b(jnp.concatenate([h_b, self.dec_t(z_t)], -1)))
        return z_t, z_b, (aux_t, aux_b)

    def _decode(self, z_t: jax.Array, z_b: jax.Array) -> jax.Array:
        return self.dec(jnp.concatenate([self.up_t(z_t), z_b], -1))

    def __call__(self, x: jax.Array) -> tuple[jax.Array, tuple[dict, ...]]:
        z_t, z_b, auxes = self._quantize(x)
        return self._decode(z_t, z_b), auxes

    def encode(self, x: jax.Array) -> tuple[jax.Array, ...]:
        """(top codes (N, h/2, w/2), bottom codes (N, h, w))."""
        _, _, (aux_t, aux_b) = self._quantize(x)
        return aux_t["idx"], aux_b["idx"]

    def decode_codes(self, codes: tuple[jax.Array, ...]) -> jax.Array:
        top, bottom = codes
        return self._decode(self.vq_top.embed(top), self.vq_bottom.embed(bottom))


@register("vqvae2")
def make_vqvae2(config: ml_collections.ConfigDict, info: DataInfo) -> VQMethod:
    """Factory registered as "vqvae2" (the config keys of "vqvae"; ``model.downsample``
    sets the bottom map's halvings, the top map has one more)."""
    m = config.model
    c = info.shape[-1]
    net = VQVAE2Net(c, m.channels, m.num_res, m.downsample, m.num_codes, m.code_dim,
                    m.codebook == "ema", m.upsample)
    return VQMethod(config, info, net, ("vq_top", "vq_bottom"))
