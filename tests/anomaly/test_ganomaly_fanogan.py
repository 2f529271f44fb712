"""GANomaly and f-AnoGAN: scores and maps by hand, the loss weights, which networks each
f-AnoGAN stage trains, real vs generated in the discriminators, maps on a defect."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gen_jax import load_config, registry
from gen_jax.data import dataset_info
from gen_jax.errors import ConfigError

CONFIGS = "configs"


def _build(name: str, **overrides):
    cfg = load_config(f"{CONFIGS}/{name}:smoke", **overrides)
    return registry.build(cfg, dataset_info(cfg.data))


def _images(seed: int, n: int = 4) -> jax.Array:
    return jnp.asarray(np.random.default_rng(seed).uniform(-1, 1, (n, 16, 16, 1)), jnp.float32)


def _features_by_hand(d_net, variables, x):
    """The DCGAN critic's output and last hidden layer computed independently of
    ganomaly.discriminator_features: the last conv's captured output through
    LeakyReLU(0.2) (the smoke configs' one conv block has no norm), flattened."""
    out, state = d_net.apply(variables, x, capture_intermediates=True, mutable=["intermediates"])
    conv = state["intermediates"]["Conv_0"]["__call__"][0]
    return np.asarray(out), np.asarray(nn.leaky_relu(conv, 0.2)).reshape(len(x), -1)


@pytest.fixture(scope="module")
def gano():
    # Distinct loss weights so that a weight moved onto another term changes the loss;
    # a fast discriminator (lr 5e-3) so that a few steps separate real from generated.
    method = _build("ganomaly_brick.py", **{"ganomaly.w_adv": 2.0, "ganomaly.w_enc": 3.0,
                                            "d_optim.learning_rate": 5e-3})
    x = _images(0)
    return method, jax.jit(method.init)(jax.random.key(0), {"x": x}), x


@pytest.fixture(scope="module")
def fano():
    # A fast critic (lr 5e-3) so that a few steps separate real from generated data.
    method = _build("fanogan_brick.py", **{"fanogan.kappa": 0.7, "gan.d_steps": 1,
                                           "d_optim.learning_rate": 5e-3})
    x = _images(1, 10)
    steps = {s: jax.jit(method.stage_train_step(s)) for s in (0, 1)}
    return method, jax.jit(method.init)(jax.random.key(1), {"x": x}), x, steps


def test_configs_keep_the_papers_weights_and_refuse_batch_norm_in_scoring_nets():
    cfg = load_config(f"{CONFIGS}/ganomaly_brick.py")
    assert (cfg.ganomaly.w_adv, cfg.ganomaly.w_con, cfg.ganomaly.w_enc) == (1.0, 50.0, 1.0)
    assert load_config(f"{CONFIGS}/fanogan_brick.py").fanogan.kappa == 1.0
    with pytest.raises(ConfigError, match="batch statistics"):
        _build("ganomaly_brick.py", **{"model.g_norm": "batch"})
    with pytest.raises(ConfigError, match="gan_steps"):
        _build("fanogan_brick.py", **{"fanogan.gan_steps": 3})
    g, f = _build("ganomaly_brick.py"), _build("fanogan_brick.py")
    for m in (g, f):
        assert isinstance(m, registry.HasAnomalyScore) and isinstance(m, registry.HasAnomalyMap)
    assert isinstance(f, registry.HasStages) and not isinstance(g, registry.HasStages)
    assert {"ganomaly", "fanogan"} <= set(registry.available())


def test_ganomaly_score_map_and_loss_terms_by_hand(gano):
    method, state, x = gano
    p, dp = state.g.params, state.d.params

    @jax.jit
    def parts(state):
        z = method.g_e.apply({"params": p["g_e"]}, x)
        x_hat = method.g_d.apply({"params": p["g_d"]}, z, mutable=["batch_stats"])[0]
        z_hat = method.e.apply({"params": p["e"]}, x_hat)
        loss, (terms, _) = method.g_loss(p, dp, x)
        return (z, x_hat, z_hat, method.anomaly_score(state, x), method.anomaly_map(state, x), loss, terms,
                method.d_net.apply({"params": dp}, x_hat))

    z, x_hat, z_hat, score, amap, loss, terms, d_fake = jax.device_get(parts(state))
    np.testing.assert_allclose(score, ((z - z_hat) ** 2).sum(-1), rtol=1e-5)
    assert amap.shape == x.shape[:3]
    np.testing.assert_allclose(amap, np.abs(np.asarray(x) - x_hat).sum(-1), rtol=1e-5, atol=1e-6)
    out_real, f_real = _features_by_hand(method.d_net, {"params": dp}, x)
    out_fake, f_fake = _features_by_hand(method.d_net, {"params": dp}, jnp.asarray(x_hat))
    np.testing.assert_allclose(out_fake, d_fake, rtol=1e-5, atol=1e-6)
    w = dp["Dense_0"]  # f is the input of D's final linear layer
    np.testing.assert_allclose(f_real @ np.asarray(w["kernel"])[:, 0] + np.asarray(w["bias"]), out_real,
                               rtol=1e-4, atol=1e-5)
    adv = ((f_real - f_fake) ** 2).mean()
    con = np.abs(np.asarray(x) - x_hat).mean()
    enc = ((z - z_hat) ** 2).mean()
    for name, ref in (("g_adv", adv), ("g_con", con), ("g_enc", enc)):
        assert float(terms[name]) == pytest.approx(float(ref), rel=1e-4), name
    assert float(loss) == pytest.approx(2.0 * adv + 50.0 * con + 3.0 * enc, rel=1e-4)


def test_ganomaly_discriminator_learns_real_above_reconstructions(gano):
    method, state, x = gano

    @jax.jit
    def gap(state):  # mean D logit on real images minus on their reconstructions G(x)
        d = {"params": state.d.params}
        return method.d_net.apply(d, x).mean() - method.d_net.apply(d, method.reconstruct(state, x)).mean()

    before = float(gap(state))
    step = jax.jit(method.train_step)
    for i in range(4):
        state, metrics = step(state, {"x": x}, jax.random.key(i))
    after = float(gap(state))
    assert after > 0.0 and after > before + 0.5, (before, after)
    assert float(metrics["d_real"]) > float(metrics["d_fake"])


def test_fanogan_score_and_map_by_hand(fano):
    method, state, x, _ = fano
    gan = state.gan

    @jax.jit
    def parts(state):
        z = method.encoder.apply({"params": state.e.params}, x)
        x_hat = method.gan.g_net.apply({"params": gan.g.eval_params}, z, mutable=["batch_stats"])[0]
        loss, _ = method.izif_loss(state.e.params, state.gan, x)
        return x_hat, method.anomaly_score(state, x), method.anomaly_map(state, x), loss

    x_hat, score, amap, loss = jax.device_get(parts(state))
    d_vars = {"params": gan.d.params, **(gan.d.model_state or {})}
    _, f_x = _features_by_hand(method.gan.d_net, d_vars, x)
    _, f_hat = _features_by_hand(method.gan.d_net, d_vars, jnp.asarray(x_hat))
    diff = np.asarray(x) - x_hat
    residual = (diff ** 2).reshape(len(x), -1).mean(1)
    feature_residual = ((f_x - f_hat) ** 2).mean(1)
    np.testing.assert_allclose(score, residual + 0.7 * feature_residual, rtol=1e-5)
    # The encoder's izi_f loss is the batch mean of the same score.
    assert float(loss) == pytest.approx(float(np.mean(residual + 0.7 * feature_residual)), rel=1e-5)
    assert amap.shape == x.shape[:3]
    np.testing.assert_allclose(amap, (diff ** 2).sum(-1), rtol=1e-5, atol=1e-6)


def _same(a, b, exact: bool = True) -> bool:
    pairs = zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    if exact:
        return all(np.array_equal(u, v) for u, v in pairs)
    return all(np.allclose(u, v, rtol=1e-4, atol=1e-6) for u, v in pairs)


def test_fanogan_stages_train_only_their_networks(fano):
    method, state, x, steps = fano
    b = method.gan_steps
    assert [method.stage_of(s) for s in (0, b - 1, b, b + 5)] == [0, 0, 1, 1]
    batch = {"x": x}
    s0, m0 = steps[0](state, batch, jax.random.key(2))
    assert _same(s0.e, state.e)  # the GAN phase leaves the encoder alone
    assert not _same(s0.gan.g.params, state.gan.g.params) and not _same(s0.gan.d.params, state.gan.d.params)
    assert "gp" in m0 and "izif" not in m0
    s1, m1 = steps[1](s0, batch, jax.random.key(3))
    assert _same(s1.gan, s0.gan)  # generator and critic frozen, EMA and optimizers included
    assert not _same(s1.e.params, s0.e.params)
    assert "izif" in m1 and float(m1["loss"]) == pytest.approx(float(m1["izif"]))
    # The all-stage train_step picks the stage from state.step (one program: the same
    # numbers up to XLA's reordering of the arithmetic).
    step = jax.jit(method.train_step)
    a0, _ = step(state.replace(step=jnp.int32(b - 1)), batch, jax.random.key(2))
    a1, _ = step(s0.replace(step=jnp.int32(b)), batch, jax.random.key(3))
    assert _same(a0.gan, s0.gan, exact=False) and _same(a0.e, state.e)
    assert _same(a1.e, s1.e, exact=False) and _same(a1.gan, s0.gan)


def test_fanogan_critic_scores_real_above_generated(fano):
    method, state, x, steps = fano
    for i in range(4):
        state, metrics = steps[0](state, {"x": x}, jax.random.key(10 + i))

    @jax.jit
    def outputs(state):
        d = state.gan.d
        fake = method.sample(state, jax.random.key(99), len(x))
        return (method.gan.d_net.apply({"params": d.params, **d.model_state}, x),
                method.gan.d_net.apply({"params": d.params, **d.model_state}, fake))

    real_out, fake_out = outputs(state)
    assert float(real_out.mean()) > float(fake_out.mean())
    assert float(metrics["d_real"]) > float(metrics["d_fake"])


def _zeroed(tree):
    return jax.tree.map(jnp.zeros_like, tree)


def test_maps_are_larger_on_an_inserted_defect(gano, fano):
    """With the generator zeroed (a fixed model that outputs mid-range 0 everywhere),
    the map is the defect: larger inside an inserted bright square than around it."""
    clean = 0.05 * np.asarray(_images(7, 2))
    mask = np.zeros((2, 16, 16), bool)
    mask[:, 5:10, 6:11] = True
    defect = jnp.asarray(np.where(mask[..., None], 0.9, clean), jnp.float32)
    g_method, g_state, _ = gano
    g_state = g_state.replace(g=g_state.g.replace(params={**g_state.g.params,
                                                          "g_d": _zeroed(g_state.g.params["g_d"])}))
    f_method, f_state, _, _ = fano
    g_ts = f_state.gan.g.replace(params=_zeroed(f_state.gan.g.params),
                                 ema_params=_zeroed(f_state.gan.g.eval_params))
    f_state = f_state.replace(gan=f_state.gan.replace(g=g_ts))
    for method, state in ((g_method, g_state), (f_method, f_state)):
        amap = np.asarray(jax.jit(method.anomaly_map)(state, defect))
        assert amap.shape == mask.shape
        assert amap[mask].min() > 5 * amap[~mask].max()
