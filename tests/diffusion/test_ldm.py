"""Latent diffusion ("ldm", gen_jax/diffusion/latent.py) against independent references:
cross-attention against numpy's softmax(Q Kᵀ / √d) V, the scale factor against the
VAE's own encoder, the label's effect and the null context, classifier-free guidance
and decoding against a sampler run by hand from the denoiser and the VAE's decoder,
the autoencoder staying frozen through training, a short "it learns" run, and the
loader's one-line errors. One tiny trained model (module scope) serves the tests.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import CONFIGS, tiny_vae_config

from gen_jax import load_config, registry
from gen_jax.config import config_to_json
from gen_jax.data import DataInfo, load_split
from gen_jax.diffusion import latent, samplers
from gen_jax.errors import ConfigError

INFO = DataInfo("digits", "image", (8, 8, 1), 17, 10)
TINY = {"model.hidden": 16, "model.depth": 1, "model.heads": 2, "model.context_tokens": 3,
        "model.context_dim": 8, "model.num_timesteps": 50, "model.cfg_dropout": 0.2,
        "sampler.num_steps": 3, "data.batch_size": 32, "train.ema_decay": 0.0,
        "optim.schedule": "constant", "optim.warmup_steps": 0, "optim.learning_rate": 3e-3}
STEPS = 40
NULL = 10


def random_params(shapes, seed: int, scale: float = 1.0):
    """Parameters of the given shapes: N(0, scale²/fan_in) kernels, N(0, 0.1²) the rest
    (no zero-initialised layer, so every path through the network is live)."""
    rng = np.random.default_rng(seed)

    def draw(s):
        fan_in = int(np.prod(s.shape[:-1])) if len(s.shape) > 1 else 1
        std = scale / np.sqrt(fan_in) if len(s.shape) > 1 else 0.1
        return rng.normal(0.0, std, s.shape).astype(np.float32)

    return jax.tree.map(draw, shapes)


def build(vae=None, vae_params=None, **overrides):
    cfg = load_config(CONFIGS / "ldm_digits.py", **{**TINY, **overrides})
    return latent.LatentDiffusion(cfg, INFO, autoencoder=latent.FrozenAutoencoder(vae, vae_params, "vae"))


@pytest.fixture(scope="module")
def tiny():
    """A random (untrained, frozen) tiny MLP VAE, the LDM over its 4-dim latents fitted
    on the training split (with the VAE's own encoding of that split beside it), and
    STEPS train steps."""
    vae = registry.build(tiny_vae_config(**{"model.arch": "mlp"}), INFO)
    x_train, y_train = load_split(load_config(CONFIGS / "ldm_digits.py"), "train")
    shapes = jax.eval_shape(vae.init, jax.random.key(0), {"x": jax.ShapeDtypeStruct((2, 8, 8, 1),
                                                                                    jnp.float32)})
    vae_params = jax.device_get(random_params(shapes.params, 0))
    ldm = build(vae, vae_params)

    @jax.jit
    def fit(x):  # -> (state, the VAE's posterior means, the LDM's latents)
        state = ldm.fit(jax.random.key(1), x)
        return state, vae.encode(_vae_state(vae_params), x, None), ldm.encode(state, x)

    state0, mean, z = fit(x_train)
    step = jax.jit(ldm.train_step)
    batch_ix = np.random.default_rng(0).integers(0, len(x_train), size=(STEPS, 32))
    keys = jax.random.split(jax.random.key(2), STEPS)
    state, mse = state0, []
    for i in range(STEPS):
        state, metrics = step(state, {"x": x_train[batch_ix[i]], "y": y_train[batch_ix[i]]}, keys[i])
        mse.append(metrics["latent_mse"])
    mean, z, mse, metrics = jax.device_get((mean, z, mse, metrics))
    return dict(vae=vae, vae_params=vae_params, ldm=ldm, state0=state0, state=state, mean=mean, z=z,
                x_train=x_train, y_train=y_train, mse=np.asarray(mse), last=metrics)


class LabelEcho(nn.Module):
    """A stand-in denoiser: ε̂ = 1000 × the label, whatever the input."""

    @nn.compact
    def __call__(self, x, t, y=None, train=False):
        return 1000.0 * jnp.broadcast_to(y[:, None], x.shape).astype(jnp.float32)


def _vae_state(params):
    return latent._params_state(params)


def test_cross_attention_matches_numpy():
    """Two heads of tokens (1, 3, 4) attending to a context (1, 5, 6): Q = x Wq + bq,
    K = c Wk + bk, V = c Wv + bv, per head softmax(Q Kᵀ / √2) V, heads concatenated,
    then the output projection, all by hand in numpy."""
    mod = latent.CrossAttention(heads=2)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(1, 3, 4)).astype(np.float32)
    ctx = rng.normal(size=(1, 5, 6)).astype(np.float32)
    shapes = jax.eval_shape(mod.init, jax.random.key(0), x, ctx)["params"]
    params = random_params(shapes, 1)
    got = np.asarray(jax.jit(mod.apply)({"params": params}, x, ctx))
    p = jax.tree.map(np.asarray, params)
    q = x[0] @ p["query"]["kernel"] + p["query"]["bias"]
    k = ctx[0] @ p["key"]["kernel"] + p["key"]["bias"]
    v = ctx[0] @ p["value"]["kernel"] + p["value"]["bias"]
    heads = []
    for h in range(2):
        sl = slice(2 * h, 2 * h + 2)
        logits = q[:, sl] @ k[:, sl].T / np.sqrt(2.0)
        w = np.exp(logits - logits.max(1, keepdims=True))
        heads.append((w / w.sum(1, keepdims=True)) @ v[:, sl])
    want = np.concatenate(heads, 1) @ p["out"]["kernel"] + p["out"]["bias"]
    np.testing.assert_allclose(got[0], want, rtol=1e-5, atol=1e-5)


def test_scale_factor_makes_training_latents_unit_variance(tiny):
    """The stored scale is 1 / std of the VAE's posterior means over the whole training
    split (the VAE's own encode, rng=None), so the scaled training latents have unit
    variance."""
    mean, z = np.asarray(tiny["mean"], np.float64), np.asarray(tiny["z"])
    scale = float(tiny["state0"].model_state["scale"])
    np.testing.assert_allclose(scale, 1.0 / mean.std(), rtol=1e-4)
    np.testing.assert_allclose(z, scale * mean, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(z.std(), 1.0, rtol=1e-4)
    assert abs(scale - 1.0) > 0.1  # the random VAE's latents are not unit-variance already


def test_label_conditions_the_denoiser_through_the_null_context(tiny):
    """Changing the label (or t) changes ε̂ and no label means the null row (label 10); the
    loss hands the denoiser the batch's labels, and in training the dropped ones as the
    null label 10."""
    ldm = tiny["ldm"]
    params = random_params(jax.eval_shape(lambda: tiny["state"].params), 3)
    rng = np.random.default_rng(1)
    z = rng.normal(size=(8, 4)).astype(np.float32)
    t = rng.integers(0, 50, 8).astype(np.int32)
    y = np.arange(8, dtype=np.int32)
    # The loss's labels, through a stand-in denoiser that outputs 1000 * label: with every
    # label 3, the mean squared error to ε ~ N(0, 1) is 3000² (+ O(1)); labels dropped
    # (p = 0.999: all 32 for this key) give the null label's 10000².
    m = build(tiny["vae"], tiny["vae_params"], **{"model.cfg_dropout": 0.999})
    m.diffusion.net = LabelEcho()
    batch = {"x": tiny["x_train"][:32], "y": np.full(32, 3, np.int32)}
    ms, key = tiny["state"].model_state, jax.random.key(5)

    @jax.jit
    def outputs(p):
        # one batch: the labels, shifted labels, the null label, and the labels at later t
        eps = ldm.net.apply({"params": p}, np.tile(z, (4, 1)), np.concatenate([t, t, t, (t + 25) % 50]),
                            np.concatenate([y, (y + 1) % 10, np.full(8, NULL, np.int32), y]))
        eps_none = ldm.net.apply({"params": p}, z, t)
        return eps, eps_none, [m.loss_fn({}, ms, batch, key, train)[0] for train in (True, False)]

    eps, e_none, (dropped, kept) = jax.device_get(outputs(params))
    e_y, e_shift, e_null, e_later = np.split(eps, 4)
    assert np.abs(e_y - e_shift).max(axis=1).min() > 1e-2  # every example
    assert np.abs(e_y - e_later).max(axis=1).min() > 1e-5  # and the time too (weakly)
    np.testing.assert_allclose(e_none, e_null, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose([dropped, kept], [1e8, 9e6], rtol=1e-3)


def test_guided_sample_is_the_hand_sampler_decoded_by_the_vae(tiny):
    """ldm.sample(labels, guidance=w) equals DPM-Solver++ run by hand on
    ε̂ = ε_c + w (ε_c - ε_∅) from the denoiser (ε_∅ at label 10), then the VAE's own
    decoder at z / scale; the samples have the data's shape and lie in its range."""
    ldm, state, vae, vp = tiny["ldm"], tiny["state"], tiny["vae"], tiny["vae_params"]
    params = random_params(jax.eval_shape(lambda: state.params), 4)
    state = state.replace(params=params)
    n, w, key = 12, 1.5, jax.random.key(7)
    labels = np.arange(n, dtype=np.int32) % 10
    def hand_eps(z, t):
        e_c = ldm.net.apply({"params": params}, z, t, labels)
        e_u = ldm.net.apply({"params": params}, z, t, np.full_like(labels, NULL))
        return e_c + w * (e_c - e_u)

    def hand(k):
        z = samplers.sample(hand_eps, ldm.diffusion.sched, (n, 4), k, "dpm_solver++", 3, order=2)
        return vae.decode(_vae_state(vp), z / state.model_state["scale"]), z

    got, (want, z) = jax.device_get(jax.jit(lambda s, k: (
        ldm.sample(s, k, n, labels=labels, guidance=w), hand(k)))(state, key))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)  # CFG batches 2N: float order
    assert got.shape == (n, 8, 8, 1) and np.isfinite(got).all()
    assert got.min() >= 0.0 and got.max() <= 1.0
    assert np.std(z) > 0.1


def test_it_learns_and_the_autoencoder_stays_frozen(tiny):
    """Training lowers the latent loss (ε̂ = 0 at init: mse ≈ 1 at the first step), only
    the denoiser is trained (the trainable leaves are exactly the denoiser's), and the
    autoencoder's variables after the steps are the original VAE's (that it decodes as
    the VAE does after training is checked by the guided-sample test)."""
    mse = tiny["mse"]
    print("latent mse, first and last 10 steps:", mse[:10].mean(), mse[-10:].mean())
    assert abs(mse[0] - 1.0) < 0.3
    assert mse[-10:].mean() < 0.7 * mse[:10].mean()
    assert np.isfinite(float(tiny["last"]["loss"]))
    ldm, state, vp = tiny["ldm"], tiny["state"], tiny["vae_params"]
    net_shapes = jax.eval_shape(ldm.net.init, jax.random.key(0), np.zeros((2, 4), np.float32),
                                np.zeros(2, np.int32), np.zeros(2, np.int32))["params"]
    assert jax.tree.structure(state.params) == jax.tree.structure(net_shapes)
    for a, b in zip(jax.tree.leaves(state.model_state["ae"]), jax.tree.leaves(vp), strict=True):
        np.testing.assert_array_equal(a, b)


def test_vqvae_pre_quantization_latents_are_spatial_tokens():
    """A VQ-VAE autoencoder: the latent is its (4, 4, code_dim) map before quantization,
    the denoiser reads it as 16 tokens that attend to each other, and its latents
    decode to images (shapes, by tracing)."""
    cfg = load_config(CONFIGS / "vqvae_digits.py", **{"model.channels": 8, "model.code_dim": 4,
                                                      "model.num_codes": 8, "model.num_res": 0})
    vq = registry.build(cfg, INFO)
    x = jax.ShapeDtypeStruct((2, 8, 8, 1), jnp.float32)
    vq_state = jax.eval_shape(vq.init, jax.random.key(0), {"x": x})
    zeros = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), vq.variables(vq_state))
    ae = latent.FrozenAutoencoder(vq, zeros, "vqvae")
    assert ae.latent_shape == (4, 4, 4)
    m = latent.LatentDiffusion(load_config(CONFIGS / "ldm_digits.py", **{
        **TINY, "data.dequantize": "none", "data.value_range": (-1.0, 1.0)}), INFO, autoencoder=ae)
    assert m.net.tokens() == (16, 4)
    # The tokens attend to each other: changing the first changes ε̂ at every other one.
    z = np.tile(np.random.default_rng(0).normal(size=(1, 64)).astype(np.float32), (2, 1))
    z[1, :4] += 1.0
    t, y = np.full(2, 10, np.int32), np.zeros(2, np.int32)
    params = random_params(jax.eval_shape(m.net.init, jax.random.key(0), z, t, y)["params"], 5)
    eps = np.asarray(jax.jit(m.net.apply)({"params": params}, z, t, y)).reshape(2, 16, 4)
    assert np.abs(eps[0, 1:] - eps[1, 1:]).max(axis=1).min() > 1e-4
    out = jax.eval_shape(ae.decode, zeros, jax.ShapeDtypeStruct((3, 4, 4, 4), jnp.float32))
    assert out.shape == (3, 8, 8, 1)


def test_bad_autoencoder_workdirs_and_config_values_are_one_line_errors(tmp_path, tiny):
    cfg = load_config(CONFIGS / "ldm_digits.py", **TINY)
    for workdir, pattern in (("", "model.ae_workdir is empty: train an autoencoder first"),
                             (str(tmp_path / "nope"), "is not a trained gen_jax workdir")):
        with pytest.raises(ConfigError, match=pattern):
            registry.build(load_config(CONFIGS / "ldm_digits.py", **{"model.ae_workdir": workdir}), INFO)
    gan = tmp_path / "gan"
    gan.mkdir()
    (gan / "config.json").write_text(config_to_json(load_config(CONFIGS / "dcgan_digits.py")))
    with pytest.raises(ConfigError, match=r"holds a 'gan' run; latent diffusion needs one of vae, vqvae"):
        registry.build(load_config(CONFIGS / "ldm_digits.py", **{"model.ae_workdir": str(gan)}), INFO)
    untrained = tmp_path / "vae"
    untrained.mkdir()
    (untrained / "config.json").write_text(config_to_json(tiny_vae_config()))
    with pytest.raises(ConfigError, match=r"model.ae_workdir=.*no checkpoint"):
        registry.build(load_config(CONFIGS / "ldm_digits.py", **{"model.ae_workdir": str(untrained)}), INFO)
    ae = (tiny["vae"], tiny["vae_params"])
    with pytest.raises(ConfigError, match=r"differ from its autoencoder's"):
        build(*ae, **{"data.value_range": (-1.0, 1.0)})
    with pytest.raises(ConfigError, match="model.hidden=16 must be divisible by model.heads=3"):
        build(*ae, **{"model.heads": 3})
    with pytest.raises(ConfigError, match=r"model.cfg_dropout must be in \[0, 1\)"):
        build(*ae, **{"model.cfg_dropout": 1.0})
    assert cfg.method == "ldm"
