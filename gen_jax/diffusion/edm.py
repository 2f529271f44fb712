"""The "edm" Method: Karras, Aittala, Aila & Laine (2022), "Elucidating the Design
Space of Diffusion-Based Generative Models" (EDM).

The data are noised as x = y + n, n ~ N(0, σ² I) (variance exploding, s(t) = 1,
σ(t) = t). The network F_θ is wrapped by the preconditioning of their Table 1,

  D_θ(x; σ) = c_skip(σ) x + c_out(σ) F_θ(c_in(σ) x; c_noise(σ)),

so that its input and its effective training target have unit variance at every σ
for data of standard deviation σ_data (:func:`precondition`). Training draws
ln σ ~ N(P_mean, P_std²) and minimises λ(σ) ‖D_θ(y + n; σ) - y‖² with
λ(σ) = (σ² + σ_data²) / (σ σ_data)² (:func:`loss_weight`), i.e. ‖F_θ - F_target‖²
with F_target of unit variance.

Sampling integrates the probability-flow ODE dx/dσ = (x - D(x; σ)) / σ from
x ~ N(0, σ_max² I) down the ρ-schedule (:func:`sigma_steps`) with their
Algorithm 1 (Heun, 2N - 1 network calls for N steps: the last step, to σ = 0,
is an Euler step) or Algorithm 2 (the stochastic sampler: before each step, noise
raises σ_i to σ̂ = (1 + γ_i) σ_i, γ_i = min(S_churn / N, √2 - 1) for σ_i in
[S_min, S_max], the added noise scaled by S_noise). The samplers are in
:data:`SAMPLERS` with typed options checked when the Method is built.

Config (``model``): ``arch`` ("unet" | "mlp"), network sizes (as the ddpm
Method), ``sigma_data``, ``p_mean``, ``p_std``. Section ``sampler``: ``method``
("heun" | "euler" | "stochastic"), ``num_steps`` (N), ``sigma_min``,
``sigma_max``, ``rho``, ``s_churn``, ``s_min``, ``s_max``, ``s_noise``.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from gen_jax.data import DataInfo
from gen_jax.diffusion.ddpm import build_network, init_network_state
from gen_jax.diffusion.samplers import Option, resolve_options
from gen_jax.errors import ConfigError
from gen_jax.registry import register
from gen_jax.state import TrainState, make_optimizer
from gen_jax.steps import make_eval_step, make_train_step
from gen_jax.value_range import ValueRange

# c_noise = ¼ ln σ spans about 2.6 for σ in [0.002, 80]; this scale puts it on the span of
# the 0..999 timesteps the networks' sinusoidal embedding was sized for.
NOISE_EMBED_SCALE = 250.0

DenoiseFn = Callable[[jax.Array, jax.Array], jax.Array]  # D(x, σ) with σ of shape (batch,)


def _bcast(a: jax.Array, x: jax.Array) -> jax.Array:
    return jnp.reshape(a, a.shape + (1,) * (x.ndim - a.ndim))


def precondition(sigma: jax.Array, sigma_data: float) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """EDM's preconditioning (Karras et al., 2022, Table 1):
    c_skip = σ_d² / (σ² + σ_d²), c_out = σ σ_d / √(σ² + σ_d²), c_in = 1 / √(σ² + σ_d²),
    c_noise = ¼ ln σ.

    Returns:
      (c_skip, c_out, c_in, c_noise), each shaped like ``sigma``.
    """
    total = sigma**2 + sigma_data**2
    c_skip = sigma_data**2 / total
    c_out = sigma * sigma_data / jnp.sqrt(total)
    return c_skip, c_out, 1.0 / jnp.sqrt(total), 0.25 * jnp.log(sigma)


def loss_weight(sigma: jax.Array, sigma_data: float) -> jax.Array:
    """λ(σ) = (σ² + σ_d²) / (σ σ_d)² = 1 / c_out(σ)² (Karras et al., 2022, Table 1)."""
    return (sigma**2 + sigma_data**2) / (sigma * sigma_data) ** 2


def sigma_steps(num_steps: int, sigma_min: float, sigma_max: float, rho: float) -> np.ndarray:
    """The ρ-schedule (Karras et al., 2022, eq. 5): σ_i = (σ_max^{1/ρ} + i / (N - 1)
    (σ_min^{1/ρ} - σ_max^{1/ρ}))^ρ for i < N, and σ_N = 0.

    Returns:
      float64 (N + 1,), from σ_max down to σ_min, then 0 (N = 1: σ_max, 0).
    """
    i = np.arange(num_steps, dtype=np.float64)
    frac = i / max(num_steps - 1, 1)
    lo, hi = sigma_min ** (1.0 / rho), sigma_max ** (1.0 / rho)
    return np.append((hi + frac * (lo - hi)) ** rho, 0.0)


def churn_gammas(sigmas: np.ndarray, s_churn: float, s_min: float, s_max: float) -> np.ndarray:
    """γ_i = min(S_churn / N, √2 - 1) where S_min <= σ_i <= S_max, else 0 (their Alg. 2)."""
    n = len(sigmas) - 1
    gamma = min(s_churn / n, math.sqrt(2.0) - 1.0)
    return np.where((sigmas[:-1] >= s_min) & (sigmas[:-1] <= s_max), gamma, 0.0)


def edm_sample(denoise: DenoiseFn, shape: tuple[int, ...], key: jax.Array, sigmas: np.ndarray,
               gammas: np.ndarray | None = None, s_noise: float = 1.0, heun: bool = True,
               x_init: jax.Array | None = None) -> jax.Array:
    """Karras et al. (2022), Algorithms 1 (``gammas`` None or zero) and 2 (stochastic).

    One ``lax.scan`` over the N steps; the last one (to σ_N = 0) is an Euler step, so
    the Heun samplers make 2N - 1 network calls.

    Args:
      denoise: D(x, σ) with σ of shape (batch,).
      shape: (batch, ...) of the samples.
      key: PRNG key: x_N ~ N(0, σ_0² I) and each step's churn noise from keys of their own.
      sigmas: the step noise levels σ_0 > ... > σ_N = 0 (:func:`sigma_steps`).
      gammas: γ_i per step (:func:`churn_gammas`); None = deterministic.
      s_noise: S_noise, the scale of the churn noise.
      heun: the second-order correction on every step but the last (False: Euler).
      x_init: start here (at noise level σ_0) instead of drawing x ~ N(0, σ_0² I).

    Returns:
      The samples at σ = 0.
    """
    n = len(sigmas) - 1
    gammas = np.zeros(n) if gammas is None else np.asarray(gammas, np.float64)
    stochastic = bool(np.any(gammas > 0))
    sig_hat = sigmas[:-1] * (1.0 + gammas)
    noise_std = s_noise * np.sqrt(sig_hat**2 - sigmas[:-1] ** 2)
    b = shape[0]
    k_init, k_steps = jax.random.split(key)

    def correct(x, x_next, d, s_hat, s_next):
        """The trapezoid rule: the step with the mean of the slopes at σ̂ and σ_{i+1}."""
        d2 = (x_next - denoise(x_next, jnp.full((b,), s_next))) / s_next
        return x + (s_next - s_hat) * 0.5 * (d + d2)

    def step(x, inp):
        s_hat, s_next, std, k, last = inp
        if stochastic:  # x̂ = x + √(σ̂² - σ²) S_noise ε: σ raised to σ̂
            x = x + std * jax.random.normal(k, x.shape)
        d = (x - denoise(x, jnp.full((b,), s_hat))) / s_hat
        x_next = x + (s_next - s_hat) * d
        if heun:  # not on the last step (σ_N = 0): a cond, so the network is called 2N - 1 times
            x_next = jax.lax.cond(last, lambda *a: a[1], correct, x, x_next, d, s_hat, s_next)
        return x_next, None

    f32 = lambda a: jnp.asarray(a, jnp.float32)  # noqa: E731
    xs = (f32(sig_hat), f32(sigmas[1:]), f32(noise_std), jax.random.split(k_steps, n),
          jnp.arange(n) == n - 1)
    x = float(sigmas[0]) * jax.random.normal(k_init, shape) if x_init is None else x_init
    return jax.lax.scan(step, x, xs)[0]


# -- the sampler registry --------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class EDMSampler:
    """A registered EDM sampler: its typed options, whether it takes the Heun correction
    and churn, and its network calls for N steps."""

    options: dict[str, Option]
    heun: bool
    stochastic: bool
    nfe: Callable[[int], int]


_GRID = {"sigma_min": Option(0.002, float, minimum=0.0), "sigma_max": Option(80.0, float, minimum=0.0),
         "rho": Option(7.0, float, minimum=0.0)}
_CHURN = {"s_churn": Option(0.0, float, minimum=0.0), "s_min": Option(0.0, float, minimum=0.0),
          "s_max": Option(float("inf"), float, minimum=0.0), "s_noise": Option(1.0, float, minimum=0.0)}
SAMPLERS = {
    "heun": EDMSampler(_GRID, True, False, lambda n: 2 * n - 1),          # Algorithm 1
    "euler": EDMSampler(_GRID, False, False, lambda n: n),                # first order, same grid
    "stochastic": EDMSampler({**_GRID, **_CHURN}, True, True, lambda n: 2 * n - 1),  # Algorithm 2
}


def check_sampler(method: str, num_steps: Any, **options: Any) -> tuple[int, dict]:
    """Validates an EDM sampler call: (N, its options resolved and typed). ConfigError otherwise."""
    if method not in SAMPLERS:
        raise ConfigError(f"unknown EDM sampler {method!r}; known: {', '.join(SAMPLERS)}")
    opts = resolve_options(method, SAMPLERS[method].options, options)
    if isinstance(num_steps, bool) or not float(num_steps).is_integer() or num_steps < 1:
        raise ConfigError(f"sampler.num_steps={num_steps!r} must be an integer >= 1")
    if not 0.0 < opts["sigma_min"] < opts["sigma_max"]:
        raise ConfigError(f"EDM sampler needs 0 < sigma_min < sigma_max; got {opts['sigma_min']}, "
                          f"{opts['sigma_max']}")
    if not opts["rho"] > 0:
        raise ConfigError(f"EDM sampler option rho={opts['rho']} must be > 0")
    return int(num_steps), opts


def nfe(method: str, num_steps: int) -> int:
    """Network evaluations per example of ``num_steps`` steps of sampler ``method``."""
    return SAMPLERS[method].nfe(num_steps)


# -- the Method ---------------------------------------------------------------


class EDM:
    """The EDM Method (see gen_jax.registry.Method)."""

    def __init__(self, config: ml_collections.ConfigDict, info: DataInfo):
        self.config = config
        m = config.model
        self.info = info
        for key in ("sigma_data", "p_std"):
            if not m[key] > 0:
                raise ConfigError(f"model.{key}={m[key]!r} must be > 0")
        self.sigma_data = float(m.sigma_data)
        self.net = build_network(config, info, 1, time_scale=NOISE_EMBED_SCALE)
        self.tx = make_optimizer(config.optim, config.train.num_steps)
        self.value_range = ValueRange.from_config(config.data, info)
        check_sampler(config.sampler.name, config.sampler.num_steps,
                      **self._sampler_options(config.sampler.name))

    def _sampler_options(self, method: str) -> dict:
        """The ``config.sampler`` values of the options sampler ``method`` takes."""
        s = self.config.sampler
        takes = SAMPLERS[method].options if method in SAMPLERS else {}
        return {k: s[k] for k in takes if k in s}

    # -- network -------------------------------------------------------------

    def raw_net(self, params: Any, x_in: jax.Array, c_noise: jax.Array,
                rng: jax.Array | None = None) -> jax.Array:
        """F_θ(x_in; c_noise), shaped like ``x_in``, with c_noise of shape (batch,)."""
        kw = {"rngs": {"dropout": rng}, "train": True} if rng is not None else {}
        if self.config.model.arch == "mlp":
            flat = x_in.reshape(x_in.shape[0], -1)
            return self.net.apply({"params": params}, flat, c_noise, **kw).reshape(x_in.shape)
        return self.net.apply({"params": params}, x_in, c_noise, **kw)

    def denoise(self, params: Any, x: jax.Array, sigma: jax.Array,
                rng: jax.Array | None = None) -> jax.Array:
        """D_θ(x; σ) = c_skip x + c_out F_θ(c_in x; c_noise), σ of shape (batch,)."""
        c_skip, c_out, c_in, c_noise = precondition(sigma, self.sigma_data)
        out = self.raw_net(params, _bcast(c_in, x) * x, c_noise, rng)
        return _bcast(c_skip, x) * x + _bcast(c_out, x) * out

    def denoise_fn(self, params: Any) -> DenoiseFn:
        """``D(x, σ)`` at ``params``, for the samplers."""
        return lambda x, sigma: self.denoise(params, x, sigma)

    # -- the loss ------------------------------------------------------------

    def loss_fn(self, params: Any, model_state: Any, batch: dict, rng: jax.Array, train: bool):
        """E_{ln σ ~ N(P_mean, P_std²)} λ(σ) ‖D_θ(y + σ ε; σ) - y‖² per dimension (see
        gen_jax.steps for the signature)."""
        m = self.config.model
        y = batch["x"]
        r_sigma, r_noise, r_drop = jax.random.split(rng, 3)
        sigma = jnp.exp(m.p_mean + m.p_std * jax.random.normal(r_sigma, (y.shape[0],)))
        x = y + _bcast(sigma, y) * jax.random.normal(r_noise, y.shape)
        d = self.denoise(params, x, sigma, r_drop if train else None)
        sq = jnp.mean(((d - y) ** 2).reshape(y.shape[0], -1), axis=1)
        loss = jnp.mean(loss_weight(sigma, self.sigma_data) * sq)
        return loss, ({"denoise_mse": jnp.mean(sq)}, model_state)

    # -- the Method contract -------------------------------------------------

    def init(self, rng: jax.Array, example_batch: dict) -> TrainState:
        return init_network_state(self.net, self.config, self.info, self.tx, rng, example_batch)

    def train_step(self, state: TrainState, batch: dict, rng: jax.Array):
        return make_train_step(self.loss_fn)(state, batch, rng)

    def eval_step(self, state: TrainState, batch: dict, rng: jax.Array) -> dict:
        return make_eval_step(self.loss_fn)(state, batch, rng)

    def sample_and_nfe(self, state: TrainState, rng: jax.Array, num: int, method: str | None = None,
                       num_steps: int | None = None, **options: Any) -> tuple[jax.Array, int]:
        """(``num`` samples in the data's value range, network calls per sample).

        Args:
          state: the TrainState (EMA parameters where kept).
          rng: PRNG key.
          num: number of samples.
          method, num_steps: sampler and its steps N (None = ``config.sampler``).
          **options: sampler options (``rho``, ``sigma_min``, ``s_churn``, ...),
            overriding ``config.sampler``.
        """
        method = method or self.config.sampler.name
        n, opts = check_sampler(method, num_steps or self.config.sampler.num_steps,
                                **{**self._sampler_options(method), **options})
        spec = SAMPLERS[method]
        sigmas = sigma_steps(n, opts["sigma_min"], opts["sigma_max"], opts["rho"])
        gammas = (churn_gammas(sigmas, opts["s_churn"], opts["s_min"], opts["s_max"])
                  if spec.stochastic else None)
        x = edm_sample(self.denoise_fn(state.eval_params), (num, *self.info.shape), rng, sigmas, gammas,
                       opts.get("s_noise", 1.0), spec.heun)
        x = self.value_range.clip(x) if self.info.kind == "image" else x
        return x, spec.nfe(n)

    def sample(self, state: TrainState, rng: jax.Array, num: int, method: str | None = None,
               num_steps: int | None = None, **options: Any) -> jax.Array:
        """``num`` samples by ``sampler.name`` (or ``method``); see :meth:`sample_and_nfe`."""
        return self.sample_and_nfe(state, rng, num, method, num_steps, **options)[0]


@register("edm")
def make_edm(config: ml_collections.ConfigDict, info: DataInfo) -> EDM:
    """Factory registered as "edm"."""
    return EDM(config, info)
