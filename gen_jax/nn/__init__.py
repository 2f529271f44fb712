"""Layers shared by families: MLPs, conv encoders/decoders, upsampling."""

from gen_jax.nn.conv import ConvDecoder, ConvEncoder, depth_to_space, upsample_block
from gen_jax.nn.mlp import MLP, get_activation

__all__ = ["MLP", "ConvDecoder", "ConvEncoder", "depth_to_space", "get_activation",
           "upsample_block"]
