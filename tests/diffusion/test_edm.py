"""EDM (Karras et al., 2022) against independent references: the preconditioning's
unit-variance identities, the ρ-schedule's spacing, the samplers with the exact
denoiser of Gaussian data (the probability-flow ODE's closed-form solution, Heun's
second order) and of a Gaussian mixture (moments, with and without churn), the
Method's loss with the exact denoiser (λ(σ) E‖D* - y‖² = 1 at every σ), and a short
"it learns" run on the moons."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import CONFIGS
from scipy import stats

from gen_jax import load_config, registry
from gen_jax.data import load_split
from gen_jax.diffusion import edm
from gen_jax.errors import ConfigError
from gen_jax.metrics import energy_distance

TINY = {"model.hidden": 16, "model.depth": 1, "data.batch_size": 64, "sampler.num_steps": 8}


def gaussian_denoiser(mu, s):
    """D*(x; σ) = E[y | y + σ n = x] for y ~ N(mu, diag s²)."""
    mu, s2 = jnp.asarray(mu), jnp.asarray(s) ** 2

    def fn(x, sigma):
        return mu + s2 / (s2 + sigma[:, None] ** 2) * (x - mu)

    return fn


def mixture_denoiser(means, std, weights):
    """D*(x; σ) of Σ_k w_k N(μ_k, std² I): the posterior-weighted per-component denoisers."""
    mu, logw = jnp.asarray(means), jnp.log(jnp.asarray(weights))

    def fn(x, sigma):
        var = std**2 + sigma[:, None] ** 2                          # (B, 1)
        diff = x[:, None, :] - mu[None]                              # (B, K, 2)
        r = jax.nn.softmax(logw - jnp.sum(diff**2, -1) / (2 * var), axis=1)
        per = mu[None] + (std**2 / var)[:, :, None] * diff
        return jnp.sum(r[..., None] * per, axis=1)

    return fn


MEANS = np.array([[1.0, 0.0], [-0.5, 0.8], [-0.5, -0.8]])
WEIGHTS = np.array([0.5, 0.3, 0.2])
STD = 0.2


def mixture_draws(n, rng):
    comp = rng.choice(3, n, p=WEIGHTS)
    return MEANS[comp] + STD * rng.normal(size=(n, 2))


def test_preconditioning_gives_unit_variance_input_and_target():
    """Table 1: for y ~ N(0, σ_d²) and x = y + σ n, c_in x and the effective target
    F = (y - c_skip x) / c_out have unit variance at every σ, λ = 1 / c_out², and
    D = c_skip x + c_out F tends to the identity as σ -> 0 and to c_out F = σ_d F as σ -> ∞."""
    sd = 0.7
    sigma = jnp.asarray([1e-3, 0.05, 0.5, 0.7, 2.0, 80.0])
    c_skip, c_out, c_in, c_noise = edm.precondition(sigma, sd)
    s2 = np.asarray(sigma, np.float64) ** 2
    np.testing.assert_allclose(np.asarray(c_in) ** 2 * (sd**2 + s2), 1.0, rtol=1e-5)
    c_skip, c_out = np.asarray(c_skip, np.float64), np.asarray(c_out, np.float64)
    target_var = ((1 - c_skip) ** 2 * sd**2 + c_skip**2 * s2) / c_out**2
    np.testing.assert_allclose(target_var, 1.0, rtol=1e-4)
    np.testing.assert_allclose(edm.loss_weight(sigma, sd) * c_out**2, 1.0, rtol=1e-5)
    np.testing.assert_allclose(c_noise, np.log(np.asarray(sigma)) / 4, rtol=1e-6)
    # At σ = σ_d: c_skip = 1/2, c_out = σ_d / √2.
    half = edm.precondition(jnp.float32(sd), sd)
    np.testing.assert_allclose([half[0], half[1]], [0.5, sd / np.sqrt(2)], rtol=1e-6)
    lo, hi = edm.precondition(jnp.float32(1e-5), sd), edm.precondition(jnp.float32(1e5), sd)
    np.testing.assert_allclose([lo[0], lo[1], hi[0], hi[1]], [1.0, 0.0, 0.0, sd], atol=1e-4)


def test_rho_schedule():
    """σ_0 = σ_max, σ_{N-1} = σ_min, σ_N = 0, evenly spaced in σ^{1/ρ}; ρ = 1 is linear."""
    sig = edm.sigma_steps(10, 0.002, 80.0, 7.0)
    assert len(sig) == 11 and sig[-1] == 0.0
    np.testing.assert_allclose([sig[0], sig[-2]], [80.0, 0.002], rtol=1e-12)
    np.testing.assert_allclose(np.diff(sig[:-1] ** (1 / 7), 2), 0.0, atol=1e-12)
    assert np.all(np.diff(sig) < 0)
    np.testing.assert_allclose(edm.sigma_steps(5, 1.0, 5.0, 1.0)[:-1], [5, 4, 3, 2, 1])


@pytest.fixture(scope="module")
def gaussian_ode():
    """Samples of N(μ, diag s²) from fixed x_N by the deterministic samplers, with the
    exact ODE endpoint: dx/dσ = (x - D*)/σ = σ (x - μ) / (s² + σ²), so x - μ ∝ √(s² + σ²)."""
    mu, s, smax = jnp.asarray([0.5, -1.0]), jnp.asarray([0.3, 1.5]), 80.0
    z = jax.random.normal(jax.random.key(0), (512, 2))
    exact = mu + (smax * z - mu) * s / jnp.sqrt(s**2 + smax**2)
    den = gaussian_denoiser(mu, s)

    def error(method, n):
        spec = edm.SAMPLERS[method]
        sig = edm.sigma_steps(n, 0.002, smax, 7.0)
        x = jax.jit(lambda z: edm.edm_sample(den, z.shape, jax.random.key(1), sig, heun=spec.heun,
                                             x_init=smax * z))(z)
        return float(jnp.abs(x - exact).max())

    return error


def test_heun_converges_to_the_exact_ode_solution_at_second_order(gaussian_ode):
    """Doubling N cuts Heun's error about 4x (Euler's 2x) and Heun at N = 32 is within 0.1."""
    heun16, heun32 = gaussian_ode("heun", 16), gaussian_ode("heun", 32)
    euler16, euler32 = gaussian_ode("euler", 16), gaussian_ode("euler", 32)
    assert heun32 < 0.1 and heun16 / heun32 > 3.5, (heun16, heun32)
    assert 1.6 < euler16 / euler32 < 2.5 and heun32 < euler32 / 4, (euler16, euler32)


@pytest.fixture(scope="module")
def mixture_samples():
    """Deterministic Heun and churned samples of the mixture from its exact denoiser."""
    den = mixture_denoiser(MEANS, STD, WEIGHTS)
    sig = edm.sigma_steps(32, 0.002, 80.0, 7.0)

    @functools.partial(jax.jit, static_argnums=(1, 2))
    def run(key, churn, s_max):
        gam = None if churn == 0 else edm.churn_gammas(sig, churn, 0.01, s_max)
        return edm.edm_sample(den, (4000, 2), key, sig, gam)

    return {"heun": np.asarray(run(jax.random.key(2), 0, np.inf)),
            "churn": np.asarray(run(jax.random.key(2), 60.0, np.inf)),
            "empty_window": np.asarray(run(jax.random.key(2), 60.0, 0.001))}


@pytest.mark.parametrize("kind", ["heun", "churn"])
def test_samplers_with_the_exact_denoiser_draw_the_mixture(mixture_samples, kind):
    """Mean and covariance as the mixture's; each component's share; and a KS test of
    the projection on the first axis against true draws."""
    x = mixture_samples[kind]
    ref = mixture_draws(40000, np.random.default_rng(0))
    np.testing.assert_allclose(x.mean(0), ref.mean(0), atol=0.03)
    np.testing.assert_allclose(np.cov(x.T), np.cov(ref.T), atol=0.04)
    share = np.bincount(np.argmin(((x[:, None] - MEANS[None]) ** 2).sum(-1), 1), minlength=3) / len(x)
    np.testing.assert_allclose(share, WEIGHTS, atol=0.03)
    assert stats.ks_2samp(x[:, 0], ref[:, 0]).pvalue > 1e-3


def test_churn_acts_only_inside_its_window(mixture_samples):
    """S_churn re-noises the path (the samples move), except when no σ_i lies in
    [S_min, S_max] (then the deterministic samples come back exactly)."""
    assert np.abs(mixture_samples["churn"] - mixture_samples["heun"]).mean() > 0.05
    np.testing.assert_array_equal(mixture_samples["empty_window"], mixture_samples["heun"])


@pytest.fixture(scope="module")
def method_with_exact_denoiser():
    """The EDM Method of configs/edm_moons.py whose network is replaced by the exact F* of
    N(μ, s² I) data with σ_data = s: F* = (D* - c_skip x) / c_out, read back from the
    network's own inputs (x_in = c_in x, c_noise = ¼ ln σ)."""
    s, mu = 0.8, jnp.asarray([0.6, -0.4])
    cfg = load_config(CONFIGS / "edm_moons.py", **{**TINY, "model.sigma_data": s, "sampler.num_steps": 24})
    method = registry.build(cfg)
    state = jax.jit(method.init)(jax.random.key(0), {"x": jnp.zeros((8, 2))})
    seen = []

    def exact_raw_net(params, x_in, c_noise, rng=None):
        sigma = jnp.exp(4.0 * c_noise)[:, None]
        x = x_in * jnp.sqrt(sigma**2 + s**2)
        d = mu + s**2 / (s**2 + sigma**2) * (x - mu)
        c_skip, c_out = s**2 / (sigma**2 + s**2), sigma * s / jnp.sqrt(sigma**2 + s**2)
        seen.append(sigma[:, 0])
        return (d - c_skip * x) / c_out

    method.raw_net = exact_raw_net
    return method, state, mu, s, seen


def test_method_loss_with_the_exact_denoiser_is_one(method_with_exact_denoiser):
    """λ(σ) E‖D* - y‖² per dimension = λ(σ) σ² s² / (σ² + s²) = 1 at every σ (and more
    for a denoiser that ignores μ); training's ln σ ~ N(P_mean, P_std²)."""
    method, state, mu, s, seen = method_with_exact_denoiser
    y = mu + s * jax.random.normal(jax.random.key(3), (20000, 2))
    loss, (metrics, _) = method.loss_fn(state.params, None, {"x": y}, jax.random.key(4), False)
    assert float(loss) == pytest.approx(1.0, abs=0.03)
    ln_sigma = np.log(np.asarray(seen[-1]))
    cfg = method.config.model
    assert ln_sigma.mean() == pytest.approx(cfg.p_mean, abs=0.03)
    assert ln_sigma.std() == pytest.approx(cfg.p_std, abs=0.03)
    shifted, _ = method.loss_fn(state.params, None, {"x": y + 1.0}, jax.random.key(4), False)
    assert float(shifted) > 1.3


def test_method_samples_its_exact_denoiser(method_with_exact_denoiser):
    """Method.sample through the preconditioned denoiser reproduces N(μ, s²) and reports
    2N - 1 network calls; a bad sampler or option is a ConfigError."""
    method, state, mu, s, _ = method_with_exact_denoiser
    x, nfe = method.sample_and_nfe(state, jax.random.key(5), 4000)
    assert nfe == 2 * 24 - 1
    np.testing.assert_allclose(np.asarray(x).mean(0), mu, atol=0.04)
    np.testing.assert_allclose(np.asarray(x).std(0), s, rtol=0.04)
    with pytest.raises(ConfigError, match="unknown EDM sampler 'ddim'"):
        method.sample(state, jax.random.key(0), 4, method="ddim")
    with pytest.raises(ConfigError, match="unknown options.*'s_churn'"):
        method.sample(state, jax.random.key(0), 4, method="heun", s_churn=1.0)


def test_edm_learns_the_moons():
    """A few hundred steps of a small MLP: Heun samples are closer to the moons (energy
    distance to held-out points) than the best Gaussian fit is."""
    cfg = load_config(CONFIGS / "edm_moons.py", **{**TINY, "model.hidden": 64, "optim.schedule": "constant",
                                                  "optim.warmup_steps": 0, "data.batch_size": 256,
                                                  "train.ema_decay": 0.0, "sampler.num_steps": 16})
    method = registry.build(cfg)
    x, _ = load_split(cfg, "train")
    held, _ = load_split(cfg, "test")
    x = jnp.asarray(x[:4096])
    state = jax.jit(method.init)(jax.random.key(0), {"x": x[:256]})

    @jax.jit
    def train_and_sample(state):
        def body(s, i):
            batch = {"x": jax.lax.dynamic_slice_in_dim(x, (i % 16) * 256, 256)}
            return method.train_step(s, batch, jax.random.fold_in(jax.random.key(1), i))[0], None
        state = jax.lax.scan(body, state, jnp.arange(600))[0]
        return method.sample(state, jax.random.key(2), 1000)

    samples = np.asarray(train_and_sample(state))
    held = np.asarray(held[:1000])
    rng = np.random.default_rng(0)
    fit = rng.multivariate_normal(np.asarray(x).mean(0), np.cov(np.asarray(x).T), 1000)
    ed_model, ed_gauss = energy_distance(samples, held), energy_distance(fit, held)
    assert ed_model < 0.5 * ed_gauss, (ed_model, ed_gauss)
