"""Wiring of the diffusion Methods, each checked against an independent reference:
the hybrid loss's stop-gradient (closed-form gradient), the discretized decoder
(scipy), the importance-sampled estimators (their exact expectation), the
classifier-free-guidance label dropout (its rate), the last ancestral step (an
exact denoiser of a point mass), the score's sign (the exact score of Gaussian
data through the score_sde Method), and a short "it learns" run of DDPM."""

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
from gen_jax.diffusion import losses, samplers
from gen_jax.diffusion.schedules import get_schedule

TINY = {"model.arch": "mlp", "model.hidden": 16, "model.depth": 1, "model.num_timesteps": 4,
        "model.dropout": 0.0, "data.batch_size": 16, "sampler.num_steps": 3}


def _digits(n: int = 16):
    cfg = load_config(CONFIGS / "ddpm_digits.py", **TINY)
    x, _ = load_split(cfg, "train")
    return jnp.asarray(x[:n])


def test_hybrid_loss_trains_the_mean_by_l_simple_only():
    """L_hybrid = L_simple + λ L_vlb with the mean frozen inside L_vlb: the gradient
    with respect to the mean output is exactly that of L_simple (closed form,
    x0-prediction: 2 (x̂_0 - x_0) / (B D)), while the variance output gets one."""
    cfg = load_config(CONFIGS / "ddpm_digits.py", **{**TINY, "model.pred": "x0", "model.variance": "learned",
                                                    "model.loss": "hybrid", "model.vlb_weight": 1.0})
    method = registry.build(cfg)
    x = _digits()
    # The network replaced by free outputs: the gradient reaches them directly.
    method._apply = lambda params, xt, t, y, rng=None: (params["out"], params["v"])
    rng = np.random.default_rng(0)
    params = {"out": jnp.asarray(rng.normal(size=x.shape), jnp.float32),
              "v": jnp.asarray(rng.uniform(-0.5, 0.5, x.shape), jnp.float32)}
    grads = jax.jit(jax.grad(lambda p: method._losses(p, {"x": x}, jax.random.key(1), None, True)[0]))(params)
    b, d = x.shape[0], int(np.prod(x.shape[1:]))
    np.testing.assert_allclose(grads["out"], 2 * (params["out"] - x) / (b * d), rtol=1e-5, atol=1e-9)
    assert float(jnp.abs(grads["v"]).max()) > 0


def test_discretized_decoder_uses_half_the_log_variance():
    """L_0's decoder p(x_0 | x_1) = N(mean, e^logvar) integrated over each of the 17
    bins of digits in (-1, 1), edge bins open: against scipy."""
    decoder = losses.make_decoder("discrete", (-1.0, 1.0), 17)
    levels = np.linspace(-1.0, 1.0, 17)
    mean, logvar = 0.2, np.log(0.15**2)
    got = np.exp(np.asarray(jax.jit(decoder)(jnp.asarray(levels), jnp.float32(mean), jnp.float32(logvar))))
    g = stats.norm(mean, 0.15)
    edges = np.concatenate([[-np.inf], (levels[:-1] + levels[1:]) / 2, [np.inf]])
    np.testing.assert_allclose(got, g.cdf(edges[1:]) - g.cdf(edges[:-1]), rtol=1e-4, atol=1e-7)


def test_importance_sampled_estimates_are_unbiased(monkeypatch):
    """With timesteps drawn from p (not uniform), the weighted loss and the one-term
    -VLB estimate have exactly the expectation of their uniform-t versions:
    Σ_k p_k E[· | t = k] = (1/T) Σ_k E_uniform[· | t = k]. Each t = k is forced in
    turn, with the same noise, and its weight 1 / (T p_k)."""
    cfg = load_config(CONFIGS / "ddpm_digits.py", **{**TINY, "model.loss": "vlb",
                                                    "model.timestep_sampler": "importance"})
    method = registry.build(cfg)
    x = _digits()
    state = jax.jit(method.init)(jax.random.key(0), {"x": x})
    big_t, p = 4, np.array([0.1, 0.2, 0.3, 0.4])
    forced = {}
    monkeypatch.setattr(losses, "sample_timesteps", lambda rng, b, n, history: (
        jnp.full((b,), forced["t"], jnp.int32), jnp.full((b,), forced["w"], jnp.float32)))

    @jax.jit
    @jax.vmap
    def estimates(k, w):
        forced.update(t=k, w=w)  # read while tracing: t = k, weight w, the same noise
        loss, metrics, _, _ = method._losses(state.params, {"x": x}, jax.random.key(3), state.model_state,
                                             True)
        return jnp.stack([loss, metrics["vlb_bpd_est"]])

    ks = jnp.arange(big_t)
    weighted = np.asarray(estimates(ks, jnp.asarray(1.0 / (big_t * p), jnp.float32)))
    uniform = np.asarray(estimates(ks, jnp.ones(big_t)))
    np.testing.assert_allclose(p @ weighted, uniform.mean(0), rtol=1e-4)  # loss, -VLB estimate
    assert np.ptp(uniform[:, 0]) > 1e-3  # the terms differ by t, so dropped weights would show


def test_label_dropout_rate_of_classifier_free_guidance(monkeypatch):
    """Training replaces a label by the null class with probability cfg_dropout (and
    keeps the rest); evaluation never drops."""
    cfg = load_config(CONFIGS / "ddpm_cfg_digits.py", **{**TINY, "model.cfg_dropout": 0.2})
    method = registry.build(cfg)
    seen = []

    def fake_apply(params, xt, t, y, rng=None):
        seen.append(y)
        return jnp.zeros_like(xt) + 0.0 * params["w"], None

    monkeypatch.setattr(method, "_apply", fake_apply)
    n = 4000
    labels = jnp.asarray(np.arange(n) % 10, jnp.int32)
    batch = {"x": jnp.zeros((n, 8, 8, 1)), "y": labels}

    @functools.partial(jax.jit, static_argnums=0)  # one program per mode (eagerly: an op each)
    def labels_seen(train):
        method._losses({"w": jnp.float32(1.0)}, batch, jax.random.key(0), None, train)
        return seen[-1]

    y = np.asarray(labels_seen(True))
    dropped = y == 10
    assert dropped.mean() == pytest.approx(0.2, abs=0.02)
    np.testing.assert_array_equal(y[~dropped], np.asarray(labels)[~dropped])
    np.testing.assert_array_equal(labels_seen(False), labels)


@pytest.mark.parametrize("num_steps,variance", [(50, "beta"), (8, "beta_tilde")])
def test_ancestral_sampling_of_a_point_mass_ends_on_the_point(num_steps, variance):
    """With the exact ε of a point mass x*, x̂_0 = x* at every step and the last
    step (t = 0) must return its mean, x*, with no noise added."""
    sched = get_schedule("linear", 50)
    ab = jnp.asarray(sched.alphas_cumprod, jnp.float32)
    star = jnp.asarray([0.3, -0.5, 0.9], jnp.float32)

    def eps(xt, t):
        a = ab[t][:, None]
        return (xt - jnp.sqrt(a) * star) / jnp.sqrt(1 - a)

    x = jax.jit(lambda k: samplers.sample(eps, sched, (64, 3), k, "ddpm", num_steps, variance=variance))(
        jax.random.key(0))
    np.testing.assert_allclose(x, np.broadcast_to(star, x.shape), atol=1e-4)


def test_score_sde_method_samples_and_density_of_gaussian_data():
    """The Method's score is -ε̂ / s(t): with the exact ε of N(μ, σ²) data behind it,
    the probability-flow ODE's samples have the data's moments and its log_prob is
    the true log-density (a flipped score sends the samples away)."""
    cfg = load_config(CONFIGS / "sde_moons.py", **{"model.hidden": 8, "model.depth": 1,
                                                   "sampler.name": "ode", "sampler.ode_solver": "rk4",
                                                   "sampler.num_steps": 40, "sampler.divergence": "exact"})
    method = registry.build(cfg)
    x, _ = load_split(cfg, "train")
    state = jax.jit(method.init)(jax.random.key(0), {"x": jnp.asarray(x[:8])})
    mu, var = jnp.asarray([0.5, -1.0]), jnp.asarray([0.3, 1.5]) ** 2

    def exact_eps(params, xt, t, rng=None):
        m, s = method.sde.marginal(t)
        m, s = m[:, None], s[:, None]
        return s * (xt - m * mu) / (m**2 * var + s**2)

    method.eps_net = exact_eps
    draws = jax.jit(lambda s, k: method.sample(s, k, 2000))(state, jax.random.key(1))
    np.testing.assert_allclose(draws.mean(0), mu, atol=0.06)
    np.testing.assert_allclose(draws.var(0), var, rtol=0.1)
    pts = jnp.asarray([[0.5, -1.0], [0.9, 0.0], [0.0, -3.0]])
    lp = jax.jit(method.log_prob)(state, pts, jax.random.key(2))
    want = stats.norm(np.asarray(mu), np.sqrt(np.asarray(var))).logpdf(np.asarray(pts)).sum(1)
    np.testing.assert_allclose(lp, want, atol=0.02)


def test_ddpm_learns_digits():
    """A few dozen steps of a tiny MLP denoiser bring the ε-MSE well below its
    starting value of about 1 (an untrained ε̂ ≈ 0)."""
    cfg = load_config(CONFIGS / "ddpm_digits.py", **{**TINY, "model.hidden": 64, "model.num_timesteps": 50,
                                                    "optim.learning_rate": 3e-3, "optim.schedule": "constant",
                                                    "optim.warmup_steps": 0, "data.batch_size": 64})
    method = registry.build(cfg)
    x, _ = load_split(cfg, "train")
    x = jnp.asarray(x[:512])
    state = jax.jit(method.init)(jax.random.key(0), {"x": x[:64]})

    @jax.jit
    def train(state):
        def body(s, i):
            s, m = method.train_step(s, {"x": jax.lax.dynamic_slice_in_dim(x, (i % 8) * 64, 64)},
                                     jax.random.key(i))
            return s, m["mse"]
        return jax.lax.scan(body, state, jnp.arange(60))[1]

    mse = np.asarray(train(state))
    assert mse[:5].mean() > 0.8 and mse[-10:].mean() < 0.6 * mse[:5].mean(), mse
