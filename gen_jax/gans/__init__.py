"""GAN family: one GAN Method (objectives by config), conditional GAN, pix2pix, CycleGAN."""
