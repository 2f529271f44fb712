"""VAE: ELBO terms, KL and IWAE checked against independent references."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import CONFIGS, tiny_vae_config
from scipy import stats

from gen_jax import load_config, registry
from gen_jax.autoencoders.vae import VAENet, bernoulli_log_prob, gaussian_kl, gaussian_log_prob
from gen_jax.data import load_split
from gen_jax.errors import ConfigError, DataError


def _train(method, config, steps, seed=0):
    x, _ = load_split(config, "train")
    bs = config.data.batch_size
    state = jax.jit(method.init)(jax.random.key(seed), {"x": x[:bs]})
    step = jax.jit(method.train_step)
    for i in range(steps):
        j = (i * bs) % (len(x) - bs)
        state, _ = step(state, {"x": x[j:j + bs]}, jax.random.key(100 + i))
    return state


def test_kl_matches_closed_form_and_monte_carlo():
    rng = np.random.default_rng(0)
    mean = rng.normal(size=(3, 5))
    logvar = rng.normal(size=(3, 5)) * 0.5
    got = np.asarray(gaussian_kl(jnp.asarray(mean), jnp.asarray(logvar)))
    for i in range(3):
        # General multivariate-normal KL with full matrices (trace / log-det form).
        cov = np.diag(np.exp(logvar[i]))
        want = 0.5 * (np.trace(cov) + mean[i] @ mean[i] - 5 - np.linalg.slogdet(cov)[1])
        assert got[i] == pytest.approx(want, rel=1e-5)
    # Monte Carlo E_q[log q - log p] for the first row.
    std = np.exp(0.5 * logvar[0])
    z = mean[0] + std * rng.normal(size=(400_000, 5))
    mc = (stats.norm.logpdf(z, mean[0], std) - stats.norm.logpdf(z)).sum(1).mean()
    assert got[0] == pytest.approx(mc, abs=0.02)


def test_decoder_log_probs_match_scipy():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(4, 3, 2, 1)).astype(np.float32)
    mean = rng.normal(size=x.shape).astype(np.float32)
    log_std = (0.3 * rng.normal(size=x.shape)).astype(np.float32)
    want = stats.norm.logpdf(x, mean, np.exp(log_std)).reshape(4, -1).sum(1)
    np.testing.assert_allclose(gaussian_log_prob(x, mean, log_std), want, rtol=1e-5)
    b = (rng.random(size=(4, 6)) < 0.5).astype(np.float32)
    logits = rng.normal(size=(4, 6)).astype(np.float32)
    want = stats.bernoulli.logpmf(b, 1 / (1 + np.exp(-logits))).sum(1)
    np.testing.assert_allclose(bernoulli_log_prob(b, logits), want, rtol=1e-5)


def test_elbo_terms_against_hand_computation():
    """recon, kl and nelbo of one batch recomputed with numpy/scipy from the
    encoder/decoder outputs and the same reparameterization noise."""
    config = tiny_vae_config()
    vae = registry.build(config)
    x, _ = load_split(config, "val")
    x = x[:5]
    # Jitted (eagerly, each op would compile on its own).
    state = jax.jit(vae.init)(jax.random.key(0), {"x": x})
    rng = jax.random.key(7)
    metrics = jax.jit(vae.eval_step)(state, {"x": x}, rng)
    p = {"params": state.eval_params}
    apply = jax.jit(vae.net.apply, static_argnames="method")
    mean, logvar = (np.asarray(a, np.float64) for a in apply(p, x, method=VAENet.encode))
    eps = np.asarray(jax.random.normal(rng, mean.shape), np.float64)
    z = mean + np.exp(0.5 * logvar) * eps
    out, log_std = (np.asarray(a, np.float64)
                    for a in apply(p, jnp.asarray(z, jnp.float32), method=VAENet.decode))
    recon = -stats.norm.logpdf(x, out, np.exp(log_std)).reshape(5, -1).sum(1).mean()
    kl = np.mean(0.5 * (mean**2 + np.exp(logvar) - 1 - logvar).sum(1))
    offset = 64 * math.log(1.0 / 17)  # dequantized 17-level pixels scaled to [0, 1]
    assert float(metrics["recon"]) == pytest.approx(recon, rel=1e-4)
    assert float(metrics["kl"]) == pytest.approx(kl, rel=1e-4)
    assert float(metrics["nelbo"]) == pytest.approx(recon + kl - offset, rel=1e-4)
    assert float(metrics["nelbo_bpd"]) == pytest.approx((recon + kl - offset) / (64 * math.log(2)),
                                                        rel=1e-4)


def test_beta_weights_only_the_kl_in_the_loss():
    config = tiny_vae_config(**{"model.beta": 4.0})
    vae = registry.build(config)
    x, _ = load_split(config, "val")
    state = jax.jit(vae.init)(jax.random.key(0), {"x": x[:8]})
    m = jax.jit(vae.eval_step)(state, {"x": x[:8]}, jax.random.key(1))
    assert float(m["loss"]) == pytest.approx(float(m["recon"] + 4.0 * m["kl"]), rel=1e-5)


def test_iwae_bound_is_above_elbo_and_grows_with_k():
    config = tiny_vae_config()
    vae = registry.build(config)
    state = _train(vae, config, 150)
    x, _ = load_split(config, "test")
    x = jnp.asarray(x[:64])
    lp = jax.jit(vae.log_prob, static_argnames=("num_samples", "chunk_size"))
    means = {}
    for k in (1, 10, 100):
        runs = [lp(state, x, jax.random.key(s), num_samples=k, chunk_size=min(k, 50))
                for s in range(4)]
        means[k] = float(np.mean(runs))
    eval_step = jax.jit(vae.eval_step)
    nelbo = np.mean([float(eval_step(state, {"x": x}, jax.random.key(50 + s))["nelbo"])
                     for s in range(8)])
    # K = 1 is an unbiased estimate of the ELBO itself.
    assert means[1] == pytest.approx(-nelbo, abs=1.0)
    assert means[10] > means[1] + 0.5
    assert means[100] > means[10] + 0.05


def test_iwae_converges_to_the_exact_likelihood_of_a_linear_gaussian_vae():
    """With linear encoder/decoder and fixed decoder noise, p(x) = N(b, W W^T + s^2 I)
    is known in closed form: the ELBO lies below it and IWAE-K approaches it."""
    config = load_config(CONFIGS / "vae_moons.py", **{
        "model.hidden_sizes": (), "model.latent_dim": 1, "model.decoder_std": "fixed",
        "model.fixed_std": 0.5, "data.num_train": 2048, "data.num_eval": 256,
        "data.batch_size": 256, "train.ema_decay": 0.0, "optim.learning_rate": 1e-2})
    vae = registry.build(config)
    state = _train(vae, config, 300)
    dec = state.params["dec"]["Dense_0"]
    w, b = np.asarray(dec["kernel"], np.float64).T, np.asarray(dec["bias"], np.float64)
    x, _ = load_split(config, "test")
    exact = stats.multivariate_normal(b, w @ w.T + 0.25 * np.eye(2)).logpdf(x).mean()
    eval_step = jax.jit(vae.eval_step)
    elbo = -np.mean([float(eval_step(state, {"x": x}, jax.random.key(s))["nelbo"])
                     for s in range(20)])
    lp = jax.jit(vae.log_prob, static_argnames=("num_samples", "chunk_size"))
    iwae = float(jnp.mean(lp(state, jnp.asarray(x), jax.random.key(3),
                             num_samples=2000, chunk_size=500)))
    assert elbo < exact
    assert iwae == pytest.approx(exact, abs=0.01)
    assert iwae > elbo


def test_sample_reconstruct_interpolate_shapes_and_range():
    config = tiny_vae_config()
    vae = registry.build(config)
    x, _ = load_split(config, "val")
    state = jax.jit(vae.init)(jax.random.key(0), {"x": x[:8]})
    sample = jax.jit(vae.sample, static_argnums=2, static_argnames="mean")
    reconstruct = jax.jit(vae.reconstruct)
    interpolate = jax.jit(vae.interpolate, static_argnames=("num", "spherical"))
    s = sample(state, jax.random.key(1), 5)
    assert s.shape == (5, 8, 8, 1) and s.dtype == jnp.float32
    assert float(s.min()) >= 0.0 and float(s.max()) <= 1.0
    noisy = sample(state, jax.random.key(1), 5, mean=False)
    assert not np.allclose(noisy, s)
    assert reconstruct(state, x[:3]).shape == (3, 8, 8, 1)
    path = interpolate(state, x[0], x[1], num=6)
    assert path.shape == (6, 8, 8, 1)
    np.testing.assert_allclose(path[0], reconstruct(state, x[:1])[0], atol=1e-5)
    sph = interpolate(state, x[0], x[1], num=6, spherical=True)
    np.testing.assert_allclose(sph[-1], reconstruct(state, x[1:2])[0], atol=1e-4)


def test_bernoulli_decoder_on_binarized_digits_trains():
    config = tiny_vae_config(**{"model.decoder": "bernoulli", "data.dequantize": "none",
                                "data.binarize": "stochastic"})
    vae = registry.build(config)
    x, _ = load_split(config, "train")
    assert set(np.unique(x)) <= {0.0, 1.0}
    state = jax.jit(vae.init)(jax.random.key(0), {"x": x[:32]})
    eval_step = jax.jit(vae.eval_step)
    before = float(eval_step(state, {"x": x[:256]}, jax.random.key(0))["nelbo"])
    state = _train(vae, config, 150)
    after = float(eval_step(state, {"x": x[:256]}, jax.random.key(0))["nelbo"])
    # Starts at about 64 log 2 (a fair coin per pixel); a real bound on binary data after.
    assert before == pytest.approx(64 * math.log(2), abs=3.0)
    assert after < 30.0


@pytest.mark.parametrize("overrides, match", [
    ({"model.decoder": "bernoulli"}, "binarize"),
    ({"data.dequantize": "none"}, "dequantize"),
    ({"model.decoder": "poisson"}, "model.decoder"),
    ({"model.arch": "resnet"}, "model.arch"),
    ({"model.upsample": "bicubic"}, "upsampling"),
])
def test_bad_model_configs_raise_config_error(overrides, match):
    with pytest.raises(ConfigError, match=match):
        vae = registry.build(tiny_vae_config(**overrides))
        x, _ = load_split(vae.config, "val")
        jax.jit(vae.init)(jax.random.key(0), {"x": x[:4]})


def test_wrong_image_shape_is_a_clear_error():
    vae = registry.build(tiny_vae_config())
    with pytest.raises(DataError, match=r"shape \(28, 28, 1\), but 'digits' examples"):
        vae.init(jax.random.key(0), {"x": np.zeros((4, 28, 28, 1), np.float32)})
