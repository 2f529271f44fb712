"""One shape for the autoencoder family: every Method is an instance of the capability
protocols it claims (and of no other), with one signature and documented output
shapes; steps go through gen_jax.steps (eval at the EMA parameters); the running
statistics in ``model_state`` follow their documented update."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import CONFIGS, tiny_vae_config

from gen_jax import load_config, registry
from gen_jax.autoencoders.ae import AENet
from gen_jax.data import load_split
from gen_jax.registry import HasAnomalyScore, HasLatent, HasLogProb, HasReconstruct, Method

_TINY = {"data.batch_size": 16, "optim.schedule": "constant", "optim.warmup_steps": 0,
         "train.num_steps": 10}
_OVERRIDES = {
    "ae": ("ae_digits.py", {"model.arch": "mlp", "model.hidden_sizes": (32,), "model.latent_dim": 4}),
    "dae": ("dae_digits.py", {"model.arch": "mlp", "model.hidden_sizes": (32,), "model.latent_dim": 4,
                              "model.noise": "gaussian", "model.noise_std": 0.5}),
    "sae": ("sae_digits.py", {"model.arch": "mlp", "model.hidden_sizes": (32,), "model.latent_dim": 4}),
    "mae": ("mae_digits.py", {"model.enc_dim": 16, "model.enc_depth": 1, "model.enc_heads": 2,
                              "model.dec_dim": 8, "model.dec_depth": 1, "model.dec_heads": 2}),
}
# name -> the optional capabilities the Method claims.
CLAIMS = {
    "ae": {HasLatent, HasReconstruct, HasAnomalyScore},
    "dae": {HasLatent, HasReconstruct, HasAnomalyScore},
    "sae": {HasLatent, HasReconstruct, HasAnomalyScore},
    "vae": {HasLatent, HasReconstruct, HasAnomalyScore, HasLogProb},
    "mae": {HasReconstruct, HasAnomalyScore},
}


def _config(name: str, **overrides):
    if name == "vae":
        return tiny_vae_config(**{"model.arch": "mlp", **_TINY, **overrides})
    file, base = _OVERRIDES[name]
    return load_config(CONFIGS / file, **{**_TINY, **base, **overrides})


def _batch(config, n=16):
    x, _ = load_split(config, "train")
    return jnp.asarray(x[:n])


@pytest.mark.parametrize("name", sorted(CLAIMS))
def test_methods_are_the_protocols_they_claim_with_documented_shapes(name):
    config = _config(name)
    method = registry.build(config)
    assert isinstance(method, Method)
    for protocol in (HasLatent, HasReconstruct, HasAnomalyScore, HasLogProb):
        assert isinstance(method, protocol) == (protocol in CLAIMS[name]), protocol.__name__
    x = _batch(config, 5)
    # Jitted as the runtime calls them (eagerly, each op would compile on its own).
    state = jax.jit(method.init)(jax.random.key(0), {"x": x})
    rng = jax.random.key(1)
    # One signature per capability: (state, x, rng), options keyword-only.
    assert jax.jit(method.reconstruct)(state, x, rng).shape == x.shape
    score = jax.jit(method.anomaly_score)(state, x, rng)
    assert score.shape == (5,) and np.isfinite(np.asarray(score)).all()
    if HasLatent in CLAIMS[name]:
        z = jax.jit(method.encode)(state, x, rng)
        assert z.shape == (5, config.model.latent_dim)
        assert jax.jit(method.decode)(state, z).shape == x.shape
    if HasLogProb in CLAIMS[name]:
        lp = jax.jit(method.log_prob, static_argnames="num_samples")(state, x, rng, num_samples=2)
        assert lp.shape == (5,) and np.isfinite(np.asarray(lp)).all()
    assert jax.jit(method.sample, static_argnums=2)(state, jax.random.key(2), 3).shape == (3, *x.shape[1:])


def test_vae_encode_draws_from_the_posterior_given_a_key_and_is_its_mean_without():
    config = _config("vae")
    vae = registry.build(config)
    x = _batch(config, 3)
    state = jax.jit(vae.init)(jax.random.key(0), {"x": x})
    encode, decode = jax.jit(vae.encode), jax.jit(vae.decode)
    reconstruct = jax.jit(vae.reconstruct)
    mean, logvar = (np.asarray(a, np.float64) for a in jax.jit(vae.posterior)(state, x))
    np.testing.assert_array_equal(encode(state, x, None), mean)
    draws = np.asarray(jax.jit(jax.vmap(lambda k: vae.encode(state, x, k)))(
        jax.random.split(jax.random.key(1), 4000)), np.float64)
    std = np.exp(0.5 * logvar)
    np.testing.assert_allclose(draws.mean(0), mean, atol=4 * std.max() / np.sqrt(4000) + 1e-6)
    np.testing.assert_allclose(draws.std(0), std, rtol=0.05)
    # reconstruct follows encode's convention: the decoder mean at that code.
    rng = jax.random.key(2)
    np.testing.assert_allclose(reconstruct(state, x, None), decode(state, mean), atol=1e-6)
    np.testing.assert_allclose(reconstruct(state, x, rng),
                               decode(state, encode(state, x, rng)), atol=1e-6)


@pytest.mark.parametrize("name", ["ae", "vae", "mae"])
def test_eval_step_evaluates_the_loss_at_the_ema_parameters(name):
    config = _config(name, **{"train.ema_decay": 0.5})
    method = registry.build(config)
    x = _batch(config)
    state = jax.jit(method.init)(jax.random.key(0), {"x": x})
    step = jax.jit(method.train_step)
    for i in range(3):
        state, _ = step(state, {"x": x}, jax.random.key(10 + i))
    rng = jax.random.key(5)
    got = float(jax.jit(method.eval_step)(state, {"x": x}, rng)["loss"])
    loss_fn = jax.jit(method.loss_fn, static_argnums=4)
    at_ema = float(loss_fn(state.ema_params, state.model_state, {"x": x}, rng, False)[0])
    at_raw = float(loss_fn(state.params, state.model_state, {"x": x}, rng, False)[0])
    assert got == pytest.approx(at_ema, rel=1e-5)
    assert abs(at_ema - at_raw) > 1e-4 * abs(at_raw)


@pytest.mark.parametrize("name", ["ae", "dae"])
def test_code_stats_are_a_warmed_up_ema_of_clean_codes_before_each_update(name):
    """Each train step moves the running code moments towards those of the clean
    batch's codes under the parameters it differentiates (before their update),
    with decay min(0.9, (1 + n) / (10 + n)) at update n; evaluation leaves them."""
    config = _config(name, **{"model.code_stats_decay": 0.9})
    method = registry.build(config)
    x = _batch(config)
    state = jax.jit(method.init)(jax.random.key(0), {"x": x})
    step = jax.jit(method.train_step)
    encode = jax.jit(lambda params, x: method.net.apply({"params": params}, x, method=AENet.encode))
    m, s = np.zeros(4), np.eye(4)
    for n in range(4):
        z = np.asarray(encode(state.params, x), np.float64)
        d = min(0.9, (1 + n) / (10 + n))
        m, s = d * m + (1 - d) * z.mean(0), d * s + (1 - d) * z.T @ z / len(z)
        state, _ = step(state, {"x": x}, jax.random.key(20 + n))
    assert int(state.model_state["count"]) == 4
    np.testing.assert_allclose(state.model_state["mean"], m, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(state.model_state["second"], s, rtol=1e-4, atol=1e-5)
    _, (metrics, after) = method.loss_fn(state.params, state.model_state, {"x": x},
                                         jax.random.key(0), False)
    assert after is state.model_state and "mse_clean" in metrics
