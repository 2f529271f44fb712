"""AE, DAE and SAE: corruptions, penalties, code statistics and sampling checked against
numpy; losses fall; the one-class anomaly protocol; the VAE's anomaly score."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import CONFIGS, tiny_vae_config

from gen_jax import load_config, registry
from gen_jax.autoencoders.ae import AENet, corrupt, kl_sparsity, sample_codes, update_code_stats
from gen_jax.data import load_split
from gen_jax.errors import ConfigError, DataError
from gen_jax.metrics import auroc

TINY_AE = {"model.arch": "mlp", "model.hidden_sizes": (32,), "model.latent_dim": 4, "data.batch_size": 32,
           "optim.schedule": "constant", "optim.warmup_steps": 0, "train.num_steps": 50}


def tiny_ae_config(name: str = "ae_digits.py", **overrides):
    return load_config(CONFIGS / name, **{**TINY_AE, **overrides})


def _fixed_batch(config, n=32):
    x, _ = load_split(config, "train")
    return jnp.asarray(x[:n])


def _train_fixed(method, x, steps, seed=0):
    state = jax.jit(method.init)(jax.random.key(seed), {"x": x})
    step = jax.jit(method.train_step)
    losses = []
    for i in range(steps):
        state, metrics = step(state, {"x": x}, jax.random.key(1000 + i))
        losses.append(float(metrics["loss"]))
    return state, losses


def test_corruptions_match_their_definitions():
    x = jnp.asarray(np.random.default_rng(0).random((400, 8, 8, 1)), jnp.float32)
    # Jitted (eagerly, each op would compile on its own); "none" below stays eager (identity).
    jcorrupt = jax.jit(corrupt, static_argnames=("kind", "block"))
    g = np.asarray(jcorrupt(x, jax.random.key(0), "gaussian", std=0.3)) - np.asarray(x)
    assert abs(g.mean()) < 0.01 and g.std() == pytest.approx(0.3, rel=0.02)
    m = np.asarray(jcorrupt(x, jax.random.key(1), "masking", prob=0.25, fill=-1.0))
    hidden = m == -1.0
    assert hidden.mean() == pytest.approx(0.25, abs=0.01)
    np.testing.assert_array_equal(m[~hidden], np.asarray(x)[~hidden])
    b = np.asarray(jcorrupt(x, jax.random.key(2), "block", block=3, fill=-1.0))[..., 0]
    corners = set()
    for img in b:
        rows, cols = np.nonzero(img == -1.0)
        # exactly one 3x3 square per image
        assert len(rows) == 9 and np.ptp(rows) == 2 and np.ptp(cols) == 2
        corners.add((rows.min(), cols.min()))
    assert len(corners) == 36  # every top-left corner 0..5 x 0..5 occurs among 400 draws
    assert corrupt(x, jax.random.key(3), "none") is x


def test_kl_sparsity_matches_bernoulli_kl():
    rng = np.random.default_rng(1)
    codes = rng.random((50, 6)) * 0.3
    rho, rho_hat = 0.05, codes.mean(0)
    want = np.sum(rho * np.log(rho / rho_hat) + (1 - rho) * np.log((1 - rho) / (1 - rho_hat)))
    assert float(kl_sparsity(jnp.asarray(codes), rho)) == pytest.approx(want, rel=1e-5)
    assert float(kl_sparsity(jnp.full((4, 3), 0.05), 0.05)) == pytest.approx(0.0, abs=1e-6)


def test_code_statistics_are_an_ema_of_moments_and_sampling_matches_them():
    rng = np.random.default_rng(2)
    stats = {"mean": jnp.zeros(3), "second": jnp.eye(3)}
    m, s = np.zeros(3), np.eye(3)
    mix = np.array([[1.0, 0.0, 0.0], [0.8, 0.5, 0.0], [0.0, -0.3, 0.2]])
    update = jax.jit(update_code_stats)
    for step in range(30):
        codes = rng.normal(size=(64, 3)) @ mix.T + np.array([1.0, -2.0, 0.5])
        stats = update(stats, jnp.asarray(codes, jnp.float32), jnp.asarray(step), 0.9)
        d = min(0.9, (1 + step) / (10 + step))
        m = d * m + (1 - d) * codes.mean(0)
        s = d * s + (1 - d) * codes.T @ codes / 64
    np.testing.assert_allclose(stats["mean"], m, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(stats["second"], s, rtol=1e-4, atol=1e-5)
    jsample_codes = jax.jit(sample_codes, static_argnums=2)
    z = np.asarray(jsample_codes(stats, jax.random.key(0), 200_000), np.float64)
    np.testing.assert_allclose(z.mean(0), m, atol=0.01)
    np.testing.assert_allclose(np.cov(z.T), s - np.outer(m, m), atol=0.01)
    # Codes on a line (singular covariance): the jitter keeps the draw finite.
    line = jnp.asarray(np.outer(rng.normal(size=64), [1.0, 2.0, -1.0]), jnp.float32)
    flat = update({"mean": jnp.zeros(3), "second": jnp.zeros((3, 3))}, line, jnp.asarray(0), 0.0)
    assert np.isfinite(np.asarray(jsample_codes(flat, jax.random.key(1), 10))).all()


def test_losses_against_direct_computation():
    config = tiny_ae_config("sae_digits.py", **{"model.sparsity": "l1", "model.code_activation": "relu",
                                                "model.sparsity_weight": 0.1, "model.latent_dim": 16})
    sae = registry.build(config)
    x = _fixed_batch(config, 8)
    state = jax.jit(sae.init)(jax.random.key(0), {"x": x})
    loss, terms = jax.jit(sae.get_loss_fn())(state.params, x, jax.random.key(1))
    z, x_hat = (np.asarray(a, np.float64) for a in jax.jit(sae.net.apply)({"params": state.params}, x))
    mse = np.mean((x_hat - np.asarray(x)) ** 2)
    assert float(terms["mse"]) == pytest.approx(mse, rel=1e-5)
    assert float(loss) == pytest.approx(mse + 0.1 * np.abs(z).sum(1).mean(), rel=1e-5)
    # The DAE's loss compares the reconstruction of the corrupted input with the clean one.
    dconf = tiny_ae_config("dae_digits.py", **{"model.noise": "gaussian", "model.noise_std": 0.5})
    dae = registry.build(dconf)
    dstate = jax.jit(dae.init)(jax.random.key(0), {"x": x})
    noisy = np.asarray(x) + 0.5 * np.asarray(jax.random.normal(jax.random.key(5), x.shape))
    x_hat = np.asarray(jax.jit(dae.net.apply)({"params": dstate.params},
                                              jnp.asarray(noisy, jnp.float32))[1])
    loss, _ = jax.jit(dae.get_loss_fn())(dstate.params, x, jax.random.key(5))
    assert float(loss) == pytest.approx(np.mean((x_hat - np.asarray(x)) ** 2), rel=1e-4)


@pytest.mark.parametrize("name, overrides", [
    ("ae_digits.py", {}),
    ("ae_digits.py", {"model.arch": "conv", "model.channels": (8, 16)}),
    ("dae_digits.py", {"model.noise": "gaussian"}),
    ("dae_digits.py", {"model.noise": "masking"}),
    ("dae_digits.py", {"model.noise": "block"}),
    ("sae_digits.py", {"model.hidden_sizes": (32,), "model.latent_dim": 32}),
    ("sae_digits.py", {"model.sparsity": "l1", "model.code_activation": "relu",
                       "model.sparsity_weight": 0.01, "model.latent_dim": 32}),
], ids=["ae-mlp", "ae-conv", "dae-gaussian", "dae-masking", "dae-block", "sae-kl", "sae-l1"])
def test_loss_falls_on_a_fixed_batch(name, overrides):
    config = tiny_ae_config(name, **overrides)
    method = registry.build(config)
    x = _fixed_batch(config)
    state, losses = _train_fixed(method, x, 50)
    assert np.isfinite(losses).all()
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:3]), losses  # measured 0.22-0.35
    s = jax.jit(method.sample, static_argnums=2)(state, jax.random.key(1), 5)
    assert s.shape == (5, 8, 8, 1) and float(s.min()) >= 0.0 and float(s.max()) <= 1.0
    assert jax.jit(method.reconstruct)(state, x[:3]).shape == (3, 8, 8, 1)
    assert jax.jit(method.encode)(state, x[:3]).shape == (3, config.model.latent_dim)


def test_code_stats_follow_the_sampling_encoder_and_anomaly_score_is_squared_error():
    config = tiny_ae_config(**{"model.code_stats_decay": 0.0})
    ae = registry.build(config)
    x = _fixed_batch(config)
    before, _ = _train_fixed(ae, x, 4)
    state, _ = jax.jit(ae.train_step)(before, {"x": x}, jax.random.key(99))
    # decay 0: the stats are exactly the moments of the last batch's codes under the
    # parameters that step differentiated (updated inside the loss, as BatchNorm's are).
    encode = jax.jit(ae.encode)
    z = np.asarray(encode(before, x), np.float64)
    assert not np.allclose(z, np.asarray(encode(state, x)), atol=1e-4)  # the step moved them
    np.testing.assert_allclose(state.model_state["mean"], z.mean(0), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(state.model_state["second"], z.T @ z / len(z), rtol=1e-4, atol=1e-5)
    score = np.asarray(jax.jit(ae.anomaly_score)(state, x))
    x_hat = np.asarray(jax.jit(ae.net.apply)({"params": state.eval_params}, x)[1])
    np.testing.assert_allclose(score, ((x_hat - np.asarray(x)) ** 2).reshape(32, -1).sum(1), rtol=1e-5)
    # Where nothing is clipped, reconstruct and the score agree.
    r = np.asarray(jax.jit(ae.reconstruct)(state, x))
    inside = (x_hat >= 0) & (x_hat <= 1)
    np.testing.assert_allclose(r[inside], x_hat[inside], rtol=1e-6)


def test_one_class_autoencoder_flags_other_digits():
    """Train on zeros only; the reconstruction error ranks other digits above test zeros."""
    config = tiny_ae_config(**{"data.classes": (0,), "model.hidden_sizes": (64,)})
    ae = registry.build(config)
    x0, _ = load_split(config, "train")
    state = jax.jit(ae.init)(jax.random.key(0), {"x": x0[:32]})
    step = jax.jit(ae.train_step)
    for i in range(300):
        j = (i * 32) % (len(x0) - 32)
        state, _ = step(state, {"x": x0[j:j + 32]}, jax.random.key(i))
    x, y = load_split(tiny_ae_config(), "test")
    scores = np.asarray(jax.jit(ae.anomaly_score)(state, jnp.asarray(x)))
    assert auroc(scores, y != 0) > 0.9  # other digits are the positives


def test_vae_anomaly_scores_behave_as_likelihood_bounds():
    """Briefly trained on zeros: -IWAE reduces to -ELBO at K = 1 (in expectation),
    tightens with K, and ranks other digits above test zeros."""
    config = tiny_vae_config(**{"data.classes": (0,)})
    vae = registry.build(config)
    x0, _ = load_split(config, "train")
    state = jax.jit(vae.init)(jax.random.key(0), {"x": jnp.asarray(x0[:32])})
    step = jax.jit(vae.train_step)
    for i in range(80):
        j = (i * 32) % (len(x0) - 32)
        state, _ = step(state, {"x": jnp.asarray(x0[j:j + 32])}, jax.random.key(i))
    x_test, y_test = load_split(tiny_vae_config(), "test")
    x = jnp.asarray(x_test)
    score = jax.jit(vae.anomaly_score, static_argnames=("kind", "num_samples"))
    rng = jax.random.key(3)
    # K = 1: one importance weight, log w = log p(x|z) + log p(z) - log q(z|x), whose
    # mean is the ELBO (the nelbo score uses the analytic KL, so equal in expectation).
    iwae1 = np.stack([score(state, x, k, kind="iwae", num_samples=1)
                      for k in jax.random.split(rng, 8)]).mean(0)
    nelbo = np.asarray(score(state, x, rng, kind="nelbo", num_samples=8))
    assert iwae1.shape == nelbo.shape == (len(x),)
    diff = iwae1 - nelbo
    assert abs(diff.mean()) < 4 * diff.std() / np.sqrt(len(x)), (diff.mean(), diff.std())
    # More samples: a tighter bound, so a lower score; -IWAE_K <= -ELBO.
    iwae8 = np.asarray(score(state, x, rng, kind="iwae", num_samples=8))
    assert iwae8.mean() < iwae1.mean() and np.mean(iwae8 <= nelbo) > 0.9
    for scores in (iwae8, nelbo):
        assert auroc(scores, y_test != 0) > 0.85  # other digits are the positives
    with pytest.raises(ValueError, match="kind"):
        vae.anomaly_score(state, x, rng, kind="elbo")


@pytest.mark.parametrize("name, overrides, match", [
    ("ae_digits.py", {"model.noise": "gaussian"}, "method 'dae'"),
    ("ae_digits.py", {"model.arch": "resnet"}, "model.arch"),
    ("dae_digits.py", {"model.noise": "none"}, "needs a corruption"),
    ("dae_digits.py", {"model.noise": "salt"}, "model.noise"),
    ("dae_digits.py", {"model.mask_prob": 1.5}, "mask_prob"),
    ("dae_digits.py", {"model.noise": "block", "model.block_size": 9}, "block_size"),
    ("sae_digits.py", {"model.sparsity": "none"}, "needs a sparsity"),
    ("sae_digits.py", {"model.code_activation": "relu"}, "code_activation='sigmoid'"),
    ("sae_digits.py", {"model.sparsity_target": 0.0}, "sparsity_target"),
    ("ae_digits.py", {"model.code_activation": "softmax"}, "code_activation"),
])
def test_bad_configs_raise_config_error(name, overrides, match):
    with pytest.raises(ConfigError, match=match):
        registry.build(tiny_ae_config(name, **overrides))


def test_wrong_image_shape_is_a_clear_error():
    ae = registry.build(tiny_ae_config())
    with pytest.raises(DataError, match=r"shape \(28, 28, 1\)"):
        ae.init(jax.random.key(0), {"x": np.zeros((4, 28, 28, 1), np.float32)})
    assert isinstance(ae.net, AENet)
