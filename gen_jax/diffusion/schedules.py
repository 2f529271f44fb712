"""Noise schedules of discrete-time diffusion models, and the constants derived from them.

Timesteps are 0-based: t in {0, ..., T-1} indexes ``alphas_cumprod[t]`` = ᾱ_t, the
signal fraction of x_t ~ q(x_t | x_0) = N(√ᾱ_t x_0, (1 - ᾱ_t) I); "x_{-1}" is the
data x_0 itself (ᾱ_{-1} = 1). All constants are float64 numpy arrays, so samplers
can precompute step coefficients at trace time; :func:`extract` gathers them as
float32 inside jitted code.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

from gen_jax.errors import ConfigError

SCHEDULES = ("linear", "cosine")


@dataclasses.dataclass(frozen=True, eq=False)
class Schedule:
    """A discrete noise schedule β_0..β_{T-1} and its derived constants (all shape (T,)).

    Attributes:
      betas: β_t.
      alphas: α_t = 1 - β_t.
      alphas_cumprod: ᾱ_t = Π_{s<=t} α_s.
      alphas_cumprod_prev: ᾱ_{t-1}, with ᾱ_{-1} = 1.
      posterior_variance: β̃_t = β_t (1 - ᾱ_{t-1}) / (1 - ᾱ_t), the variance of
        q(x_{t-1} | x_t, x_0) (Ho et al., 2020, eq. 7); β̃_0 = 0.
      posterior_log_variance_clipped: log β̃_t with β̃_0 replaced by β̃_1 (finite).
      posterior_mean_coef1, posterior_mean_coef2: μ̃_t = coef1 x_0 + coef2 x_t.
      log_snr: λ_t = log(ᾱ_t / (1 - ᾱ_t)), decreasing in t.
    """

    name: str
    betas: np.ndarray

    def __post_init__(self):
        b = np.asarray(self.betas, np.float64)
        if b.ndim != 1 or not np.all((b > 0) & (b < 1)):
            raise ConfigError("betas must be a 1-D array with entries in (0, 1)")
        object.__setattr__(self, "betas", b)

    @property
    def num_timesteps(self) -> int:
        return len(self.betas)

    @property
    def alphas(self) -> np.ndarray:
        return 1.0 - self.betas

    @property
    def alphas_cumprod(self) -> np.ndarray:
        return np.cumprod(self.alphas)

    @property
    def alphas_cumprod_prev(self) -> np.ndarray:
        return np.append(1.0, self.alphas_cumprod[:-1])

    @property
    def posterior_variance(self) -> np.ndarray:
        return self.betas * (1.0 - self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod)

    @property
    def posterior_log_variance_clipped(self) -> np.ndarray:
        # β̃_0 = 0: iDDPM (Nichol & Dhariwal, 2021) uses β̃_1 there to keep the log finite.
        pv = self.posterior_variance
        return np.log(np.append(pv[1], pv[1:]))

    @property
    def posterior_mean_coef1(self) -> np.ndarray:
        return self.betas * np.sqrt(self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod)

    @property
    def posterior_mean_coef2(self) -> np.ndarray:
        return (1.0 - self.alphas_cumprod_prev) * np.sqrt(self.alphas) / (1.0 - self.alphas_cumprod)

    @property
    def log_snr(self) -> np.ndarray:
        a = self.alphas_cumprod
        return np.log(a) - np.log1p(-a)


def linear_betas(num_timesteps: int) -> np.ndarray:
    """β linear from 1e-4 to 0.02 at T = 1000 (Ho et al., 2020); for other T both
    ends scale by 1000 / T (as in improved DDPM), so ᾱ_{T-1} stays close to the T=1000
    one, and β is clipped at 0.999 (which only very short chains, T < 51, reach)."""
    scale = 1000.0 / num_timesteps
    return np.minimum(np.linspace(scale * 1e-4, scale * 0.02, num_timesteps, dtype=np.float64), 0.999)


def cosine_betas(num_timesteps: int, s: float = 0.008, max_beta: float = 0.999) -> np.ndarray:
    """The cosine schedule of Nichol & Dhariwal (2021, eq. 17):
    ᾱ(t) = f(t) / f(0), f(t) = cos²((t/T + s) / (1 + s) · π/2), β_t = min(1 - ᾱ(t+1)/ᾱ(t), 0.999)."""
    steps = np.arange(num_timesteps + 1, dtype=np.float64) / num_timesteps
    f = np.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
    return np.minimum(1.0 - f[1:] / f[:-1], max_beta)


def get_schedule(name: str, num_timesteps: int) -> Schedule:
    """The named schedule with ``num_timesteps`` steps.

    Args:
      name: "linear" or "cosine".
      num_timesteps: T >= 2.

    Returns:
      A :class:`Schedule`.
    """
    if int(num_timesteps) < 2:
        raise ConfigError(f"num_timesteps must be >= 2, got {num_timesteps}")
    if name == "linear":
        return Schedule(name, linear_betas(int(num_timesteps)))
    if name == "cosine":
        return Schedule(name, cosine_betas(int(num_timesteps)))
    raise ConfigError(f"unknown schedule {name!r}; known: {', '.join(SCHEDULES)}")


def extract(values: np.ndarray, t: jax.Array, ndim: int) -> jax.Array:
    """``values[t]`` as float32, shaped (batch, 1, ..., 1) to broadcast against an
    array with ``ndim`` dimensions."""
    out = jnp.asarray(values, jnp.float32)[t]
    return out.reshape(out.shape + (1,) * (ndim - out.ndim))
