"""Samplers with the exact ε of Gaussian data: every sampler reproduces the data's
mean and covariance; DDIM(η=0) is deterministic; DPM-Solver-1 is DDIM; higher
DPM-Solver orders converge faster; step spacings are valid."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gen_jax.diffusion import samplers
from gen_jax.diffusion.schedules import get_schedule
from gen_jax.errors import ConfigError

MU = np.array([0.5, -0.3])
LCHOL = np.array([[0.6, 0.0], [0.3, 0.4]])
SIGMA = LCHOL @ LCHOL.T
SCHED = get_schedule("linear", 200)
N = 4000


def exact_eps(scale: float = 1.0):
    """ε*(x_t, t) for data N(MU, SIGMA); ``scale`` != 1 makes a wrong model."""
    ab = jnp.asarray(SCHED.alphas_cumprod, jnp.float32)
    d, u = np.linalg.eigh(SIGMA)  # (a Σ + (1-a) I)^-1 = U diag(1 / (a d + 1 - a)) Uᵀ
    u, d, mu = jnp.asarray(u, jnp.float32), jnp.asarray(d, jnp.float32), jnp.asarray(MU, jnp.float32)

    def fn(x, t):
        a = ab[t][:, None]
        r = (x - jnp.sqrt(a) * mu) @ u
        return scale * jnp.sqrt(1 - a) * (r / (a * d + 1 - a)) @ u.T

    return fn


CASES = [("ddpm", 200, {}), ("ddpm", 50, {"variance": "beta"}), ("ddim", 100, {}),
         ("ddim", 100, {"eta": 1.0}), ("dpm_solver", 30, {"order": 1}),
         ("dpm_solver", 12, {"order": 2}), ("dpm_solver", 8, {"order": 3}),
         ("dpm_solver++", 20, {}), ("dpm_solver++", 15, {"order": 3}),
         ("ddim", 50, {"spacing": "quadratic"})]


@pytest.mark.parametrize("method,steps,opts", CASES)
def test_sampler_matches_gaussian_data_moments(method, steps, opts):
    x = np.asarray(samplers.sample(exact_eps(), SCHED, (N, 2), jax.random.key(0), method, steps, **opts))
    assert np.abs(x.mean(0) - MU).max() < 0.035
    assert np.abs(np.cov(x.T) - SIGMA).max() < 0.05


def test_a_wrong_model_is_caught():
    x = np.asarray(samplers.sample(exact_eps(0.85), SCHED, (N, 2), jax.random.key(0), "dpm_solver++", 20))
    assert np.abs(np.cov(x.T) - SIGMA).max() > 0.1


def test_ddim_deterministic_and_dpm_solver_1_equals_ddim():
    x_t = jax.random.normal(jax.random.key(5), (256, 2))

    def sampler(method, steps, **o):  # one compile per setting; the key is an argument
        return jax.jit(lambda key: samplers.sample(exact_eps(), SCHED, (256, 2), key, method, steps,
                                                   x_T=x_t, **o))

    ddim = sampler("ddim", 11, spacing="logsnr")
    a, b = np.asarray(ddim(jax.random.key(1))), np.asarray(ddim(jax.random.key(2)))
    np.testing.assert_array_equal(a, b)
    ddim_eta = sampler("ddim", 11, spacing="logsnr", eta=1.0)
    assert np.abs(a - np.asarray(ddim_eta(jax.random.key(1)))).max() > 0.1  # η = 1 injects noise
    # DPM-Solver-1 over the same 11 indices (10 steps, then x̂_0 at t = 0) is DDIM(η=0).
    d = np.asarray(sampler("dpm_solver", 10, order=1, denoise_to_zero=True)(jax.random.key(3)))
    np.testing.assert_allclose(d, a, rtol=2e-3, atol=2e-3)
    assert samplers.nfe("dpm_solver", 10, order=1, denoise_to_zero=True) == 11
    # Error against a fine solve shrinks with the order at equal step counts.
    ref = np.asarray(sampler("dpm_solver", 60, order=3, spacing="uniform")(jax.random.key(0)))
    errs = [np.sqrt(np.mean((np.asarray(sampler("dpm_solver", 6, order=k)(jax.random.key(0))) - ref) ** 2))
            for k in (1, 2, 3)]
    assert errs[0] > 1.5 * errs[1] > 6 * errs[2], errs


def test_timestep_spacings_and_option_errors():
    for spacing in samplers.SPACINGS:
        for n in (1, 2, 10, 150, 200):
            ts = samplers.timesteps(SCHED, n, spacing)
            assert len(ts) == n and ts[-1] == 199 and np.all(np.diff(ts) > 0) and ts[0] >= 0
            if n > 1:
                assert ts[0] == 0
    q = samplers.timesteps(SCHED, 10, "quadratic")
    assert q[1] < samplers.timesteps(SCHED, 10, "uniform")[1]
    lam = SCHED.log_snr[samplers.timesteps(SCHED, 8, "logsnr")]
    gaps = -np.diff(lam)
    assert gaps[1:-1].max() < 1.5 * gaps[1:-1].min()  # ~uniform in log-SNR away from the rounded ends
    with pytest.raises(ConfigError, match="valid: clip_x0, eta, spacing, x_T"):
        samplers.sample(exact_eps(), SCHED, (4, 2), jax.random.key(0), "ddim", 5, order=2)
    with pytest.raises(ConfigError, match="known: ddpm, ddim, dpm_solver, dpm_solver"):
        samplers.sample(exact_eps(), SCHED, (4, 2), jax.random.key(0), "heun", 5)
    with pytest.raises(ConfigError, match="spacing"):
        samplers.timesteps(SCHED, 5, "cubic")


def test_sampler_registry_validates_steps_and_typed_options():
    assert tuple(samplers.SAMPLERS) == ("ddpm", "ddim", "dpm_solver", "dpm_solver++", "unipc")
    assert samplers.check_options("ddpm", None, 200) == (200, {"spacing": "uniform", "variance": "beta_tilde",
                                                               "clip_x0": None, "x_T": None})
    assert samplers.check_options("ddim", 5, 200, eta=1)[1]["eta"] == 1.0  # an int is a valid float
    with pytest.raises(ConfigError, match=r"num_steps=201 .* valid 1\.\.200"):
        samplers.check_options("ddim", 201, 200)
    with pytest.raises(ConfigError, match=r"num_steps=200 .* valid 1\.\.199"):
        samplers.check_options("dpm_solver", 200, 200)  # num_steps + 1 solver ends
    for method, opts, match in [("dpm_solver", {"order": 4}, "order=4 .* one of 1, 2, 3"),
                                ("dpm_solver++", {"order": 2.5}, "must be an integer"),
                                ("ddim", {"eta": -0.5}, "eta=-0.5 .* >= 0.0"),
                                ("ddim", {"eta": "big"}, "must be a number"),
                                ("dpm_solver++", {"lower_order_final": 1}, "True or False"),
                                ("ddpm", {"variance": "large"}, "beta, beta_tilde, learned")]:
        with pytest.raises(ConfigError, match=match):
            samplers.check_options(method, 5, 200, **opts)


def test_ddpm_method_checks_its_sampler_when_built():
    from conftest import CONFIGS

    from gen_jax import load_config, registry

    tiny = {"model.arch": "mlp", "model.hidden": 8, "model.depth": 1, "model.num_timesteps": 50}
    registry.build(load_config(CONFIGS / "ddpm_digits.py", **tiny, **{"sampler.num_steps": 49}))
    with pytest.raises(ConfigError, match=r"sampler.num_steps=60 .* 50-step model: valid 1\.\.49"):
        registry.build(load_config(CONFIGS / "ddpm_digits.py", **tiny, **{"sampler.num_steps": 60}))
    with pytest.raises(ConfigError, match="order=5"):
        registry.build(load_config(CONFIGS / "ddpm_digits.py", **tiny, **{"sampler.order": 5}))
    with pytest.raises(ConfigError, match="sampler.name must be one of"):
        registry.build(load_config(CONFIGS / "ddpm_digits.py", **tiny, **{"sampler.name": "heun"}))


# -- UniPC on the exact ε of a Gaussian mixture, against a float64 RK4 solution -----------

MIX_SCHED = get_schedule("linear", 1000)
MIX_MEANS = np.array([[-0.6, 0.0], [0.5, 0.4], [0.3, -0.6]])
MIX_STDS = np.array([0.15, 0.2, 0.12])
MIX_W = np.array([0.5, 0.3, 0.2])


def _mixture_eps_np(x, ab):
    """ε*(x_t) of the mixture at signal fraction ᾱ (float64 numpy): √(1-ᾱ) Σ_k r_k (x - √ᾱ μ_k) / v_k."""
    var = ab * MIX_STDS**2 + 1 - ab
    diff = x[:, None, :] - np.sqrt(ab) * MIX_MEANS[None]
    logp = np.log(MIX_W) - np.sum(diff**2, -1) / (2 * var) - np.log(var)
    r = np.exp(logp - logp.max(1, keepdims=True))
    r /= r.sum(1, keepdims=True)
    return np.sqrt(1 - ab) * np.sum(r[..., None] * diff / var[None, :, None], 1)


def _mixture_eps(x, t):
    ab = jnp.asarray(MIX_SCHED.alphas_cumprod, jnp.float32)[t][:, None]
    var = ab * MIX_STDS**2 + 1 - ab
    diff = x[:, None, :] - jnp.sqrt(ab)[:, :, None] * MIX_MEANS[None]
    r = jax.nn.softmax(np.log(MIX_W) - jnp.sum(diff**2, -1) / (2 * var) - jnp.log(var), axis=1)
    return jnp.sqrt(1 - ab) * jnp.sum(r[..., None] * diff / var[..., None], 1)


def _ode_solution(x, steps=500):
    """The probability-flow ODE from index 999 to 0 by RK4 in u = log(σ/α): with x̄ = x/α,
    dx̄/du = e^u ε(α x̄) (its own error at 500 steps: ~2e-8)."""
    ab = MIX_SCHED.alphas_cumprod
    u0, u1 = (0.5 * np.log((1 - ab[t]) / ab[t]) for t in (999, 0))
    h = (u1 - u0) / steps

    def f(y, u):
        a = 1 / (1 + np.exp(2 * u))
        return np.exp(u) * _mixture_eps_np(np.sqrt(a) * y, a)

    y = x / np.sqrt(ab[999])
    for i in range(steps):
        u = u0 + i * h
        k1 = f(y, u)
        k2 = f(y + h / 2 * k1, u + h / 2)
        k3 = f(y + h / 2 * k2, u + h / 2)
        y = y + h / 6 * (k1 + 2 * k2 + 2 * k3 + f(y + h * k3, u + h))
    return y * np.sqrt(ab[0])


def test_unipc_converges_at_its_order_to_the_exact_ode_solution():
    """UniPC-3 (data prediction, bh2) against the exact ODE solution from the same x_T:
    error falls ~8x per doubling of steps (observed order >= 2.7) down to ~1e-4 at 80
    steps; UniPC-1 (DDIM + the UniC corrector) is second order where DDIM is first; UniP-2
    without the corrector is DPM-Solver++(2M) exactly."""
    x_t = np.random.default_rng(0).normal(size=(128, 2)).astype(np.float32)
    ref = _ode_solution(x_t.astype(np.float64))

    def err(method, n, **o):
        x = samplers.sample(_mixture_eps, MIX_SCHED, (128, 2), jax.random.key(0), method, n, x_T=x_t, **o)
        return float(np.sqrt(np.mean(np.sum((np.asarray(x, np.float64) - ref) ** 2, 1))))

    e3 = np.array([err("unipc", n) for n in (20, 40, 80)])
    order3 = np.log2(e3[:-1] / e3[1:])
    assert order3.min() > 2.7 and e3[-1] < 2e-4, (e3, order3)
    e1 = np.array([err("unipc", n, order=1) for n in (20, 40)])
    assert 1.7 < np.log2(e1[0] / e1[1]) < 2.4, e1
    def run(method, **o):
        return np.asarray(samplers.sample(_mixture_eps, MIX_SCHED, (128, 2), jax.random.key(0), method, 12,
                                          x_T=x_t, lower_order_final=False, **o))

    unip2, dpmpp_2m = run("unipc", order=2, corrector=False), run("dpm_solver++")
    np.testing.assert_allclose(unip2, dpmpp_2m, rtol=1e-5, atol=1e-6)
    assert samplers.nfe("unipc", 10) == 10 and samplers.nfe("unipc", 10, denoise_to_zero=True) == 11
