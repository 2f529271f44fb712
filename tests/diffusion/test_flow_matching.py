"""Flow matching / rectified flow against independent references: the interpolant's
ends and its time derivative, the exact velocity field of Gaussian data (closed form)
through the Method's loss (its minimum is the conditional variance of ε - x_0), its
samplers (the ODE's closed-form endpoint; Euler first order, Heun second; adaptive
RK45) and its likelihood (the true Gaussian log-density; Hutchinson's estimator
unbiased), and a short "it learns" run on the moons (better than a Gaussian fit)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import CONFIGS
from scipy import integrate, stats

from gen_jax import load_config, registry
from gen_jax.data import load_split
from gen_jax.diffusion import flow_matching as fm
from gen_jax.errors import ConfigError
from gen_jax.metrics import energy_distance

TINY = {"model.hidden": 16, "model.depth": 1, "data.batch_size": 64, "sampler.num_steps": 8}
MU = np.array([0.5, -1.0])
COV = np.array([[0.5, 0.3], [0.3, 0.4]])  # a correlated Gaussian: its field's Jacobian is not diagonal


def exact_velocity(mu=MU, cov=COV):
    """v*(x, t) = E[ε - x_0 | x_t = x] for x_0 ~ N(μ, Σ), ε ~ N(0, I), x_t = (1 - t) x_0 + t ε:
    -μ + (t I - (1 - t) Σ) S_t⁻¹ (x - (1 - t) μ), S_t = (1 - t)² Σ + t² I."""
    mu, cov, eye = jnp.asarray(mu, jnp.float32), jnp.asarray(cov, jnp.float32), jnp.eye(2)

    def fn(x, t):
        t = t[:, None, None]
        s_t = (1 - t) ** 2 * cov + t**2 * eye
        c = t * eye - (1 - t) * cov
        m = (1 - t[:, :, 0]) * mu
        return -mu + jnp.einsum("bij,bj->bi", c @ jnp.linalg.inv(s_t), x - m)

    return fn


def test_interpolant_runs_from_data_at_0_to_noise_at_1_with_the_target_as_its_derivative():
    x0, x1 = jnp.asarray([[1.0, 2.0]]), jnp.asarray([[-3.0, 0.5]])
    np.testing.assert_allclose(fm.interpolate(x0, x1, jnp.zeros(1)), x0)
    np.testing.assert_allclose(fm.interpolate(x0, x1, jnp.ones(1)), x1)
    _, dxdt = jax.jvp(lambda t: fm.interpolate(x0, x1, t), (jnp.full((1,), 0.3),), (jnp.ones(1),))
    np.testing.assert_allclose(dxdt, fm.target_velocity(x0, x1), rtol=1e-6)


@pytest.fixture(scope="module")
def method_with_exact_velocity():
    """The flow_matching Method of configs/flow_matching_moons.py whose network is the exact v*."""
    cfg = load_config(CONFIGS / "flow_matching_moons.py", **{**TINY, "sampler.num_steps": 40,
                                                            "sampler.log_prob_solver": "heun"})
    method = registry.build(cfg)
    state = jax.jit(method.init)(jax.random.key(0), {"x": jnp.zeros((8, 2))})
    v = exact_velocity()
    method.velocity = lambda params, x, t, rng=None: v(x, t)
    return method, state


def test_loss_with_the_exact_velocity_is_the_conditional_variance(method_with_exact_velocity):
    """E‖v* - (ε - x_0)‖² per dimension = ½ E_t tr Cov(ε - x_0 | x_t), with
    Cov(ε - x_0 | x_t) = (I + Σ) - C S_t⁻¹ C, C = t I - (1 - t) Σ (quadrature over t);
    a velocity of the swapped path (noise at t = 0) loses much more."""
    method, state = method_with_exact_velocity

    def cond_var(t):
        s_t = (1 - t) ** 2 * COV + t**2 * np.eye(2)
        c = t * np.eye(2) - (1 - t) * COV
        return np.trace(np.eye(2) + COV - c @ np.linalg.solve(s_t, c)) / 2

    want = integrate.quad(cond_var, 0.0, 1.0)[0]
    x0 = jnp.asarray(np.random.default_rng(0).multivariate_normal(MU, COV, 40000), jnp.float32)
    loss, _ = jax.jit(lambda x: method.loss_fn(state.params, None, {"x": x}, jax.random.key(1), False))(x0)
    assert float(loss) == pytest.approx(want, rel=0.03)
    v = exact_velocity()
    swapped = method.velocity
    method.velocity = lambda params, x, t, rng=None: -v(x, 1.0 - t)  # the same flow, time reversed
    try:
        bad, _ = jax.jit(lambda x: method.loss_fn(state.params, None, {"x": x}, jax.random.key(1),
                                                  False))(x0)
    finally:
        method.velocity = swapped
    assert float(bad) > 1.5 * want


@pytest.fixture(scope="module")
def ode_errors():
    """Max error of each solver from fixed x_1 = z against the exact endpoint x_0 = μ + L z
    (the flow of v* is affine: S_t^{-1/2} (x - m_t) is constant along it, with
    S_0^{1/2} = Σ^{1/2} and S_1 = I)."""
    z = jax.random.normal(jax.random.key(2), (512, 2))
    w, u = np.linalg.eigh(COV)
    exact = MU + np.asarray(z) @ (u @ np.diag(np.sqrt(w)) @ u.T).T
    v = exact_velocity()

    def error(method, n):
        x, nfe = jax.jit(lambda z: fm.ode_sample(v, z, method, n, rtol=1e-5, atol=1e-5))(z)
        return float(np.abs(np.asarray(x) - exact).max()), int(nfe)

    return error


def test_euler_heun_and_rk45_reach_the_exact_endpoint(ode_errors):
    """Doubling the steps halves Euler's error and quarters Heun's; they report N and
    2N network calls; adaptive RK45 lands within 1e-3 and counts its own."""
    (e8, n_e8), (e16, _) = ode_errors("euler", 8), ode_errors("euler", 16)
    (h8, n_h8), (h16, _) = ode_errors("heun", 8), ode_errors("heun", 16)
    assert (n_e8, n_h8) == (8, 16)
    assert 1.6 < e8 / e16 < 2.5 and h8 / h16 > 3.3 and h16 < 0.02, (e8, e16, h8, h16)
    r, nfe = ode_errors("rk45", 1)
    assert r < 1e-3 and nfe > 6, (r, nfe)


def test_method_samples_and_log_prob_with_the_exact_velocity(method_with_exact_velocity):
    """Method.sample reproduces N(μ, Σ); log_prob (exact divergence, Heun) is the true
    log-density; one Rademacher probe per example averages to it (the Jacobian is not
    diagonal, so a single probe is not exact)."""
    method, state = method_with_exact_velocity
    x, nfe = jax.jit(lambda s, k: method.sample_and_nfe(s, k, 4000))(state, jax.random.key(3))
    assert int(nfe) == 2 * 40
    np.testing.assert_allclose(np.asarray(x).mean(0), MU, atol=0.04)
    np.testing.assert_allclose(np.cov(np.asarray(x).T), COV, atol=0.04)
    pts = jnp.asarray([[0.5, -1.0], [1.2, 0.1], [-0.5, -2.5]], jnp.float32)
    lp = jax.jit(method.log_prob)(state, pts, jax.random.key(4))
    np.testing.assert_allclose(lp, stats.multivariate_normal(MU, COV).logpdf(np.asarray(pts)), atol=0.01)
    method.config.unlock()
    method.config.sampler.divergence = "rademacher"
    try:
        many = jnp.repeat(pts[:1], 2000, axis=0)
        lp_h = np.asarray(jax.jit(method.log_prob)(state, many, jax.random.key(5)))
    finally:
        method.config.sampler.divergence = "exact"
        method.config.lock()
    assert lp_h.std() > 0.05  # each probe alone is off
    assert lp_h.mean() == pytest.approx(float(lp[0]), abs=4 * lp_h.std() / np.sqrt(len(lp_h)))
    with pytest.raises(ConfigError, match="unknown flow-matching sampler 'ode'"):
        method.sample(state, jax.random.key(0), 4, method="ode")


def test_flow_matching_learns_the_moons():
    """A few hundred steps of a small MLP: the exact ODE likelihood of held-out points
    beats the best Gaussian fit's, and Heun samples are closer to them (energy distance)."""
    cfg = load_config(CONFIGS / "flow_matching_moons.py", **{
        **TINY, "model.hidden": 64, "optim.learning_rate": 3e-3, "optim.schedule": "constant",
        "optim.warmup_steps": 0,
        "data.batch_size": 256, "train.ema_decay": 0.0, "sampler.num_steps": 16,
        "sampler.log_prob_solver": "heun"})
    method = registry.build(cfg)
    x, _ = load_split(cfg, "train")
    held, _ = load_split(cfg, "test")
    x, held = jnp.asarray(x[:4096]), np.asarray(held[:1000])
    state = jax.jit(method.init)(jax.random.key(0), {"x": x[:256]})

    @jax.jit
    def train_and_evaluate(state, held):
        def body(s, i):
            batch = {"x": jax.lax.dynamic_slice_in_dim(x, (i % 16) * 256, 256)}
            return method.train_step(s, batch, jax.random.fold_in(jax.random.key(1), i))[0], None
        state = jax.lax.scan(body, state, jnp.arange(300))[0]
        return method.sample(state, jax.random.key(2), 1000), method.log_prob(state, held, jax.random.key(3))

    samples, lp = (np.asarray(a) for a in train_and_evaluate(state, jnp.asarray(held)))
    xn = np.asarray(x)
    gauss = stats.multivariate_normal(xn.mean(0), np.cov(xn.T))
    assert lp.mean() > gauss.logpdf(held).mean() + 0.3, (lp.mean(), gauss.logpdf(held).mean())
    fit = gauss.rvs(1000, random_state=0)
    ed_model, ed_gauss = energy_distance(samples, held), energy_distance(fit, held)
    assert ed_model < 0.5 * ed_gauss, (ed_model, ed_gauss)
