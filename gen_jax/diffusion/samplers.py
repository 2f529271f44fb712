"""Samplers for discrete-time ε-prediction diffusion models.

Public: :func:`sample` (``method`` = "ddpm" | "ddim" | "dpm_solver" | "dpm_solver++"),
(and "unipc", UniPC's predictor-corrector, :func:`_unipc`),
:func:`timesteps` (the step spacings) and the sampler registry: each sampler is
registered by name with its typed :class:`Option` s (:func:`register_sampler`), so
adding one touches this file only, and :func:`check_options` validates a call (a
Method runs it when built, so a bad ``sampler.*`` fails before training).

Every sampler is one ``lax.scan`` over
its steps; all step coefficients are computed in float64 numpy at trace time
from the (static) schedule, so the scan body is only the network call and a few
multiply-adds.

DPM-Solver with a discrete-time model. DPM-Solver (Lu et al., 2022) integrates
the diffusion ODE in continuous time through λ(t) = log(α_t / σ_t). Its
discrete-time wrapper puts model index n at t_n = (n + 1) / T and interpolates
log α piecewise-linearly between those points. We instead *snap every solver
time, intermediate ones included, to that grid*: each time is the model index
whose λ is nearest the one the solver asks for (strictly ordered), and the
update uses the exact λ, α, σ of the snapped indices (with the actual ratios
r = (λ_{s1} - λ_s) / h, for which the DPM-Solver formulas hold for any r). So
the model is only ever evaluated at (x, index) pairs it was trained on, with
α and σ exactly those of training, and no interpolation enters; the endpoints are
index T-1 (t = 1) and index 0 (t = 1/T). With the grid this fine (T = 1000)
snapping moves λ by at most half a grid cell.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from gen_jax.diffusion import process
from gen_jax.diffusion.schedules import Schedule
from gen_jax.errors import ConfigError

SPACINGS = ("uniform", "quadratic", "logsnr")

EpsFn = Callable[[jax.Array, jax.Array], Any]


# -- the sampler registry ------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Option:
    """A typed sampler option: its default, its type and the values it may take.

    ``kind`` None accepts anything (arrays such as ``x_T``); ``choices`` lists the
    valid values; ``minimum`` bounds a number from below.
    """

    default: Any
    kind: type | None = None
    choices: tuple = ()
    minimum: float | None = None

    def check(self, sampler: str, name: str, value: Any) -> Any:
        """``value`` converted to the option's type; ConfigError naming it if invalid."""
        where = f"option {name}={value!r} of sampler {sampler!r}"
        if self.kind is bool:
            if not isinstance(value, (bool, np.bool_)):
                raise ConfigError(f"{where} must be True or False")
            value = bool(value)
        elif self.kind is int:
            if isinstance(value, (bool, np.bool_)) or not float(value).is_integer():
                raise ConfigError(f"{where} must be an integer")
            value = int(value)
        elif self.kind is float:
            if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.number)):
                raise ConfigError(f"{where} must be a number")
            value = float(value)
        elif self.kind is str and not isinstance(value, str):
            raise ConfigError(f"{where} must be a string")
        if self.choices and value not in self.choices:
            raise ConfigError(f"{where} must be one of {', '.join(map(str, self.choices))}")
        if self.minimum is not None and value < self.minimum:
            raise ConfigError(f"{where} must be >= {self.minimum}")
        return value


@dataclasses.dataclass(frozen=True)
class Sampler:
    """A registered discrete-time sampler.

    Attributes:
      name: its registry key.
      fn: ``fn(eps_fn, sched, x_T, key, num_steps, clip_x0=..., **options) -> x_0``.
      options: its own :class:`Option` s (``clip_x0`` and ``x_T`` are common to all).
      max_steps: the largest ``num_steps`` for a T-step model.
      default_steps: ``num_steps`` when none is given, for a T-step model.
      nfe: network evaluations per example, ``nfe(num_steps, options)``.
    """

    name: str
    fn: Callable
    options: dict[str, Option]
    max_steps: Callable[[int], int]
    default_steps: Callable[[int], int]
    nfe: Callable[[int, dict], int]


COMMON_OPTIONS = {"clip_x0": Option(None), "x_T": Option(None)}
SAMPLERS: dict[str, Sampler] = {}


def register_sampler(name: str, options: dict[str, Option], *, max_steps: Callable[[int], int] = lambda t: t,
                     default_steps: Callable[[int], int] = lambda t: 20,
                     nfe: Callable[[int, dict], int] = lambda n, o: n) -> Callable:
    """Decorator: registers ``fn`` as sampler ``name`` with its typed ``options``."""

    def deco(fn: Callable) -> Callable:
        SAMPLERS[name] = Sampler(name, fn, {**options, **COMMON_OPTIONS}, max_steps, default_steps, nfe)
        return fn

    return deco


def get_sampler(name: str) -> Sampler:
    """The registered sampler ``name``; ConfigError listing the known ones otherwise."""
    if name not in SAMPLERS:
        raise ConfigError(f"unknown sampler {name!r}; known: {', '.join(SAMPLERS)}")
    return SAMPLERS[name]


def resolve_options(sampler: str, specs: dict[str, Option], options: dict[str, Any]) -> dict:
    """``options`` checked against a sampler's typed ``specs``, every one resolved to a
    typed value or its default (None = the default). Shared by the samplers of every
    diffusion Method (this registry's, EDM's, flow matching's).

    Raises:
      ConfigError: an unknown option (the message lists the valid ones), or a mistyped
        or out-of-range value.
    """
    unknown = sorted(set(options) - set(specs))
    if unknown:
        raise ConfigError(f"unknown options {unknown} for sampler {sampler!r}; valid: "
                          f"{', '.join(sorted(specs))}")
    return {k: (o.default if options.get(k) is None else o.check(sampler, k, options[k]))
            for k, o in specs.items()}


def check_options(method: str, num_steps: int | None, num_timesteps: int, **options: Any) -> tuple[int, dict]:
    """Validates a sampler call before anything is traced (a Method calls this when built).

    Args:
      method: the sampler's name.
      num_steps: its steps (None = its default for this model).
      num_timesteps: the model's T.
      **options: its options; None = the default.

    Returns:
      (num_steps, every option resolved to a typed value or its default).

    Raises:
      ConfigError: unknown sampler or option, a mistyped or out-of-range option, or
        ``num_steps`` outside [1, max] for this model (the message names both).
    """
    spec = get_sampler(method)
    resolved = resolve_options(method, spec.options, options)
    n = spec.default_steps(num_timesteps) if num_steps is None else num_steps
    top = spec.max_steps(num_timesteps)
    if isinstance(n, bool) or not float(n).is_integer() or not 1 <= n <= top:
        raise ConfigError(f"sampler.num_steps={num_steps!r} is out of range for sampler {method!r} on a "
                          f"{num_timesteps}-step model: valid 1..{top}")
    return int(n), resolved


def timesteps(sched: Schedule, num: int, spacing: str = "uniform") -> np.ndarray:
    """``num`` distinct increasing model indices in [0, T-1], from 0 to T-1.

    Args:
      sched: the schedule (for its λ_t).
      num: how many (<= T).
      spacing: "uniform" in t; "quadratic" in t (denser near 0, as in DDIM's
        CIFAR-10 setting); "logsnr": uniform in λ_t (DPM-Solver's choice).

    Returns:
      int array (num,), strictly increasing; t_0 = 0 and t_{num-1} = T-1 when num >= 2.
    """
    big_t = sched.num_timesteps
    if not 1 <= num <= big_t:
        raise ConfigError(f"number of steps must be in [1, {big_t}], got {num}")
    if num == 1:
        return np.array([big_t - 1])
    u = np.linspace(0.0, 1.0, num)
    if spacing == "uniform":
        pos = u * (big_t - 1)
    elif spacing == "quadratic":
        pos = u**2 * (big_t - 1)
    elif spacing == "logsnr":
        lam = sched.log_snr  # decreasing in t
        targets = lam[0] + u * (lam[-1] - lam[0])
        pos = np.interp(-targets, -lam, np.arange(big_t, dtype=np.float64))
    else:
        raise ConfigError(f"unknown spacing {spacing!r}; known: {', '.join(SPACINGS)}")
    ts = np.round(pos).astype(np.int64)
    # Rounding may merge neighbours: push up from below, then cap from the top (the
    # minimum of two strictly increasing sequences is strictly increasing).
    for i in range(1, num):
        ts[i] = max(ts[i], ts[i - 1] + 1)
    ts = np.minimum(ts, big_t - num + np.arange(num))
    return ts


def _call(eps_fn: EpsFn, x: jax.Array, t: jax.Array) -> tuple[jax.Array, jax.Array | None]:
    out = eps_fn(x, t)
    return (out[0], out[1]) if isinstance(out, (tuple, list)) else (out, None)


def _eps(eps_fn: EpsFn, sched: Schedule, x: jax.Array, idx: jax.Array,
         clip: tuple[float, float] | None) -> jax.Array:
    """ε̂ at model index ``idx`` (scalar), re-derived from a clipped x̂_0 when ``clip`` is set."""
    t = jnp.full((x.shape[0],), idx, jnp.int32)
    eps, _ = _call(eps_fn, x, t)
    if clip is None:
        return eps
    return process.eps_from_x0(sched, x, t, jnp.clip(process.x0_from_eps(sched, x, t, eps), *clip))


def _noise_keys(key: jax.Array, n: int) -> jax.Array:
    return jax.random.split(key, n)


_SPACING = {"uniform": Option("uniform", str, SPACINGS), "logsnr": Option("logsnr", str, SPACINGS)}


@register_sampler("ddpm", {"spacing": _SPACING["uniform"],
                           "variance": Option("beta_tilde", str, process.VARIANCES)},
                  default_steps=lambda t: t)
def _ddpm(eps_fn, sched, x, key, num_steps, spacing, variance, clip_x0):
    """Ancestral sampling (Ho et al., 2020, Alg. 2). With fewer steps than T, the chain
    is respaced (Nichol & Dhariwal, 2021, §4): over the chosen indices τ_i the
    process has β'_i = 1 - ᾱ_{τ_i} / ᾱ_{τ_{i-1}}, and the model is called at τ_i."""
    ts = timesteps(sched, num_steps, spacing)
    ab = sched.alphas_cumprod[ts]
    respaced = Schedule(sched.name + "_respaced", 1.0 - ab / np.append(1.0, ab[:-1]))
    b = x.shape[0]

    def body(x, inp):
        i, tau, k = inp
        eps, v = _call(eps_fn, x, jnp.full((b,), tau, jnp.int32))
        ii = jnp.full((b,), i, jnp.int32)
        mean, logvar, _ = process.p_mean_logvar(respaced, x, ii, eps, variance, v, clip_x0)
        noise = jax.random.normal(k, x.shape)
        return mean + jnp.where(i > 0, jnp.exp(0.5 * logvar), 0.0) * noise, None

    idx = np.arange(num_steps)[::-1]
    x, _ = jax.lax.scan(body, x, (jnp.asarray(idx, jnp.int32), jnp.asarray(ts[idx], jnp.int32),
                                  _noise_keys(key, num_steps)))
    return x


@register_sampler("ddim", {"spacing": _SPACING["uniform"], "eta": Option(0.0, float, minimum=0.0)})
def _ddim(eps_fn, sched, x, key, num_steps, spacing, eta, clip_x0):
    """DDIM (Song et al., 2021, eq. 12): x_{prev} = √ᾱ_prev x̂_0 + √(1 - ᾱ_prev - σ²) ε̂ + σ z,
    σ = η √((1 - ᾱ_prev) / (1 - ᾱ_t)) √(1 - ᾱ_t / ᾱ_prev); the last step goes to ᾱ = 1."""
    ts = timesteps(sched, num_steps, spacing)[::-1]
    a_t = sched.alphas_cumprod[ts]
    a_prev = np.append(a_t[1:], 1.0)
    sigma = eta * np.sqrt((1 - a_prev) / (1 - a_t)) * np.sqrt(1 - a_t / a_prev)
    coef_dir = np.sqrt(np.maximum(1 - a_prev - sigma**2, 0.0))
    f32 = lambda a: jnp.asarray(a, jnp.float32)  # noqa: E731

    def body(x, inp):
        tau, at, ap, sig, cd, k = inp
        eps = _eps(eps_fn, sched, x, tau, clip_x0)
        x0 = (x - jnp.sqrt(1 - at) * eps) / jnp.sqrt(at)
        return jnp.sqrt(ap) * x0 + cd * eps + sig * jax.random.normal(k, x.shape), None

    x, _ = jax.lax.scan(body, x, (jnp.asarray(ts, jnp.int32), f32(a_t), f32(a_prev), f32(sigma),
                                  f32(coef_dir), _noise_keys(key, num_steps)))
    return x


def _snap(lam: np.ndarray, target: float, lo: int, hi: int) -> int:
    """The model index in [lo, hi) whose λ is nearest ``target``."""
    cand = np.arange(lo, hi)
    return int(cand[np.argmin(np.abs(lam[cand] - target))])


def _dpm_grid(sched: Schedule, num_steps: int, spacing: str, order: int):
    """Step endpoints (T-1 -> 0) and snapped intermediate indices of singlestep DPM-Solver."""
    ends = timesteps(sched, num_steps + 1, spacing)[::-1]
    lam = sched.log_snr  # snapping to the nearest λ: any monotone scale of it will do
    r = {1: (), 2: (0.5,), 3: (1.0 / 3.0, 2.0 / 3.0)}[order]
    mids = np.zeros((num_steps, max(len(r), 1)), np.int64)
    for i in range(num_steps):
        s, t = ends[i], ends[i + 1]
        h = lam[t] - lam[s]
        hi = s
        for j, rj in enumerate(r):
            # Intermediate points lie in [t, s), later ones below earlier ones, each leaving
            # room for those still to come where the grid allows. Where it does not (adjacent
            # ends near t = 0), a point lands on t: r = 1 is still a valid choice in the
            # DPM-Solver-2 formula, and order 3 then degrades gracefully to r1 = r2 = 1.
            if hi > t:
                lo, top = max(t, min(t + len(r) - 1 - j, hi - 1)), hi
            else:
                lo, top = t, t + 1
            hi = mids[i, j] = _snap(lam, lam[s] + rj * h, lo, top)
        if not r:
            mids[i, 0] = s
    return ends, mids


@register_sampler("dpm_solver", {"spacing": _SPACING["logsnr"], "order": Option(3, int, (1, 2, 3)),
                                "denoise_to_zero": Option(False, bool)},
                  max_steps=lambda t: t - 1, nfe=lambda n, o: n * o["order"] + int(o["denoise_to_zero"]))
def _dpm_solver(eps_fn, sched, x, key, num_steps, spacing, order, clip_x0, denoise_to_zero):
    """Singlestep DPM-Solver-1/2/3 with ε-prediction (Lu et al., 2022, Algs. 1-2;
    the order-3 update as in the authors' code, with general r1 < r2)."""
    if order not in (1, 2, 3):
        raise ConfigError(f"dpm_solver order must be 1, 2 or 3, got {order}")
    ends, mids = _dpm_grid(sched, num_steps, spacing, order)
    ab = sched.alphas_cumprod
    lam = 0.5 * sched.log_snr  # DPM-Solver's λ = log(α/σ) is half the log-SNR
    log_a, sig = 0.5 * np.log(ab), np.sqrt(1 - ab)
    s, t = ends[:-1], ends[1:]
    h = lam[t] - lam[s]
    f32 = lambda a: jnp.asarray(a, jnp.float32)  # noqa: E731
    cols = {"s": s, "t": t, "m1": mids[:, 0], "m2": mids[:, -1]}
    coef = {
        "a_ts": np.exp(log_a[t] - log_a[s]), "sig_t_phi1": sig[t] * np.expm1(h),
        "r1": (lam[mids[:, 0]] - lam[s]) / h, "r2": (lam[mids[:, -1]] - lam[s]) / h}
    r1, r2 = coef["r1"], coef["r2"]
    r1, r2 = np.where(r1 > 0, r1, 1.0), np.where(r2 > 0, r2, 1.0)  # unused at order 1; avoid 0/0
    coef["r1"], coef["r2"] = r1, r2
    m1, m2 = mids[:, 0], mids[:, -1]
    coef |= {"a_1s": np.exp(log_a[m1] - log_a[s]), "sig1_phi11": sig[m1] * np.expm1(r1 * h),
             "a_2s": np.exp(log_a[m2] - log_a[s]), "sig2_phi12": sig[m2] * np.expm1(r2 * h),
             "sig2_phi22": sig[m2] * (np.expm1(r2 * h) / (r2 * h) - 1.0),
             "sig_t_phi2": sig[t] * (np.expm1(h) / h - 1.0)}
    xs = ({k: jnp.asarray(v, jnp.int32) for k, v in cols.items()}, {k: f32(v) for k, v in coef.items()})

    def body(x, inp):
        idx, c = inp
        e_s = _eps(eps_fn, sched, x, idx["s"], clip_x0)
        if order == 1:
            x_t = c["a_ts"] * x - c["sig_t_phi1"] * e_s
        elif order == 2:
            u = c["a_1s"] * x - c["sig1_phi11"] * e_s
            e_1 = _eps(eps_fn, sched, u, idx["m1"], clip_x0)
            x_t = c["a_ts"] * x - c["sig_t_phi1"] * e_s - c["sig_t_phi1"] / (2 * c["r1"]) * (e_1 - e_s)
        else:
            u1 = c["a_1s"] * x - c["sig1_phi11"] * e_s
            e_1 = _eps(eps_fn, sched, u1, idx["m1"], clip_x0)
            u2 = (c["a_2s"] * x - c["sig2_phi12"] * e_s
                  - (c["r2"] / c["r1"]) * c["sig2_phi22"] * (e_1 - e_s))
            e_2 = _eps(eps_fn, sched, u2, idx["m2"], clip_x0)
            x_t = c["a_ts"] * x - c["sig_t_phi1"] * e_s - c["sig_t_phi2"] / c["r2"] * (e_2 - e_s)
        return x_t, None

    x, _ = jax.lax.scan(body, x, xs)
    if denoise_to_zero:
        x = process.x0_from_eps(sched, x, jnp.zeros((x.shape[0],), jnp.int32),
                                _eps(eps_fn, sched, x, 0, clip_x0))
    return x


@register_sampler("dpm_solver++", {"spacing": _SPACING["logsnr"], "order": Option(2, int, (1, 2, 3)),
                                  "denoise_to_zero": Option(False, bool),
                                  "lower_order_final": Option(True, bool)},
                  max_steps=lambda t: t - 1, nfe=lambda n, o: n + int(o["denoise_to_zero"]))
def _dpm_solver_pp(eps_fn, sched, x, key, num_steps, spacing, order, clip_x0, denoise_to_zero,
                   lower_order_final):
    """Multistep DPM-Solver++ (2M / 3M) with data prediction D = x̂_0 (Lu et al., 2022b, Alg. 2
    and the authors' 3M update). With h = λ_t - λ_s, φ1 = e^{-h} - 1, φ2 = φ1/h + 1,
    φ3 = φ2/h - 1/2, r_i the ratios of the previous step sizes to h:
      1st: x_t = (σ_t/σ_s) x_s - α_t φ1 D_s
      2M:  ... - α_t φ1 (D_s + (1/(2 r0)) (D_s - D_{-1}))
      3M:  ... - α_t φ1 D_s + α_t φ2 D1 - α_t φ3 D2 (D1, D2: divided differences of D_s, D_{-1}, D_{-2}).
    Each update is linear in (D_s, D_{-1}, D_{-2}): its three weights are precomputed per step.
    The first steps use the orders their history allows; with ``lower_order_final`` and
    fewer than 15 steps, the last steps drop order too (as the authors do)."""
    if order not in (1, 2, 3):
        raise ConfigError(f"dpm_solver++ order must be 1, 2 (2M) or 3 (3M), got {order}")
    ends = timesteps(sched, num_steps + 1, spacing)[::-1]
    ab, lam = sched.alphas_cumprod, 0.5 * sched.log_snr  # λ = log(α/σ)
    s, t = ends[:-1], ends[1:]
    h = lam[t] - lam[s]
    w = np.zeros((num_steps, 3))
    for i in range(num_steps):
        k = min(order, i + 1)
        if lower_order_final and num_steps < 15:
            k = min(k, num_steps - i)
        a_t, phi1 = np.sqrt(ab[t[i]]), np.expm1(-h[i])
        if k == 1:
            w[i] = [-a_t * phi1, 0.0, 0.0]
        elif k == 2:
            r0 = h[i - 1] / h[i]
            w[i] = [-a_t * phi1 * (1 + 0.5 / r0), a_t * phi1 * 0.5 / r0, 0.0]
        else:
            r0, r1 = h[i - 1] / h[i], h[i - 2] / h[i]
            d1_0 = np.array([1.0, -1.0, 0.0]) / r0
            d1_1 = np.array([0.0, 1.0, -1.0]) / r1
            d1 = d1_0 + r0 / (r0 + r1) * (d1_0 - d1_1)
            d2 = (d1_0 - d1_1) / (r0 + r1)
            phi2 = phi1 / h[i] + 1.0
            phi3 = phi2 / h[i] - 0.5
            w[i] = -a_t * phi1 * np.array([1.0, 0.0, 0.0]) + a_t * phi2 * d1 - a_t * phi3 * d2
    f32 = lambda a: jnp.asarray(a, jnp.float32)  # noqa: E731
    xs = (jnp.asarray(s, jnp.int32), f32(np.sqrt((1 - ab[t]) / (1 - ab[s]))), f32(w))
    b = x.shape[0]

    def body(carry, inp):
        x, d1, d2 = carry
        idx, ratio, wi = inp
        tt = jnp.full((b,), idx, jnp.int32)
        d0 = process.x0_from_eps(sched, x, tt, _call(eps_fn, x, tt)[0])
        if clip_x0 is not None:
            d0 = jnp.clip(d0, *clip_x0)
        return (ratio * x + wi[0] * d0 + wi[1] * d1 + wi[2] * d2, d0, d1), None

    zeros = jnp.zeros_like(x)
    (x, _, _), _ = jax.lax.scan(body, (x, zeros, zeros), xs)
    if denoise_to_zero:
        x = process.x0_from_eps(sched, x, jnp.zeros((b,), jnp.int32), _eps(eps_fn, sched, x, 0, clip_x0))
    return x


def _unipc_weights(lam: np.ndarray, alpha: np.ndarray, sigma: np.ndarray, ends: np.ndarray, order: int,
                   variant: str, lower_order_final: bool, prediction: str = "data"
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-step coefficients of UniPC (Zhao et al., 2023, Algs. 2-3 and the authors'
    ``multistep_uni_pc_bh_update``) over the solver ends ``ends`` (T-1 -> 0), for data
    prediction (M = x̂_0) or noise prediction (M = ε̂).

    Step s -> t of order k, h = λ_t - λ_s, ĥ = -h (data) or h (noise), the k-1 previous
    points at r_m = (λ_{-m} - λ_s) / h (negative), B(h) = ĥ (bh1) or e^ĥ - 1 (bh2),
    c_t = α_t (data) or σ_t (noise), the linear part σ_t/σ_s (data) or α_t/α_s (noise):
      x̃_t = (linear part) x_s - c_t (e^ĥ - 1) M_s
      UniP:  x_t = x̃_t - c_t B(h) Σ_m ρ^p_m (M_{-m} - M_s) / r_m
      UniC:  x^c_t = x̃_t - c_t B(h) (Σ_m ρ^c_m (M_{-m} - M_s) / r_m + ρ^c_k (M_t - M_s))
    where ρ solve R ρ = g (R_{ij} = r_j^{i-1} with r_k = 1; g_i = i! ĥ φ_{i+1}(ĥ) / B(h), the
    Taylor coefficients of the exponential integrator) on the first k-1 rows (UniP; ρ^p
    = 1/2 at k = 2) or all k (UniC; ρ^c = 1/2 at k = 1). UniC's M_t is the model at the
    predicted x_t, which is the next step's M_s too: the corrector costs no evaluation.

    Returns:
      (the linear part (n,), predictor weights on (M_s, M_{-1}, M_{-2}) (n, 3), corrector
      weights on (M_s, M_{-1}, M_{-2}, M_t) (n, 4)), float64.
    """
    n = len(ends) - 1
    s_idx, t_idx = ends[:-1], ends[1:]
    data = prediction == "data"
    ratio = sigma[t_idx] / sigma[s_idx] if data else alpha[t_idx] / alpha[s_idx]
    wp, wc = np.zeros((n, 3)), np.zeros((n, 4))
    for i in range(n):
        s, t = ends[i], ends[i + 1]
        k = min(order, i + 1)
        if lower_order_final:
            k = min(k, n - i)
        h = lam[t] - lam[s]
        hh = -h if data else h
        h_phi_1 = np.expm1(hh)
        b_h = hh if variant == "bh1" else np.expm1(hh)
        rks = np.array([(lam[ends[i - m]] - lam[s]) / h for m in range(1, k)] + [1.0])
        rows, g = [], []
        h_phi_k, fact = h_phi_1 / hh - 1.0, 1.0
        for j in range(1, k + 1):
            rows.append(rks ** (j - 1))
            g.append(h_phi_k * fact / b_h)
            fact *= j + 1
            h_phi_k = h_phi_k / hh - 1.0 / fact
        rmat, g = np.stack(rows), np.array(g)
        if k == 1:
            rho_p = np.zeros(0)
        else:
            rho_p = np.array([0.5]) if k == 2 else np.linalg.solve(rmat[:-1, :-1], g[:-1])
        rho_c = np.array([0.5]) if k == 1 else np.linalg.solve(rmat, g)
        c_t = alpha[t] if data else sigma[t]
        wp[i, 0] = -c_t * h_phi_1 + c_t * b_h * np.sum(rho_p / rks[:-1])
        wp[i, 1:k] = -c_t * b_h * rho_p / rks[:-1]
        wc[i, 0] = -c_t * h_phi_1 + c_t * b_h * (np.sum(rho_c[:-1] / rks[:-1]) + rho_c[-1])
        wc[i, 1:k] = -c_t * b_h * rho_c[:-1] / rks[:-1]
        wc[i, 3] = -c_t * b_h * rho_c[-1]
    return ratio, wp, wc


@register_sampler("unipc", {"spacing": _SPACING["logsnr"], "order": Option(3, int, (1, 2, 3)),
                            "prediction": Option("data", str, ("data", "noise")),
                            "variant": Option("bh2", str, ("bh1", "bh2")),
                            "corrector": Option(True, bool),
                            "lower_order_final": Option(True, bool),
                            "denoise_to_zero": Option(False, bool)},
                  max_steps=lambda t: t - 1, nfe=lambda n, o: n + int(o["denoise_to_zero"]))
def _unipc(eps_fn, sched, x, key, num_steps, spacing, order, prediction, variant, corrector,
           lower_order_final, denoise_to_zero, clip_x0):
    """UniPC (Zhao et al., 2023): the multistep UniP-k predictor with the UniC corrector,
    with data prediction M = x̂_0 (as DPM-Solver++) or noise prediction M = ε̂ (as
    DPM-Solver), B(h) of variant bh1 or bh2; coefficients in :func:`_unipc_weights`.
    UniC raises a step's order by one at no extra network call (the model at the predicted
    point serves both the correction and the next step); the last step is not corrected,
    so N steps make N calls. The first steps use the orders their history allows; with
    ``lower_order_final`` the last steps drop order too (step i of N at most N - i), as the
    authors do. ``corrector=False`` is UniP alone (UniP-2, data prediction, bh2 is
    DPM-Solver++(2M))."""
    ends = timesteps(sched, num_steps + 1, spacing)[::-1]
    ab = sched.alphas_cumprod
    lam = 0.5 * sched.log_snr  # λ = log(α/σ)
    ratio, wp, wc = _unipc_weights(lam, np.sqrt(ab), np.sqrt(1.0 - ab), ends, order, variant,
                                   lower_order_final, prediction)
    f32 = lambda a: jnp.asarray(a, jnp.float32)  # noqa: E731
    b = x.shape[0]

    def model(x, idx):  # M(x, t): x̂_0 (clipped where asked) or ε̂ (re-derived from a clipped x̂_0)
        if prediction == "noise":
            return _eps(eps_fn, sched, x, idx, clip_x0)
        tt = jnp.full((b,), idx, jnp.int32)
        d = process.x0_from_eps(sched, x, tt, _call(eps_fn, x, tt)[0])
        return d if clip_x0 is None else jnp.clip(d, *clip_x0)

    def body(carry, inp):
        x, m0, m1, m2 = carry
        t, r, p, c = inp
        x_pred = r * x + p[0] * m0 + p[1] * m1 + p[2] * m2
        m_t = model(x_pred, t)
        x_new = r * x + c[0] * m0 + c[1] * m1 + c[2] * m2 + c[3] * m_t if corrector else x_pred
        return (x_new, m_t, m0, m1), None

    zeros = jnp.zeros_like(x)
    carry = (x, model(x, int(ends[0])), zeros, zeros)
    xs = (jnp.asarray(ends[1:-1], jnp.int32), f32(ratio[:-1]), f32(wp[:-1]), f32(wc[:-1]))
    (x, m0, m1, m2), _ = jax.lax.scan(body, carry, xs)
    p = wp[-1]  # the last step: the predictor alone, no network call
    x = float(ratio[-1]) * x + float(p[0]) * m0 + float(p[1]) * m1 + float(p[2]) * m2
    if denoise_to_zero:
        x = process.x0_from_eps(sched, x, jnp.zeros((b,), jnp.int32), _eps(eps_fn, sched, x, 0, clip_x0))
    return x


def nfe(method: str, num_steps: int, **options: Any) -> int:
    """Network evaluations of one :func:`sample` call (per example)."""
    spec = get_sampler(method)
    return spec.nfe(num_steps, {**{k: o.default for k, o in spec.options.items()}, **options})


def sample(eps_fn: EpsFn, schedule: Schedule, shape: tuple[int, ...], key: jax.Array,
           method: str = "ddpm", num_steps: int | None = None, **options: Any) -> jax.Array:
    """Draws x_0 by integrating the reverse process of a discrete-time ε-model.

    Args:
      eps_fn: ``eps_fn(x_t, t) -> ε̂`` with ``t`` int32 of shape (batch,) (0-based
        model indices); may return ``(ε̂, v)`` where v is the improved-DDPM variance
        output (used by ``method="ddpm", variance="learned"``, ignored elsewhere).
      schedule: the model's training schedule.
      shape: (batch, ...) of the samples.
      key: PRNG key (x_T and, for the stochastic samplers, the step noise).
      method: "ddpm" (ancestral), "ddim", "dpm_solver" (singlestep, orders 1-3) or
        "dpm_solver++" (2M multistep, data prediction).
      num_steps: number of steps (DDPM/DDIM: network calls; DPM-Solver: solver steps,
        each ``order`` calls, see :func:`nfe`); None = T for DDPM, else 20.
      **options: per method (defaults in brackets) --
        all: ``spacing`` ("uniform" for DDPM/DDIM, "logsnr" for DPM-Solver),
        ``clip_x0`` ((lo, hi) to clip x̂_0 to, [None]), ``x_T`` (start here instead of
        drawing it); ddpm: ``variance`` ("beta" | ["beta_tilde"] | "learned");
        ddim: ``eta`` [0.0]; dpm_solver: ``order`` [3], ``denoise_to_zero`` [False]
        (a final x̂_0 step at t = 0, one more call); dpm_solver++: ``order`` [2] (2M; 3 = 3M),
        ``denoise_to_zero`` [False], ``lower_order_final`` [True].
        unipc (UniPC, :func:`_unipc`): ``order`` [3], ``prediction`` (["data"] | "noise"),
        ``variant`` ("bh1" | ["bh2"]), ``corrector`` [True], ``lower_order_final`` [True],
        ``denoise_to_zero`` [False]; N steps are N network calls.

    Returns:
      x_0 samples of ``shape``.
    """
    spec = get_sampler(method)
    num_steps, opts = check_options(method, num_steps, schedule.num_timesteps, **options)
    k_init, k_steps = jax.random.split(key)
    x = opts.pop("x_T")
    x = jax.random.normal(k_init, shape) if x is None else jnp.asarray(x, jnp.float32)
    if tuple(x.shape) != tuple(shape):
        raise ValueError(f"x_T has shape {x.shape}, expected {tuple(shape)}")
    clip = opts.pop("clip_x0")
    clip = None if clip is None else (float(clip[0]), float(clip[1]))
    return spec.fn(eps_fn, schedule, x, k_steps, num_steps, clip_x0=clip, **opts)

