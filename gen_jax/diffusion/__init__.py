"""Diffusion family: schedules, DDPM / improved DDPM, samplers (DDIM, DPM-Solver, UniPC), score
SDEs, EDM, flow matching, VDM, latent diffusion, SR3 and consistency distillation.

Importing this package registers the Methods "ddpm" (ddpm.py; improved DDPM and
classifier-free guidance are options of it), "score_sde" (sde.py), "edm" (edm.py)
"flow_matching" (flow_matching.py), "vdm" (vdm.py), "ldm" (latent.py), "sr3" (sr3.py)
and "consistency" (consistency.py).

Public: :func:`schedules.get_schedule`, :func:`samplers.sample`, the process
functions in :mod:`process`, the losses in :mod:`losses`, :class:`unet.DDPMUNet`,
and the SDEs, samplers and likelihood of :mod:`sde`.
"""

from gen_jax.diffusion import (  # noqa: F401
    consistency,
    ddpm,
    edm,
    flow_matching,
    latent,
    losses,
    ode,
    process,
    samplers,
    schedules,
    score_sde,
    sde,
    sr3,
    unet,
    vdm,
)
from gen_jax.diffusion.samplers import sample
from gen_jax.diffusion.schedules import Schedule, get_schedule

__all__ = ["Schedule", "ddpm", "edm", "flow_matching", "get_schedule", "latent", "losses", "ode", "process",
           "sample", "samplers", "score_sde", "sde", "schedules", "unet", "vdm"]
