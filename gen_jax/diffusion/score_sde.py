"""The "score_sde" Method: a continuous-time noise-prediction network trained by
denoising score matching (Song et al., 2021), sampled by reverse SDE, predictor-
corrector (sde.SAMPLERS: named predictor / corrector pairs) or the probability-flow
ODE, with exact likelihoods via that ODE.

The network predicts ε from x_t = m(t) x_0 + s(t) ε, so the score is
∇log p_t(x) ≈ -ε̂(x, t) / s(t); training minimises E_t E ‖ε̂ - ε‖² (denoising score
matching with weighting λ(t) = s(t)², t ~ U[t_eps, 1]). Its input is scaled by
1 / √(m² + s²) (unit variance for unit-variance data, which matters for the VE
SDE whose x_t grows to σ_max) and it sees the time as 999 t.

Config (``model``): ``arch``, network sizes, ``sde`` ("vp" | "subvp" | "ve"),
``beta_min``, ``beta_max``, ``sigma_min``, ``sigma_max``, ``t_eps``. Section
``sampler``: ``method`` ("euler_maruyama" | "pc" | "ode"), ``num_steps``,
``ode_solver`` ("rk4" | "heun" | "rk45"), ``rtol``, ``atol``, ``snr``,
``corrector_steps``, ``divergence`` (of ``log_prob``: "rademacher" | "gaussian" | "exact").
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from gen_jax.data import DataInfo, discrete_log_prob_offset
from gen_jax.diffusion import sde as sde_lib
from gen_jax.diffusion.ddpm import build_network, init_network_state
from gen_jax.errors import ConfigError
from gen_jax.registry import register
from gen_jax.state import TrainState, make_optimizer
from gen_jax.steps import make_eval_step, make_train_step
from gen_jax.value_range import ValueRange


class ScoreSDE:
    """The score-SDE Method (see gen_jax.registry.Method)."""

    def __init__(self, config: ml_collections.ConfigDict, info: DataInfo):
        self.config = config
        m, s = config.model, config.sampler
        self.info = info
        self.sde = sde_lib.SDE(m.sde, m.beta_min, m.beta_max, m.sigma_min, m.sigma_max, m.t_eps)
        for value, valid, key in ((s.name, sde_lib.SAMPLERS, "sampler.name"),
                                  (s.ode_solver, sde_lib.ODE_SOLVERS, "sampler.ode_solver"),
                                  (s.divergence, sde_lib.DIVERGENCES, "sampler.divergence")):
            if value not in valid:
                raise ConfigError(f"{key} must be one of {', '.join(valid)}; got {value!r}")
        for value, key in ((s.num_steps, "sampler.num_steps"),
                           (s.corrector_steps, "sampler.corrector_steps")):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{key}={value!r} must be an integer >= 1")
        if not s.snr > 0:
            raise ConfigError(f"sampler.snr={s.snr!r} must be > 0")
        self.offset = discrete_log_prob_offset(self.info, config.data)
        if self.offset is None:
            raise ConfigError("score_sde models a continuous density: image data need "
                              "data.dequantize='uniform' (so log_prob bounds the discrete likelihood)")
        self.net = build_network(config, self.info, 1, time_scale=999.0)
        self.tx = make_optimizer(config.optim, config.train.num_steps)
        self.value_range = ValueRange.from_config(config.data, self.info)

    def eps_net(self, params: Any, x: jax.Array, t: jax.Array, rng: jax.Array | None = None) -> jax.Array:
        """ε̂(x_t, t) for t float of shape (batch,)."""
        mt, st = self.sde.marginal(t)
        c_in = 1.0 / jnp.sqrt(mt**2 + st**2)
        x_in = x * c_in.reshape(c_in.shape + (1,) * (x.ndim - 1))
        kw = {"rngs": {"dropout": rng}, "train": True} if rng is not None else {}
        if self.config.model.arch == "mlp":
            return self.net.apply({"params": params}, x_in.reshape(x.shape[0], -1), t, **kw).reshape(x.shape)
        return self.net.apply({"params": params}, x_in, t, **kw)

    def score_fn(self, params: Any):
        """∇_x log p_t(x) ≈ -ε̂(x, t) / s(t)."""

        def fn(x, t):
            _, st = self.sde.marginal(t)
            return -self.eps_net(params, x, t) / st.reshape(st.shape + (1,) * (x.ndim - 1))

        return fn

    def _loss(self, params: Any, x: jax.Array, rng: jax.Array, train: bool) -> jax.Array:
        r_t, r_n, r_d = jax.random.split(rng, 3)
        b = x.shape[0]
        t = jax.random.uniform(r_t, (b,), minval=self.sde.t_eps, maxval=1.0)
        noise = jax.random.normal(r_n, x.shape)
        mt, st = self.sde.marginal(t)
        shape = (b,) + (1,) * (x.ndim - 1)
        xt = mt.reshape(shape) * x + st.reshape(shape) * noise
        eps = self.eps_net(params, xt, t, r_d if train else None)
        return jnp.mean((eps - noise) ** 2)

    # -- the Method contract -------------------------------------------------

    def init(self, rng: jax.Array, example_batch: dict) -> TrainState:
        return init_network_state(self.net, self.config, self.info, self.tx, rng, example_batch)

    def loss_fn(self, params: Any, model_state: Any, batch: dict, rng: jax.Array, train: bool):
        """The denoising score-matching loss (see gen_jax.steps for the signature)."""
        return self._loss(params, batch["x"], rng, train), ({}, model_state)

    def train_step(self, state: TrainState, batch: dict, rng: jax.Array):
        return make_train_step(self.loss_fn)(state, batch, rng)

    def eval_step(self, state: TrainState, batch: dict, rng: jax.Array) -> dict:
        return make_eval_step(self.loss_fn)(state, batch, rng)

    def sample(self, state: TrainState, rng: jax.Array, num: int, method: str | None = None,
               num_steps: int | None = None) -> jax.Array:
        """``num`` samples by ``sampler.name`` (or ``method``) with ``num_steps`` steps."""
        s = self.config.sampler
        method = method or s.name
        n = num_steps or s.num_steps
        shape = (num, *self.info.shape)
        score = self.score_fn(state.eval_params)
        if method not in sde_lib.SAMPLERS:
            raise ConfigError(f"unknown sampler {method!r}; known: {', '.join(sde_lib.SAMPLERS)}")
        if sde_lib.SAMPLERS[method] is None:
            x, _ = sde_lib.ode_sample(score, self.sde, shape, rng, s.ode_solver, n, s.rtol, s.atol)
        else:
            predictor, corrector = sde_lib.SAMPLERS[method]
            x = sde_lib.pc_sample(score, self.sde, shape, rng, n, predictor, corrector, s.snr,
                                  s.corrector_steps)
        return self.value_range.clip(x) if self.info.kind == "image" else x

    def log_prob(self, state: TrainState, x: jax.Array, rng: jax.Array, *,
                 num_samples: int = 1) -> jax.Array:
        """log p(x) in nats per example through the probability-flow ODE (``sampler.ode_solver``,
        ``sampler.divergence``); for dequantized images a bound on the discrete scale.
        ``num_samples`` is unused (the divergence's estimator is set by the config)."""
        s = self.config.sampler
        lp, _ = sde_lib.ode_log_prob(self.score_fn(state.eval_params), self.sde, x, rng, s.divergence,
                                     s.ode_solver, s.num_steps, s.rtol, s.atol)
        return lp + self.offset


@register("score_sde")
def make_score_sde(config: ml_collections.ConfigDict, info: DataInfo) -> ScoreSDE:
    """Factory registered as "score_sde"."""
    return ScoreSDE(config, info)
