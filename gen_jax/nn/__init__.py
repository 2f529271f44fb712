"""Layers shared by families: convolutions that pick XLA:CPU's fast formulation by shape,
MLPs, conv encoders/decoders, upsampling."""

from gen_jax.nn.conv import Conv, ConvDecoder, ConvEncoder, ConvTranspose, depth_to_space, upsample_block
from gen_jax.nn.mlp import MLP, get_activation

__all__ = ["MLP", "Conv", "ConvDecoder", "ConvEncoder", "ConvTranspose", "depth_to_space",
           "get_activation", "upsample_block"]
