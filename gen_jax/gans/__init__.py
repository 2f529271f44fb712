"""GAN family: one GAN Method (objectives by config), conditional GAN, pix2pix, CycleGAN, SinGAN,
ProGAN, BigGAN and StyleGAN2."""

from gen_jax.gans import biggan, cyclegan, gan, pix2pix, progan, singan, stylegan2  # noqa: F401  (each registers its Method)
from gen_jax.gans.latent import interpolation_grid, lerp, slerp, vector_arithmetic

__all__ = ["interpolation_grid", "lerp", "slerp", "vector_arithmetic"]
