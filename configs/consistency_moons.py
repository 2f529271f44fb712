"""Consistency distillation (Song et al., 2023) on the 2-D moons, from the EDM teacher of
configs/edm_moons.py: the student starts from the teacher's residual MLP, distils its
Heun steps on an N = 18 ρ-schedule, and samples in one step (``sampler.num_steps=2``:
two-step multistep consistency sampling).

Train the teacher first:
  python -m gen_jax --config=configs/edm_moons.py --workdir=runs/edm_moons
then this config (``--config.model.teacher_workdir`` points elsewhere).
"""

import ml_collections

from gen_jax.config import parse_arg
from gen_jax.defaults import get_config as default_config
from gen_jax.defaults import smoke


def get_config(arg=None):
    """Variants: ``smoke`` (3 steps; point ``model.teacher_workdir`` at an EDM run of
    ``configs/edm_moons.py:smoke``)."""
    opts = parse_arg(arg, smoke=False)
    config = default_config()
    config.method = "consistency"
    config.data.name = "moons"          # as configs/edm_moons.py: must match the teacher
    config.data.batch_size = 256
    m = config.model
    m.teacher_workdir = "runs/edm_moons"
    m.num_scales = 18                    # N, as the paper's CIFAR-10 distillation
    m.sigma_min = 0.002                  # ε
    m.sigma_max = 80.0                   # T
    m.rho = 7.0
    m.teacher_solver = "heun"            # "heun" | "euler"
    m.target_decay = 0.95                # μ of the target network, the paper's CD setting
    m.loss = "l2"                        # "l2" | "pseudo_huber"
    m.huber_c = 0.0                      # 0 = 0.00054 sqrt(dim)
    m.init_from_teacher = True

    config.sampler = ml_collections.ConfigDict()
    s = config.sampler
    s.name = "multistep"
    s.num_steps = 1
    s.sigmas = ()                        # intermediate τ (num_steps - 1); () = ρ-schedule points

    config.optim.learning_rate = 2e-4
    config.optim.schedule = "constant"
    config.optim.warmup_steps = 0
    config.train.num_steps = 4000
    config.train.log_every = 100
    config.train.eval_every = 0
    config.train.checkpoint_every = 1000
    config.train.ema_decay = 0.999
    config.eval.num_samples = 2000
    if opts.smoke:
        smoke(config, **_SMOKE)
    return config


_SMOKE = {"model.num_scales": 4, "data.num_train": 512, "data.num_eval": 256}
