"""One shape for the autoregressive family: PixelCNN, Gated PixelCNN and the prior over
VQ-VAE codes are instances of the capability protocols they claim (and of no other), with
one signature and the documented output shapes; their steps go through gen_jax.steps, so
evaluation runs at the EMA parameters and the frozen VQ-VAE under the prior is left alone."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import CONFIGS

from gen_jax import load_config, registry
from gen_jax.autoregressive import vqvae_prior
from gen_jax.data import load_split
from gen_jax.registry import HasAnomalyScore, HasLatent, HasLogProb, HasReconstruct, Method

TINY = {"model.features": 4, "model.num_layers": 1, "model.head_features": 8,
        "model.first_kernel": 3, "data.batch_size": 8, "train.ema_decay": 0.999,
        "optim.schedule": "constant", "optim.warmup_steps": 0}
VQ_TINY = {"model.channels": 8, "model.code_dim": 4, "model.num_codes": 8, "model.num_res": 0,
           "data.batch_size": 8}
PROTOCOLS = (HasLatent, HasReconstruct, HasAnomalyScore, HasLogProb)


def _claims(method, claimed):
    assert isinstance(method, Method)
    for protocol in PROTOCOLS:
        assert isinstance(method, protocol) == (protocol in claimed), protocol.__name__


@pytest.mark.parametrize("name", ["pixelcnn_digits.py", "gated_pixelcnn_digits.py"])
def test_pixelcnns_have_exact_log_prob_and_evaluate_at_the_ema_parameters(name):
    cfg = load_config(CONFIGS / name, **TINY)
    method = registry.build(cfg)
    _claims(method, {HasLogProb})
    x, y = load_split(cfg, "train")
    batch = {"x": jnp.asarray(x[:8]), "y": jnp.asarray(y[:8])}
    labels = batch["y"] if method.num_classes else None
    rng = jax.random.key(3)

    @jax.jit  # one compiled function: eager op-by-op dispatch would compile every op
    def run(state):
        new, metrics = method.train_step(state, batch, jax.random.key(1))
        raw = new.replace(ema_params=None)
        return (new, metrics, method.eval_step(new, batch, rng), method.eval_step(raw, batch, rng),
                method.log_prob(new, batch["x"], rng, labels=labels),
                method.log_prob(new, batch["x"], jax.random.key(4), num_samples=4, labels=labels),
                method.log_prob(state.replace(ema_params=None), batch["x"], rng, labels=labels),
                method.sample(new, rng, 2))

    state = jax.jit(method.init)(jax.random.key(0), batch)
    new, metrics, ev, ev_raw, lp, lp4, lp_before, samples = run(state)
    assert int(new.step) == 1 and set(metrics) == {"loss", "nll_bpd"}
    # Exact: the same log p(x) whatever num_samples and key; the one shape is (N,).
    assert lp.shape == (8,)
    np.testing.assert_allclose(lp4, lp, rtol=1e-6)
    # eval_step = -mean log p(x) at the EMA parameters (what log_prob and sample use), not the raw ones.
    assert float(ev["loss"]) == pytest.approx(-float(lp.mean()), rel=1e-5)
    assert float(ev["nll_bpd"]) == pytest.approx(float(ev["loss"]) / (64 * math.log(2)), rel=1e-6)
    assert abs(float(ev_raw["loss"]) - float(ev["loss"])) > 1e-4
    # The train metrics are the pre-update NLL at the raw parameters.
    assert float(metrics["loss"]) == pytest.approx(-float(lp_before.mean()), rel=1e-5)
    assert samples.shape == (2, 8, 8, 1)


@pytest.fixture(scope="module")
def prior_and_vqvae():
    """The prior over a freshly initialised tiny VQ-VAE (load_vqvae replaced, so no workdir)."""
    vq_cfg = load_config(CONFIGS / "vqvae_digits.py", **VQ_TINY)
    vq = registry.build(vq_cfg)
    x, y = load_split(vq_cfg, "train")
    vq_state = jax.jit(vq.init)(jax.random.key(5), {"x": jnp.asarray(x[:8])})
    vq_vars = jax.device_get(vq.variables(vq_state))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(vqvae_prior, "load_vqvae", lambda workdir: (vq, vq_vars))
        cfg = load_config(CONFIGS / "vqvae_prior_digits.py",
                          **{**TINY, "model.vqvae_workdir": "unused"})
        prior = registry.build(cfg)
    return prior, vq, vq_state, {"x": jnp.asarray(x[:8]), "y": jnp.asarray(y[:8])}


def test_prior_claims_reconstruct_steps_at_the_ema_parameters_and_keeps_the_vqvae(prior_and_vqvae):
    prior, vq, vq_state, batch = prior_and_vqvae
    _claims(prior, {HasReconstruct})
    rng = jax.random.key(3)

    @jax.jit
    def run(state):
        new, metrics = prior.train_step(state, batch, jax.random.key(1))
        codes = vq.encode(vq_state, batch["x"], jax.random.key(0))[0]
        nll = [prior._nll(p, codes, batch["y"]) for p in (state.params, new.params, new.ema_params)]
        return (new, metrics, prior.eval_step(new, batch, jax.random.key(2)), codes, nll,
                prior.reconstruct(new, batch["x"], rng), vq.reconstruct(vq_state, batch["x"], rng),
                prior.sample(new, rng, 2))

    state = jax.jit(prior.init)(jax.random.key(0), batch)
    new, metrics, ev, codes, (nll_before, nll_raw, nll_ema), recon, vq_recon, samples = run(state)
    # The frozen VQ-VAE rides in model_state, untouched by the step.
    for a, b in zip(jax.tree.leaves(new.model_state), jax.tree.leaves(state.model_state), strict=True):
        np.testing.assert_array_equal(a, b)
    assert codes.shape == (8, *prior.code_shape)
    assert float(metrics["loss"]) == pytest.approx(float(nll_before), rel=1e-5)
    assert float(ev["loss"]) == pytest.approx(float(nll_ema), rel=1e-5)
    assert abs(float(nll_raw) - float(nll_ema)) > 1e-4
    assert float(ev["code_bits"]) == pytest.approx(
        float(ev["loss"]) / (math.prod(prior.code_shape) * math.log(2)), rel=1e-6)
    assert recon.shape == batch["x"].shape
    np.testing.assert_allclose(recon, vq_recon, atol=1e-6)
    assert samples.shape == (2, 8, 8, 1)
