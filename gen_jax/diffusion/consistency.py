"""The "consistency" Method: consistency distillation (Song, Dhariwal, Chen & Sutskever,
2023, "Consistency Models", Algorithm 2) of a trained EDM teacher of this project.

A consistency model maps any point x_t of a probability-flow ODE trajectory to its
origin: f_θ(x_t, t) = x_ε for every t in [ε, T]. It is parametrised so that the
boundary condition f_θ(x, ε) = x holds exactly (:func:`boundary_scalings`, their
Appendix C):

  f_θ(x, t) = c_skip(t) x + c_out(t) F_θ(c_in(t) x; c_noise(t)),
  c_skip(t) = σ_d² / ((t - ε)² + σ_d²),  c_out(t) = σ_d (t - ε) / √(σ_d² + t²),

with F_θ the teacher's network (its c_in, c_noise, architecture and σ_d; the student
starts from the teacher's weights, as the authors do). On the teacher's time grid
ε = t_1 < ... < t_N = T (the ρ-schedule, :func:`time_grid`), each step draws n ~ U{1..N-1},
x_{t_{n+1}} = x + t_{n+1} z, takes one step of the teacher's probability-flow ODE
dx/dt = (x - D_φ(x; t)) / t back to t_n (Heun or Euler, :func:`teacher_step`), and
minimises

  d(f_θ(x_{t_{n+1}}, t_{n+1}), f_θ⁻(x̂_{t_n}, t_n))   (λ(t_n) = 1; d = L2 or pseudo-Huber),

where θ⁻ is the target network, θ⁻ ← μ θ⁻ + (1 - μ) θ after each update (Algorithm 2),
with no gradient through it. The teacher and the target ride in
``TrainState.model_state`` ({"teacher", "target"}): checkpointed with the student, never
trained. Sampling is Algorithm 1: x = f(T z, T), then for each τ of ``sampler.sigmas``
x = f(x + √(τ² - ε²) z', τ): one network call per step.

The teacher comes from ``model.teacher_workdir`` (an "edm" run) through the
checkpoint-level loader :func:`gen_jax.checkpoint.load_trained`, its EMA parameters.

Config (``model``): ``teacher_workdir``, ``num_scales`` (N), ``sigma_min`` (ε),
``sigma_max`` (T), ``rho``, ``teacher_solver`` ("heun" | "euler"), ``target_decay`` (μ),
``loss`` ("l2" | "pseudo_huber"), ``huber_c`` (0 = 0.00054 √dim, Song & Dhariwal,
2023), ``init_from_teacher``. Section ``sampler``: ``name`` ("multistep"),
``num_steps``, ``sigmas`` (the num_steps - 1 intermediate τ, decreasing; empty = the
interior points of a ``num_steps + 1``-point ρ-schedule).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from gen_jax.checkpoint import load_dependency
from gen_jax.data import DataInfo
from gen_jax.diffusion.ddpm import init_network_state
from gen_jax.diffusion.edm import precondition, sigma_steps
from gen_jax.errors import ConfigError
from gen_jax.registry import register
from gen_jax.state import TrainState, make_optimizer
from gen_jax.steps import make_eval_step, make_train_step
from gen_jax.value_range import ValueRange

TEACHER_SOLVERS = ("heun", "euler")
LOSSES = ("l2", "pseudo_huber")
SAMPLERS = ("multistep",)

DenoiseFn = Callable[[Any, jax.Array, jax.Array], jax.Array]  # D(params, x, σ), σ of shape (batch,)


def _bcast(a: jax.Array, x: jax.Array) -> jax.Array:
    return jnp.reshape(a, a.shape + (1,) * (x.ndim - a.ndim))


def boundary_scalings(t: jax.Array, sigma_min: float, sigma_data: float) -> tuple[jax.Array, jax.Array]:
    """(c_skip(t), c_out(t)) of Song et al. (2023), Appendix C:
    c_skip = σ_d² / ((t - ε)² + σ_d²), c_out = σ_d (t - ε) / √(σ_d² + t²);
    at t = ε exactly 1 and 0, so f(x, ε) = x."""
    shifted = t - sigma_min
    c_skip = sigma_data**2 / (shifted**2 + sigma_data**2)
    c_out = sigma_data * shifted / jnp.sqrt(sigma_data**2 + t**2)
    return c_skip, c_out


def time_grid(num_scales: int, sigma_min: float, sigma_max: float, rho: float) -> np.ndarray:
    """t_i = (ε^{1/ρ} + (i-1)/(N-1) (T^{1/ρ} - ε^{1/ρ}))^ρ, i = 1..N (their eq. 5 /
    EDM's ρ-schedule), increasing from ε to T; float64 (N,)."""
    return sigma_steps(num_scales, sigma_min, sigma_max, rho)[:-1][::-1].copy()


def teacher_step(denoise: Callable[[jax.Array, jax.Array], jax.Array], x: jax.Array, t_from: jax.Array,
                 t_to: jax.Array, solver: str) -> jax.Array:
    """One step of the probability-flow ODE dx/dt = (x - D(x; t)) / t from ``t_from`` to
    ``t_to`` (each (batch,), both > 0): Euler, or Heun (the trapezoid rule on the two
    slopes, EDM's Algorithm 1 step) -- Φ of Song et al. (2023), Algorithm 2."""
    dt = _bcast(t_to - t_from, x)
    d = (x - denoise(x, t_from)) / _bcast(t_from, x)
    x_next = x + dt * d
    if solver == "euler":
        return x_next
    d_next = (x_next - denoise(x_next, t_to)) / _bcast(t_to, x)
    return x + dt * 0.5 * (d + d_next)


def ema_update(target: Any, params: Any, decay: float) -> Any:
    """θ⁻ ← stopgrad(μ θ⁻ + (1 - μ) θ) (Song et al., 2023, Algorithm 2)."""
    return jax.lax.stop_gradient(jax.tree.map(lambda a, b: decay * a + (1.0 - decay) * b, target, params))


@dataclasses.dataclass(frozen=True)
class FrozenTeacher:
    """A trained EDM teacher: its Method (network architecture, preconditioning, σ_d, the
    data it models), its (host) parameters and its denoiser D(params, x, σ).

    ``denoise`` defaults to the EDM Method's own; a closed-form denoiser (tests) may
    stand in, with ``params`` its own constants (and then ``model.init_from_teacher``
    must be False: the student's network is not the teacher's).
    """

    edm: Any
    params: Any
    denoise: DenoiseFn | None = None

    @property
    def denoise_fn(self) -> DenoiseFn:
        return self.edm.denoise if self.denoise is None else self.denoise


def load_teacher(workdir: str) -> FrozenTeacher:
    """The EMA parameters of a trained "edm" workdir's latest checkpoint.

    Raises:
      ConfigError: the workdir is empty, missing, has no checkpoint, or holds another method.
    """
    method, state, _ = load_dependency(
        workdir, "model.teacher_workdir", ("edm",),
        "an EDM teacher first (python -m gen_jax --config=configs/edm_moons.py --workdir=runs/edm_moons)",
        "consistency distillation needs an 'edm' teacher")
    return FrozenTeacher(method, jax.device_get(state.eval_params))


class ConsistencyDistillation:
    """The consistency-distillation Method (see gen_jax.registry.Method, module docstring).

    Args:
      config: the experiment config.
      info: the data's DataInfo (must be the teacher's data).
      teacher: the frozen teacher; None = loaded from ``model.teacher_workdir``.
    """

    def __init__(self, config: ml_collections.ConfigDict, info: DataInfo,
                 teacher: FrozenTeacher | None = None):
        self.config = config
        self.info = info
        m, s = config.model, config.sampler
        self.teacher = load_teacher(m.teacher_workdir) if teacher is None else teacher
        self.edm = self.teacher.edm
        if (self.edm.info.name, tuple(self.edm.info.shape)) != (info.name, tuple(info.shape)):
            raise ConfigError(f"the data {(info.name, tuple(info.shape))} differ from the teacher's "
                              f"{(self.edm.info.name, tuple(self.edm.info.shape))}: set data.* as the "
                              "teacher's config")
        if isinstance(m.num_scales, bool) or int(m.num_scales) != m.num_scales or m.num_scales < 2:
            raise ConfigError(f"model.num_scales={m.num_scales!r} must be an integer >= 2")
        if not 0.0 < m.sigma_min < m.sigma_max:
            raise ConfigError(f"model.sigma_min={m.sigma_min!r}, model.sigma_max={m.sigma_max!r}: need "
                              "0 < sigma_min < sigma_max")
        if not m.rho > 0:
            raise ConfigError(f"model.rho={m.rho!r} must be > 0")
        if m.teacher_solver not in TEACHER_SOLVERS:
            raise ConfigError(f"model.teacher_solver={m.teacher_solver!r}; valid: "
                              f"{', '.join(TEACHER_SOLVERS)}")
        if not 0.0 <= m.target_decay < 1.0:
            raise ConfigError(f"model.target_decay={m.target_decay!r} must be in [0, 1)")
        if m.loss not in LOSSES:
            raise ConfigError(f"model.loss={m.loss!r}; valid: {', '.join(LOSSES)}")
        if m.huber_c < 0:
            raise ConfigError(f"model.huber_c={m.huber_c!r} must be >= 0 (0 = 0.00054 sqrt(dim))")
        if m.init_from_teacher and self.teacher.denoise is not None:
            raise ConfigError("model.init_from_teacher needs a teacher network; this teacher is a "
                              "closed-form denoiser")
        if s.name not in SAMPLERS:
            raise ConfigError(f"sampler.name={s.name!r}; valid: {', '.join(SAMPLERS)}")
        self.sigma_data = float(self.edm.sigma_data)
        self.grid = time_grid(int(m.num_scales), float(m.sigma_min), float(m.sigma_max), float(m.rho))
        self.huber_c = float(m.huber_c) or 0.00054 * math.sqrt(info.dim)
        self.tx = make_optimizer(config.optim, config.train.num_steps)
        self.value_range = ValueRange.from_config(config.data, info)
        self.sample_sigmas(s.num_steps, tuple(s.sigmas))

    # -- the consistency function ---------------------------------------------------

    def consistency_fn(self, params: Any, x: jax.Array, t: jax.Array,
                       rng: jax.Array | None = None) -> jax.Array:
        """f_θ(x, t) = c_skip(t) x + c_out(t) F_θ(c_in(t) x; c_noise(t)), t of shape (batch,)."""
        c_skip, c_out = boundary_scalings(t, self.config.model.sigma_min, self.sigma_data)
        _, _, c_in, c_noise = precondition(t, self.sigma_data)
        out = self.edm.raw_net(params, _bcast(c_in, x) * x, c_noise, rng)
        return _bcast(c_skip, x) * x + _bcast(c_out, x) * out

    def teacher_denoiser(self, teacher_params: Any) -> Callable[[jax.Array, jax.Array], jax.Array]:
        """D_φ(x, σ) of the frozen teacher (no gradient reaches its parameters)."""
        frozen = jax.lax.stop_gradient(teacher_params)
        return lambda x, sigma: self.teacher.denoise_fn(frozen, x, sigma)

    # -- the loss --------------------------------------------------------------------

    def distance(self, a: jax.Array, b: jax.Array) -> jax.Array:
        """d(a, b) per example: the mean squared error per dimension (l2), or the
        pseudo-Huber √(‖a - b‖² + c²) - c (Song & Dhariwal, 2023)."""
        sq = jnp.sum(((a - b) ** 2).reshape(a.shape[0], -1), axis=1)
        if self.config.model.loss == "l2":
            return sq / self.info.dim
        return jnp.sqrt(sq + self.huber_c**2) - self.huber_c

    def loss_fn(self, params: Any, model_state: dict, batch: dict, rng: jax.Array, train: bool):
        """The consistency-distillation loss (Algorithm 2; see gen_jax.steps for the
        signature); ``model_state`` (teacher, target) passes through unchanged."""
        x = batch["x"]
        b = x.shape[0]
        r_n, r_z, r_drop = jax.random.split(rng, 3)
        grid = jnp.asarray(self.grid, jnp.float32)
        n = jax.random.randint(r_n, (b,), 0, len(self.grid) - 1)  # pairs (t_n, t_{n+1}), 0-based
        t_cur, t_next = grid[n], grid[n + 1]
        x_next = x + _bcast(t_next, x) * jax.random.normal(r_z, x.shape)
        x_hat = jax.lax.stop_gradient(teacher_step(self.teacher_denoiser(model_state["teacher"]), x_next,
                                                   t_next, t_cur, self.config.model.teacher_solver))
        drop = r_drop if train else None  # one dropout draw for the online and target networks
        online = self.consistency_fn(params, x_next, t_next, drop)
        target = jax.lax.stop_gradient(self.consistency_fn(model_state["target"], x_hat, t_cur, drop))
        dist = self.distance(online, target)
        metrics = {"consistency_mse": jnp.mean((online - target) ** 2)}
        return jnp.mean(dist), (metrics, model_state)

    # -- the Method contract -----------------------------------------------------------

    def init(self, rng: jax.Array, example_batch: dict) -> TrainState:
        """The student θ (the teacher's weights, or a fresh network), the target θ⁻ = θ, and
        the teacher, with the optimizer and ``train.ema_decay``."""
        teacher = jax.tree.map(jnp.asarray, self.teacher.params)
        if self.config.model.init_from_teacher:
            self.info.check_batch(jnp.asarray(example_batch["x"]))
            params = jax.tree.map(jnp.copy, teacher)
        else:
            params = init_network_state(self.edm.net, self.edm.config, self.info, self.tx, rng,
                                        example_batch).params
        return TrainState.create(params, self.tx, self.config.train.ema_decay,
                                 model_state={"teacher": teacher, "target": jax.tree.map(jnp.copy, params)})

    def train_step(self, state: TrainState, batch: dict, rng: jax.Array):
        """One update of θ, then θ⁻ ← μ θ⁻ + (1 - μ) θ (the updated θ, Algorithm 2)."""
        state, metrics = make_train_step(self.loss_fn)(state, batch, rng)
        target = ema_update(state.model_state["target"], state.params, self.config.model.target_decay)
        return state.replace(model_state={**state.model_state, "target": target}), metrics

    def eval_step(self, state: TrainState, batch: dict, rng: jax.Array) -> dict:
        return make_eval_step(self.loss_fn)(state, batch, rng)

    def sample_sigmas(self, num_steps: Any, sigmas: tuple = ()) -> np.ndarray:
        """[T, τ_1, ..., τ_{k-1}] of a k-step sampler: ``sigmas`` (decreasing, in (ε, T)),
        or the interior points of the (k + 1)-point ρ-schedule from T to ε.

        Raises:
          ConfigError: num_steps not an integer >= 1, or ``sigmas`` of the wrong length,
            not decreasing or outside (ε, T).
        """
        m = self.config.model
        if isinstance(num_steps, bool) or not float(num_steps).is_integer() or num_steps < 1:
            raise ConfigError(f"sampler.num_steps={num_steps!r} must be an integer >= 1")
        k = int(num_steps)
        if not sigmas:
            taus = sigma_steps(k + 1, m.sigma_min, m.sigma_max, m.rho)[1:k] if k > 1 else np.zeros(0)
        else:
            taus = np.asarray(sigmas, np.float64)
            if (len(taus) != k - 1 or np.any(np.diff(taus) >= 0) or taus.min() <= m.sigma_min
                    or taus.max() >= m.sigma_max):
                raise ConfigError(f"sampler.sigmas={tuple(sigmas)!r}: need num_steps - 1 = {k - 1} "
                                  f"decreasing values in ({m.sigma_min}, {m.sigma_max})")
        return np.concatenate([[m.sigma_max], taus])

    def sample(self, state: TrainState, rng: jax.Array, num: int, num_steps: int | None = None,
               sigmas: tuple | None = None, params: Any = None) -> jax.Array:
        """``num`` samples by multistep consistency sampling (Algorithm 1), one network
        call per step.

        Args:
          state: the TrainState (EMA parameters where kept).
          rng: PRNG key (x_T, then one noise draw per later step).
          num: number of samples.
          num_steps: steps (None = ``sampler.num_steps``).
          sigmas: the intermediate τ (None = ``sampler.sigmas``).
          params: the network parameters to use (None = ``state.eval_params``).
        """
        s, eps = self.config.sampler, float(self.config.model.sigma_min)
        num_steps = s.num_steps if num_steps is None else num_steps
        taus = self.sample_sigmas(num_steps, tuple(s.sigmas) if sigmas is None else tuple(sigmas))
        params = state.eval_params if params is None else params
        keys = jax.random.split(rng, len(taus))
        shape = (num, *self.info.shape)

        def f(x, t):
            return self.consistency_fn(params, x, jnp.full((num,), t, jnp.float32))

        x = f(float(taus[0]) * jax.random.normal(keys[0], shape), float(taus[0]))

        def step(x, inp):
            tau, key = inp
            return f(x + jnp.sqrt(tau**2 - eps**2) * jax.random.normal(key, shape), tau), None

        x, _ = jax.lax.scan(step, x, (jnp.asarray(taus[1:], jnp.float32), keys[1:]))
        return self.value_range.clip(x) if self.info.kind == "image" else x


@register("consistency")
def make_consistency(config: ml_collections.ConfigDict, info: DataInfo) -> ConsistencyDistillation:
    """Factory registered as "consistency"."""
    return ConsistencyDistillation(config, info)
