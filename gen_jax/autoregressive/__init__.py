"""Autoregressive family: PixelCNN, Gated PixelCNN and the PixelCNN prior over VQ-VAE codes."""
