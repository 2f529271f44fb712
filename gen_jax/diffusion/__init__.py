"""Diffusion family: schedules, DDPM / improved DDPM, samplers (DDIM, DPM-Solver), score SDEs."""
