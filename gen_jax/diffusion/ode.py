"""ODE integrators over pytrees: fixed-step Euler, Heun and RK4 (lax.scan), and adaptive
Dormand-Prince RK45 with error control (lax.while_loop); :func:`integrate` picks one
by name, and :func:`log_prob_by_ode` is the instantaneous change of variables.

Used by the probability-flow ODE of score SDEs and by flow matching (sampling and
likelihood). The state may be any pytree of float arrays; the adaptive solver uses
one step size for the whole pytree (the error norm is an RMS over all of it).
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

OdeFn = Callable[[Any, jax.Array], Any]  # f(y, t) -> dy/dt, t a float32 scalar

SOLVERS = ("euler", "heun", "rk4", "rk45")
FIXED_STEP_NFE = {"euler": 1, "heun": 2, "rk4": 4}  # vector-field calls per fixed step
DIVERGENCES = ("rademacher", "gaussian", "exact")


def _axpy(y: Any, *terms: tuple[float | jax.Array, Any]) -> Any:
    """y + Σ c_i k_i over pytrees."""
    out = y
    for c, k in terms:
        out = jax.tree.map(lambda o, kk, c=c: o + c * kk, out, k)
    return out


def odeint_fixed(f: OdeFn, y0: Any, t0: float, t1: float, num_steps: int,
                 method: str = "rk4") -> Any:
    """Integrates dy/dt = f(y, t) from t0 to t1 (either direction) in ``num_steps`` equal steps.

    Args:
      f: the vector field.
      y0: initial state (pytree).
      t0, t1: start and end times.
      num_steps: steps; RK4 makes 4 calls per step, Heun 2 (the trapezoid
        predictor-corrector, as in Karras et al., 2022).
      method: "rk4" or "heun".

    Returns:
      y(t1).
    """
    if method not in ("rk4", "heun", "euler"):
        raise ValueError(f"unknown fixed-step method {method!r}; known: rk4, heun, euler")
    h = (t1 - t0) / num_steps

    def step(y, i):
        t = t0 + i * h
        k1 = f(y, t)
        if method == "euler":
            return _axpy(y, (h, k1)), None
        if method == "heun":
            k2 = f(_axpy(y, (h, k1)), t + h)
            return _axpy(y, (h / 2, k1), (h / 2, k2)), None
        k2 = f(_axpy(y, (h / 2, k1)), t + h / 2)
        k3 = f(_axpy(y, (h / 2, k2)), t + h / 2)
        k4 = f(_axpy(y, (h, k3)), t + h)
        return _axpy(y, (h / 6, k1), (h / 3, k2), (h / 3, k3), (h / 6, k4)), None

    y, _ = jax.lax.scan(step, y0, jnp.arange(num_steps, dtype=jnp.float32))
    return y


# Dormand & Prince (1980) RK5(4)7FSAL tableau.
_C = (0.0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0, 1.0)
_A = ((),
      (1 / 5,),
      (3 / 40, 9 / 40),
      (44 / 45, -56 / 15, 32 / 9),
      (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
      (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656),
      (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84))
_B5 = (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84, 0.0)
_B4 = (5179 / 57600, 0.0, 7571 / 16695, 393 / 640, -92097 / 339200, 187 / 2100, 1 / 40)


def odeint_rk45(f: OdeFn, y0: Any, t0: float, t1: float, rtol: float = 1e-5, atol: float = 1e-5,
                first_step: float | None = None, max_steps: int = 10_000) -> tuple[Any, dict]:
    """Adaptive Dormand-Prince RK45 from t0 to t1 (either direction), in one lax.while_loop.

    A step is accepted when the RMS of err / (atol + rtol max(|y|, |y_new|)) is <= 1
    (Hairer, Nørsett & Wanner, "Solving ODEs I", II.4); the next step is
    h · clip(0.9 err^{-1/5}, 0.2, 10), capped so the last step lands on t1. The
    last stage is the next step's first (FSAL).

    Returns:
      (y(t1), {"nfe": function evaluations, "steps": accepted steps, "rejected": rejected steps}).
    """
    direction = 1.0 if t1 >= t0 else -1.0
    span = abs(t1 - t0)
    h0 = span * 0.01 if first_step is None else abs(first_step)
    leaves0 = jax.tree.leaves(y0)
    size = sum(x.size for x in leaves0)

    def attempt(t, y, h, k1):
        ks = [k1]
        for i in range(1, 7):
            yi = _axpy(y, *[(h * a, ks[j]) for j, a in enumerate(_A[i]) if a != 0.0])
            ks.append(f(yi, t + _C[i] * h))
        y5 = _axpy(y, *[(h * b, ks[j]) for j, b in enumerate(_B5) if b != 0.0])
        err = _axpy(jax.tree.map(jnp.zeros_like, y), *[(h * (b5 - b4), ks[j]) for j, (b5, b4)
                                                       in enumerate(zip(_B5, _B4, strict=True))
                                                       if b5 != b4])
        scale = jax.tree.map(lambda a, b: atol + rtol * jnp.maximum(jnp.abs(a), jnp.abs(b)), y, y5)
        sq = sum(jnp.sum((e / s) ** 2) for e, s in zip(jax.tree.leaves(err), jax.tree.leaves(scale),
                                                         strict=True))
        return y5, ks[6], jnp.sqrt(sq / size)

    def cond(c):
        t, _, _, _, _, steps, rej = c
        return (direction * (t1 - t) > 1e-7 * span) & (steps + rej < max_steps)

    def body(c):
        t, y, h_abs, k1, nfe, steps, rej = c
        h_abs = jnp.minimum(h_abs, direction * (t1 - t))
        h = direction * h_abs
        y_new, k7, err = attempt(t, y, h, k1)
        ok = err <= 1.0
        factor = jnp.clip(0.9 * jnp.where(err > 0, err, 1e-10) ** (-0.2), 0.2, 10.0)
        pick = lambda a, b: jax.tree.map(lambda u, v: jnp.where(ok, u, v), a, b)  # noqa: E731
        return (jnp.where(ok, t + h, t), pick(y_new, y), h_abs * factor, pick(k7, k1), nfe + 6,
                steps + ok, rej + (~ok))

    t0f = jnp.asarray(t0, jnp.float32)
    init = (t0f, y0, jnp.asarray(h0, jnp.float32), f(y0, t0f), jnp.int32(1), jnp.int32(0),
            jnp.int32(0))
    _, y, _, _, nfe, steps, rej = jax.lax.while_loop(cond, body, init)
    return y, {"nfe": nfe, "steps": steps, "rejected": rej}


def integrate(f: OdeFn, y0: Any, t0: float, t1: float, solver: str, num_steps: int = 100,
              rtol: float = 1e-5, atol: float = 1e-5) -> tuple[Any, dict]:
    """Integrates dy/dt = f(y, t) from t0 to t1 with the solver named ``solver``.

    Args:
      solver: "euler", "heun" or "rk4" (``num_steps`` equal steps) or "rk45"
        (adaptive, ``rtol`` / ``atol``).

    Returns:
      (y(t1), {"nfe": vector-field evaluations, an int32 scalar}).
    """
    if solver == "rk45":  # info also has the accepted and rejected step counts
        return odeint_rk45(f, y0, t0, t1, rtol=rtol, atol=atol)
    if solver in FIXED_STEP_NFE:
        return odeint_fixed(f, y0, t0, t1, num_steps, solver), {
            "nfe": jnp.int32(num_steps * FIXED_STEP_NFE[solver])}
    raise ValueError(f"unknown ODE solver {solver!r}; known: {', '.join(SOLVERS)}")


def divergence_fn(f: OdeFn, x: jax.Array, key: jax.Array,
                  kind: str) -> Callable[[jax.Array, jax.Array], jax.Array]:
    """``div(y, t)``: ∇·f(y, t) per example (batch-leading y shaped like ``x``).

    "exact" builds each example's Jacobian (fine for low-dimensional data); "rademacher"
    / "gaussian" are Hutchinson's estimator vᵀ (∂f/∂y) v by one JVP, with one probe v
    drawn from ``key`` and fixed along the trajectory (Grathwohl et al., 2019).
    """
    b = x.shape[0]
    if kind == "exact":
        shape = x.shape[1:]

        def div(y, t):
            def single(yi):
                fi = lambda v: f(v.reshape(1, *shape), t).reshape(-1)  # noqa: E731
                return jnp.trace(jax.jacfwd(fi)(yi.reshape(-1)))
            return jax.vmap(single)(y)
        return div
    if kind in ("rademacher", "gaussian"):
        probe = (jax.random.rademacher(key, x.shape, jnp.float32) if kind == "rademacher"
                 else jax.random.normal(key, x.shape))

        def div(y, t):
            _, jvp = jax.jvp(lambda v: f(v, t), (y,), (probe,))
            return jnp.sum((jvp * probe).reshape(b, -1), -1)
        return div
    raise ValueError(f"unknown divergence {kind!r}; known: {', '.join(DIVERGENCES)}")


def log_prob_by_ode(f: OdeFn, x: jax.Array, key: jax.Array, t0: float, t1: float,
                    prior_log_prob: Callable[[jax.Array], jax.Array], divergence: str = "rademacher",
                    solver: str = "rk45", num_steps: int = 100, rtol: float = 1e-5,
                    atol: float = 1e-5) -> tuple[jax.Array, dict]:
    """log p_{t0}(x) per example by the instantaneous change of variables (Chen et al., 2018):
    for dy/dt = f(y, t) carrying p_{t0} to p_{t1},
    log p_{t0}(y(t0)) = log p_{t1}(y(t1)) + ∫_{t0}^{t1} ∇·f(y(t), t) dt.

    Args:
      f: the vector field; x: the points (batch-leading) at time t0.
      key: the Hutchinson probe's key (unused by "exact").
      prior_log_prob: log p_{t1}, per example.
      divergence: see :func:`divergence_fn`; solver, num_steps, rtol, atol: see :func:`integrate`.

    Returns:
      (log-likelihoods (batch,), {"nfe": ...}).
    """
    div = divergence_fn(f, x, key, divergence)

    def aug(state, t):
        y, _ = state
        return f(y, t), div(y, t)

    (y1, delta), info = integrate(aug, (x, jnp.zeros((x.shape[0],), jnp.float32)), t0, t1, solver,
                                  num_steps, rtol, atol)
    return prior_log_prob(y1) + delta, info
