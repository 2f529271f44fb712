"""The "flow_matching" Method: conditional flow matching with the linear interpolant,
i.e. rectified flow (Lipman et al., 2023, "Flow Matching for Generative Modeling";
Liu, Gong & Liu, 2023, "Flow Straight and Fast").

Convention (as the project's diffusion models): t = 0 is the data and t = 1 the
noise, x_t = (1 - t) x_0 + t ε with x_0 ~ data and ε ~ N(0, I)
(:func:`interpolate`). Along that path dx_t/dt = ε - x_0 (:func:`target_velocity`);
the network v_θ(x_t, t) regresses it, t ~ U[0, 1]:

  L = E_{t, x_0, ε} ‖v_θ(x_t, t) - (ε - x_0)‖²   (per dimension),

whose minimiser is v*(x, t) = E[ε - x_0 | x_t = x], the velocity of an ODE that
carries N(0, I) at t = 1 to the data at t = 0. Sampling integrates it from t = 1
to 0 with Euler, Heun or adaptive Dormand-Prince (gen_jax.diffusion.ode); the
log-likelihood is the instantaneous change of variables through the same ODE,
log p_0(x) = log N(x_1; 0, I) + ∫_0^1 ∇·v_θ(x_t, t) dt, the divergence exact or by
Hutchinson's estimator. Image data need ``data.dequantize='uniform'``, so that
log_prob bounds the discrete data's likelihood (gen_jax.likelihood).

Config (``model``): ``arch`` ("unet" | "mlp") and network sizes as the ddpm
Method. Section ``sampler``: ``method`` ("euler" | "heun" | "rk45"), ``num_steps``
(fixed-step solvers), ``rtol``, ``atol`` (rk45), and for ``log_prob``:
``log_prob_solver`` ("heun" | "rk4" | "rk45"), ``divergence`` ("exact" |
"rademacher" | "gaussian").
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections

from gen_jax.data import DataInfo, discrete_log_prob_offset
from gen_jax.diffusion import ode
from gen_jax.diffusion.ddpm import build_network, init_network_state
from gen_jax.diffusion.samplers import Option, resolve_options
from gen_jax.errors import ConfigError
from gen_jax.likelihood import standard_normal_log_prob
from gen_jax.registry import register
from gen_jax.state import TrainState, make_optimizer
from gen_jax.steps import make_eval_step, make_train_step
from gen_jax.value_range import ValueRange

# The network sees 999 t, the span of the 0..999 timesteps its embedding was sized for.
TIME_EMBED_SCALE = 999.0

VelocityFn = Callable[[jax.Array, jax.Array], jax.Array]  # v(x, t) with t of shape (batch,)

_TOL = {"rtol": Option(1e-4, float, minimum=0.0), "atol": Option(1e-4, float, minimum=0.0)}
# The ODE solvers by name with their typed options (gen_jax.diffusion.ode integrates).
SAMPLERS: dict[str, dict[str, Option]] = {"euler": {}, "heun": {}, "rk45": _TOL}
LOG_PROB_SOLVERS = ("heun", "rk4", "rk45")


def _bcast(a: jax.Array, x: jax.Array) -> jax.Array:
    return jnp.reshape(a, a.shape + (1,) * (x.ndim - a.ndim))


def interpolate(x0: jax.Array, x1: jax.Array, t: jax.Array) -> jax.Array:
    """x_t = (1 - t) x_0 + t x_1 (x_0 the data, x_1 the noise), t of shape (batch,)."""
    t = _bcast(t, x0)
    return (1.0 - t) * x0 + t * x1


def target_velocity(x0: jax.Array, x1: jax.Array) -> jax.Array:
    """dx_t/dt = x_1 - x_0 along :func:`interpolate`'s straight line."""
    return x1 - x0


def check_sampler(method: str, num_steps: Any, **options: Any) -> tuple[int, dict]:
    """Validates a flow-matching sampler call: (steps, typed options). ConfigError otherwise."""
    if method not in SAMPLERS:
        raise ConfigError(f"unknown flow-matching sampler {method!r}; known: {', '.join(SAMPLERS)}")
    opts = resolve_options(method, SAMPLERS[method], options)
    if isinstance(num_steps, bool) or not float(num_steps).is_integer() or num_steps < 1:
        raise ConfigError(f"sampler.num_steps={num_steps!r} must be an integer >= 1")
    return int(num_steps), opts


def ode_sample(velocity: VelocityFn, z: jax.Array, method: str, num_steps: int,
               rtol: float = 1e-4, atol: float = 1e-4) -> tuple[jax.Array, jax.Array]:
    """Integrates dx/dt = v(x, t) from x_1 = z at t = 1 to t = 0.

    Returns:
      (x_0, network evaluations per sample as an int32 scalar: N for Euler, 2N for
      Heun, counted by the solver for rk45).
    """
    x, info = ode.integrate(_field(velocity), z, 1.0, 0.0, method, num_steps, rtol, atol)
    return x, info["nfe"]


def _field(velocity: VelocityFn) -> ode.OdeFn:
    """The vector field f(y, t) of gen_jax.diffusion.ode (t a scalar)."""
    return lambda y, t: velocity(y, jnp.full((y.shape[0],), t, jnp.float32))


class FlowMatching:
    """The flow-matching Method (see gen_jax.registry.Method); implements HasLogProb."""

    def __init__(self, config: ml_collections.ConfigDict, info: DataInfo):
        self.config = config
        s = config.sampler
        self.info = info
        self.offset = discrete_log_prob_offset(info, config.data)
        if self.offset is None:
            raise ConfigError("flow_matching models a continuous density: image data need "
                              "data.dequantize='uniform' (so log_prob bounds the discrete likelihood)")
        if s.log_prob_solver not in LOG_PROB_SOLVERS:
            raise ConfigError(f"sampler.log_prob_solver must be one of {', '.join(LOG_PROB_SOLVERS)}; "
                              f"got {s.log_prob_solver!r}")
        if s.divergence not in ode.DIVERGENCES:
            raise ConfigError(f"sampler.divergence must be one of {', '.join(ode.DIVERGENCES)}; "
                              f"got {s.divergence!r}")
        self.net = build_network(config, info, 1, time_scale=TIME_EMBED_SCALE)
        self.tx = make_optimizer(config.optim, config.train.num_steps)
        self.value_range = ValueRange.from_config(config.data, info)
        check_sampler(s.name, s.num_steps, **self._sampler_options(s.name))

    def _sampler_options(self, method: str) -> dict:
        s = self.config.sampler
        return {k: s[k] for k in SAMPLERS.get(method, {}) if k in s}

    def velocity(self, params: Any, x: jax.Array, t: jax.Array, rng: jax.Array | None = None) -> jax.Array:
        """v_θ(x_t, t), t of shape (batch,)."""
        kw = {"rngs": {"dropout": rng}, "train": True} if rng is not None else {}
        if self.config.model.arch == "mlp":
            return self.net.apply({"params": params}, x.reshape(x.shape[0], -1), t, **kw).reshape(x.shape)
        return self.net.apply({"params": params}, x, t, **kw)

    def velocity_fn(self, params: Any) -> VelocityFn:
        """``v(x, t)`` at ``params``, for the ODE solvers."""
        return lambda x, t: self.velocity(params, x, t)

    def loss_fn(self, params: Any, model_state: Any, batch: dict, rng: jax.Array, train: bool):
        """The conditional flow-matching loss (see gen_jax.steps for the signature)."""
        x0 = batch["x"]
        r_t, r_noise, r_drop = jax.random.split(rng, 3)
        t = jax.random.uniform(r_t, (x0.shape[0],))
        x1 = jax.random.normal(r_noise, x0.shape)
        v = self.velocity(params, interpolate(x0, x1, t), t, r_drop if train else None)
        return jnp.mean((v - target_velocity(x0, x1)) ** 2), ({}, model_state)

    # -- the Method contract -------------------------------------------------

    def init(self, rng: jax.Array, example_batch: dict) -> TrainState:
        return init_network_state(self.net, self.config, self.info, self.tx, rng, example_batch)

    def train_step(self, state: TrainState, batch: dict, rng: jax.Array):
        return make_train_step(self.loss_fn)(state, batch, rng)

    def eval_step(self, state: TrainState, batch: dict, rng: jax.Array) -> dict:
        return make_eval_step(self.loss_fn)(state, batch, rng)

    def sample_and_nfe(self, state: TrainState, rng: jax.Array, num: int, method: str | None = None,
                       num_steps: int | None = None, **options: Any) -> tuple[jax.Array, jax.Array]:
        """(``num`` samples in the data's value range, network calls per sample).

        Args:
          state: the TrainState (EMA parameters where kept).
          rng: PRNG key (the noise x_1).
          num: number of samples.
          method, num_steps: ODE solver and its steps (None = ``config.sampler``).
          **options: solver options (``rtol``, ``atol``), overriding ``config.sampler``.
        """
        method = method or self.config.sampler.name
        n, opts = check_sampler(method, num_steps or self.config.sampler.num_steps,
                                **{**self._sampler_options(method), **options})
        z = jax.random.normal(rng, (num, *self.info.shape))
        x, nfe = ode_sample(self.velocity_fn(state.eval_params), z, method, n, **opts)
        return (self.value_range.clip(x) if self.info.kind == "image" else x), nfe

    def sample(self, state: TrainState, rng: jax.Array, num: int, method: str | None = None,
               num_steps: int | None = None, **options: Any) -> jax.Array:
        """``num`` samples by ``sampler.name`` (or ``method``); see :meth:`sample_and_nfe`."""
        return self.sample_and_nfe(state, rng, num, method, num_steps, **options)[0]

    def log_prob(self, state: TrainState, x: jax.Array, rng: jax.Array, *,
                 num_samples: int = 1) -> jax.Array:
        """log p(x) in nats per example by the instantaneous change of variables through
        the learned ODE (``sampler.log_prob_solver``, ``sampler.divergence``); for
        dequantized images a bound on the discrete scale. ``num_samples`` is unused
        (the divergence's estimator is set by the config)."""
        s = self.config.sampler
        lp, _ = ode.log_prob_by_ode(_field(self.velocity_fn(state.eval_params)), x, rng, 0.0, 1.0,
                                    standard_normal_log_prob, s.divergence, s.log_prob_solver,
                                    s.num_steps, s.rtol, s.atol)
        return lp + self.offset


@register("flow_matching")
def make_flow_matching(config: ml_collections.ConfigDict, info: DataInfo) -> FlowMatching:
    """Factory registered as "flow_matching"."""
    return FlowMatching(config, info)
