"""Score SDEs with the exact score of Gaussian data: perturbation kernels vs the
moment ODEs (scipy), samplers vs the data's moments, ODE likelihood vs the true
density, Hutchinson vs the exact trace, RK45 vs a known solution."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate, stats

from gen_jax.diffusion import ode
from gen_jax.diffusion import sde as sde_lib

MU = np.array([0.5, -0.3])
LCHOL = np.array([[0.6, 0.0], [0.3, 0.4]])
SIGMA = LCHOL @ LCHOL.T
VP = sde_lib.SDE("vp", t_eps=1e-3)


def exact_score(sde):
    """∇log p_t for data N(MU, SIGMA): -(m² Σ + s² I)^{-1} (x - m μ), via Σ's eigenbasis."""
    d, u = np.linalg.eigh(SIGMA)
    u, d, mu = jnp.asarray(u, jnp.float32), jnp.asarray(d, jnp.float32), jnp.asarray(MU, jnp.float32)

    def fn(x, t):
        m, s = sde.marginal(t)
        m, s = m[:, None], s[:, None]
        return -(((x - m * mu) @ u) / (m**2 * d + s**2)) @ u.T

    return fn


@pytest.mark.parametrize("kind", ["vp", "subvp", "ve"])
def test_perturbation_kernels_solve_the_moment_odes(kind):
    sde = sde_lib.SDE(kind, sigma_max=10.0)
    # For dx = f dt + g dw with linear f = a(t) x: dm/dt = a m, dv/dt = 2 a v + g²
    # (v = Var(x_t | x_0) from v(0) = 0; VE's kernel starts at σ_min², as Song et al. take it).
    def rhs(t, y):
        f, g = sde.drift_diffusion(jnp.ones((1, 1)), jnp.full((1,), t, jnp.float32))
        a = float(f[0, 0])
        return [a * y[0], 2 * a * y[1] + float(g[0]) ** 2]

    v0 = sde.sigma_min**2 if kind == "ve" else 0.0
    sol = integrate.solve_ivp(rhs, (0.0, 1.0), [1.0, v0], t_eval=[0.3, 1.0], rtol=1e-8, atol=1e-10)
    m, s = sde.marginal(jnp.asarray([0.3, 1.0], jnp.float32))
    np.testing.assert_allclose(m, sol.y[0], rtol=1e-4)
    np.testing.assert_allclose(np.asarray(s) ** 2, sol.y[1], rtol=2e-3)


def test_samplers_reproduce_gaussian_data():
    score = exact_score(VP)
    n = 3000
    runs = {
        "em": sde_lib.euler_maruyama(score, VP, (n, 2), jax.random.key(0), 100),
        "pc": sde_lib.predictor_corrector(score, VP, (n, 2), jax.random.key(1), 100),
        "rk4": sde_lib.ode_sample(score, VP, (n, 2), jax.random.key(2), "rk4", 25)[0],
    }
    for name, x in runs.items():
        x = np.asarray(x)
        assert np.abs(x.mean(0) - MU).max() < 0.04, name
        assert np.abs(np.cov(x.T) - SIGMA).max() < 0.05, name
    wrong = sde_lib.ode_sample(lambda x, t: 0.8 * score(x, t), VP, (n, 2), jax.random.key(2), "rk4", 25)[0]
    assert np.abs(np.cov(np.asarray(wrong).T) - SIGMA).max() > 0.1


def test_ode_likelihood_exact_and_hutchinson():
    score = exact_score(VP)
    xs = np.random.default_rng(0).multivariate_normal(MU, SIGMA, 4).astype(np.float32)
    m, s = (float(a) for a in VP.marginal(jnp.float32(VP.t_eps)))
    true = stats.multivariate_normal(m * MU, m**2 * SIGMA + s**2 * np.eye(2)).logpdf(xs)
    # Jitted (eagerly, each op outside the solver loops would compile on its own).
    lp, info = jax.jit(lambda x, k: sde_lib.ode_log_prob(score, VP, x, k, "exact", "rk45",
                                                         rtol=1e-5, atol=1e-5))(jnp.asarray(xs),
                                                                                jax.random.key(0))
    np.testing.assert_allclose(lp, true, atol=0.02)
    assert 10 < int(info["nfe"]) < 500
    # Hutchinson: unbiased, so the mean over many probes (one per copy) matches the exact trace.
    k = 256
    rep = jnp.asarray(np.repeat(xs[:1], k, 0))
    hutchinson = jax.jit(lambda x, k, probe: sde_lib.ode_log_prob(score, VP, x, k, probe, "heun",
                                                                  num_steps=10), static_argnums=2)
    for probe, key in (("rademacher", 1), ("gaussian", 2)):
        lp_h, _ = hutchinson(rep, jax.random.key(key), probe)
        se = float(lp_h.std()) / np.sqrt(k)
        assert abs(float(lp_h.mean()) - true[0]) < 4 * se + 0.03, probe
        assert float(lp_h.std()) > 0.05  # the single-probe estimates really vary


def test_rk45_and_rk4_on_a_known_ode():
    f = lambda y, t: {"a": -t * y["a"], "b": jnp.cos(t) * jnp.ones_like(y["b"])}  # noqa: E731
    y0 = {"a": jnp.array([1.0, 2.0]), "b": jnp.zeros(3)}
    y1, info = ode.odeint_rk45(f, y0, 0.0, 2.0, rtol=1e-7, atol=1e-8)
    np.testing.assert_allclose(y1["a"], np.exp(-2.0) * np.array([1.0, 2.0]), rtol=1e-5)
    np.testing.assert_allclose(y1["b"], np.sin(2.0), rtol=1e-5)
    attempts = int(info["steps"]) + int(info["rejected"])
    assert int(info["steps"]) >= 5 and int(info["nfe"]) == 1 + 6 * attempts
    back, _ = ode.odeint_rk45(f, y1, 2.0, 0.0, rtol=1e-7, atol=1e-8)  # integrating backwards
    np.testing.assert_allclose(back["a"], [1.0, 2.0], rtol=1e-4)
    y4 = ode.odeint_fixed(f, y0, 0.0, 2.0, 40, "rk4")
    np.testing.assert_allclose(y4["a"], y1["a"], rtol=1e-5)
    yh = ode.odeint_fixed(f, y0, 0.0, 2.0, 40, "heun")
    assert 1e-6 < abs(float(yh["a"][0]) - np.exp(-2.0)) < 1e-2  # second order: visibly less accurate
