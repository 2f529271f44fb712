"""Score-based generative modelling through SDEs (Song et al., 2021, "Score-Based
Generative Modeling through Stochastic Differential Equations").

Forward SDEs dx = f(x, t) dt + g(t) dw on t in [0, 1]:
  VP:     f = -½ β(t) x,  g = √β(t),                      β(t) = β_min + t (β_max - β_min)
  sub-VP: f = -½ β(t) x,  g = √(β(t) (1 - e^{-2 ∫_0^t β})),
  VE:     f = 0,          g = σ(t) √(2 log(σ_max / σ_min)), σ(t) = σ_min (σ_max/σ_min)^t
with Gaussian perturbation kernels x_t | x_0 ~ N(m(t) x_0, s(t)² I) (their eqs. 29-31).
Samplers: reverse-time Euler-Maruyama, predictor-corrector (Euler-Maruyama predictor,
Langevin corrector, their Alg. 1/2 with the signal-to-noise step size), and the
probability-flow ODE dx/dt = f - ½ g² ∇log p_t (their eq. 13) with a fixed-step
(RK4/Heun) or an adaptive (RK45) solver. Likelihood: the instantaneous change of
variables, log p_0(x_0) = log p_1(x_1) + ∫_0^1 ∇·f̃(x_t, t) dt, with the divergence
exact (small dims) or by Hutchinson's estimator vᵀ (∂f̃/∂x) v (Grathwohl et al., 2019).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable

import jax
import jax.numpy as jnp

from gen_jax.diffusion import ode
from gen_jax.errors import ConfigError
from gen_jax.likelihood import LOG_2PI

SDES = ("vp", "subvp", "ve")
ODE_SOLVERS = ("rk4", "heun", "rk45")
DIVERGENCES = ("rademacher", "gaussian", "exact")

ScoreFn = Callable[[jax.Array, jax.Array], jax.Array]  # score(x, t) with t float (batch,)


def _bcast(a: jax.Array, x: jax.Array) -> jax.Array:
    return jnp.reshape(a, a.shape + (1,) * (x.ndim - a.ndim))


@dataclasses.dataclass(frozen=True)
class SDE:
    """One of the three SDEs of Song et al. (2021), on t in [t_eps, 1]."""

    kind: str = "vp"
    beta_min: float = 0.1
    beta_max: float = 20.0
    sigma_min: float = 0.01
    sigma_max: float = 50.0
    t_eps: float = 1e-5

    def __post_init__(self):
        if self.kind not in SDES:
            raise ConfigError(f"unknown SDE {self.kind!r}; known: {', '.join(SDES)}")

    def _int_beta(self, t: jax.Array) -> jax.Array:
        return self.beta_min * t + 0.5 * (self.beta_max - self.beta_min) * t**2

    def beta(self, t: jax.Array) -> jax.Array:
        return self.beta_min + t * (self.beta_max - self.beta_min)

    def marginal(self, t: jax.Array) -> tuple[jax.Array, jax.Array]:
        """(m(t), s(t)) of the perturbation kernel N(m x_0, s² I)."""
        if self.kind == "ve":
            return jnp.ones_like(t), self.sigma_min * (self.sigma_max / self.sigma_min) ** t
        log_m = -0.5 * self._int_beta(t)
        one_minus = -jnp.expm1(2.0 * log_m)  # 1 - m²
        return jnp.exp(log_m), (jnp.sqrt(one_minus) if self.kind == "vp" else one_minus)

    def drift_diffusion(self, x: jax.Array, t: jax.Array) -> tuple[jax.Array, jax.Array]:
        """(f(x, t), g(t)) with t of shape (batch,)."""
        if self.kind == "ve":
            sig = self.sigma_min * (self.sigma_max / self.sigma_min) ** t
            return jnp.zeros_like(x), sig * math.sqrt(2.0 * math.log(self.sigma_max / self.sigma_min))
        b = self.beta(t)
        g2 = b if self.kind == "vp" else b * -jnp.expm1(-2.0 * self._int_beta(t))
        return -0.5 * _bcast(b, x) * x, jnp.sqrt(g2)

    def prior_std(self) -> float:
        return self.sigma_max if self.kind == "ve" else 1.0

    def prior_log_prob(self, z: jax.Array) -> jax.Array:
        """log N(z; 0, prior_std² I) per example."""
        s = self.prior_std()
        d = math.prod(z.shape[1:])
        return (-0.5 * jnp.sum((z / s).reshape(z.shape[0], -1) ** 2, -1)
                - d * (math.log(s) + 0.5 * LOG_2PI))


def _times(sde: SDE, num_steps: int) -> jax.Array:
    return jnp.linspace(1.0, sde.t_eps, num_steps + 1, dtype=jnp.float32)


# -- predictors and correctors (Song et al., 2021, Alg. 1) ----------------------
# A predictor takes one reverse-time step t -> t + dt (dt < 0) and returns (x, its
# noise-free mean); a corrector refines x at a fixed time t. Both have one signature
# each, so a sampler is any (predictor, corrector) pair; the Langevin corrector is
# reusable with any score.


def euler_maruyama_predictor(score_fn: ScoreFn, sde: SDE, x: jax.Array, t: jax.Array, dt: jax.Array,
                             key: jax.Array) -> tuple[jax.Array, jax.Array]:
    """One Euler-Maruyama step of the reverse SDE dx = [f - g² ∇log p_t] dt + g dw̄.

    Args:
      x: the state at time ``t`` (scalar); dt: the (negative) step; key: its noise.

    Returns:
      (x_{t+dt}, its mean without the noise).
    """
    tb = jnp.full((x.shape[0],), t)
    f, g = sde.drift_diffusion(x, tb)
    mean = x + (f - _bcast(g**2, x) * score_fn(x, tb)) * dt
    return mean + _bcast(g, x) * jnp.sqrt(-dt) * jax.random.normal(key, x.shape), mean


def langevin_corrector(score_fn: ScoreFn, sde: SDE, x: jax.Array, t: jax.Array, dt: jax.Array,
                       key: jax.Array, snr: float = 0.16, steps: int = 1) -> jax.Array:
    """``steps`` Langevin MCMC steps at time ``t`` (Song et al., 2021, Alg. 4):
    x += ε s + √(2ε) z with ε = 2 α (snr ‖z‖ / ‖s‖)², α = 1 - β(t) |dt| for VP /
    sub-VP and 1 for VE (the norms are averaged over the batch)."""
    b = x.shape[0]
    tb = jnp.full((b,), t)
    alpha = 1.0 if sde.kind == "ve" else 1.0 - sde.beta(t) * (-dt)

    def norm(a):
        return jnp.sqrt(jnp.sum(a.reshape(b, -1) ** 2, -1)).mean()

    for kk in jax.random.split(key, steps):
        s = score_fn(x, tb)
        z = jax.random.normal(kk, x.shape)
        eps = 2.0 * alpha * (snr * norm(z) / norm(s)) ** 2
        x = x + eps * s + jnp.sqrt(2.0 * eps) * z
    return x


PREDICTORS = {"euler_maruyama": euler_maruyama_predictor}
CORRECTORS = {"none": None, "langevin": langevin_corrector}
# The samplers by name: a (predictor, corrector) pair, or None for the probability-flow ODE.
SAMPLERS = {"euler_maruyama": ("euler_maruyama", "none"), "pc": ("euler_maruyama", "langevin"), "ode": None}


def pc_sample(score_fn: ScoreFn, sde: SDE, shape: tuple[int, ...], key: jax.Array, num_steps: int = 1000,
              predictor: str = "euler_maruyama", corrector: str = "none", snr: float = 0.16,
              corrector_steps: int = 1) -> jax.Array:
    """Predictor-corrector sampling from t = 1 (x ~ prior) to t_eps in one lax.scan: at
    each time the corrector (if any), then the predictor; the last step returns the
    predictor's mean (no noise), as Song et al. do.

    Args:
      predictor: a key of :data:`PREDICTORS`; corrector: a key of :data:`CORRECTORS`.
      snr, corrector_steps: the Langevin corrector's options.
    """
    if predictor not in PREDICTORS:
        raise ConfigError(f"unknown predictor {predictor!r}; known: {', '.join(PREDICTORS)}")
    if corrector not in CORRECTORS:
        raise ConfigError(f"unknown corrector {corrector!r}; known: {', '.join(CORRECTORS)}")
    predict, correct = PREDICTORS[predictor], CORRECTORS[corrector]
    k0, ks = jax.random.split(key)
    x = sde.prior_std() * jax.random.normal(k0, shape)
    ts = _times(sde, num_steps)

    def step(x, inp):
        t, t_next, k, last = inp
        dt = t_next - t  # negative
        if correct is not None:
            kc, k = jax.random.split(k)
            x = correct(score_fn, sde, x, t, dt, kc, snr, corrector_steps)
        x, mean = predict(score_fn, sde, x, t, dt, k)
        return jnp.where(last, mean, x), None

    last = jnp.arange(num_steps) == num_steps - 1
    x, _ = jax.lax.scan(step, x, (ts[:-1], ts[1:], jax.random.split(ks, num_steps), last))
    return x


def euler_maruyama(score_fn: ScoreFn, sde: SDE, shape: tuple[int, ...], key: jax.Array,
                   num_steps: int = 1000) -> jax.Array:
    """Reverse SDE by Euler-Maruyama from t = 1 to t_eps (no corrector); the last step
    returns its mean (no noise), as Song et al. do."""
    return pc_sample(score_fn, sde, shape, key, num_steps)


def predictor_corrector(score_fn: ScoreFn, sde: SDE, shape: tuple[int, ...], key: jax.Array,
                        num_steps: int = 1000, snr: float = 0.16, corrector_steps: int = 1) -> jax.Array:
    """Predictor-corrector sampling (Song et al., 2021, Algs. 2-3): Langevin corrector
    steps, then an Euler-Maruyama predictor step, at each time."""
    return pc_sample(score_fn, sde, shape, key, num_steps, "euler_maruyama", "langevin", snr,
                     corrector_steps)


def ode_drift(score_fn: ScoreFn, sde: SDE) -> Callable[[jax.Array, jax.Array], jax.Array]:
    """The probability-flow vector field f̃(x, t) = f - ½ g² ∇log p_t, t a scalar."""

    def fn(x, t):
        tb = jnp.full((x.shape[0],), t)
        f, g = sde.drift_diffusion(x, tb)
        return f - 0.5 * _bcast(g**2, x) * score_fn(x, tb)

    return fn


def ode_sample(score_fn: ScoreFn, sde: SDE, shape: tuple[int, ...], key: jax.Array,
               solver: str = "rk45", num_steps: int = 100, rtol: float = 1e-5,
               atol: float = 1e-5, z: jax.Array | None = None) -> tuple[jax.Array, dict]:
    """Samples by integrating the probability-flow ODE from t = 1 (x ~ prior) to t_eps.

    Returns:
      (samples, {"nfe": ...}).
    """
    if z is None:
        z = sde.prior_std() * jax.random.normal(key, shape)
    return ode.integrate(ode_drift(score_fn, sde), z, 1.0, sde.t_eps, solver, num_steps, rtol, atol)


def ode_log_prob(score_fn: ScoreFn, sde: SDE, x: jax.Array, key: jax.Array,
                 divergence: str = "rademacher", solver: str = "rk45", num_steps: int = 100,
                 rtol: float = 1e-5, atol: float = 1e-5) -> tuple[jax.Array, dict]:
    """log p_{t_eps}(x) in nats per example through the probability-flow ODE.

    Integrates (x_t, ∫ ∇·f̃ dt) from t_eps to 1 and returns
    log p_1(x_1) + ∫_{t_eps}^1 ∇·f̃(x_t, t) dt. ``divergence`` "exact" builds the
    Jacobian (fine for low-dimensional data); "rademacher" / "gaussian" use one
    Hutchinson probe v, fixed along the trajectory, and vᵀ J v by a JVP.

    Returns:
      (log-likelihoods (batch,), {"nfe": ...}).
    """
    return ode.log_prob_by_ode(ode_drift(score_fn, sde), x, key, sde.t_eps, 1.0, sde.prior_log_prob,
                               divergence, solver, num_steps, rtol, atol)
