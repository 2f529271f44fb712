"""BigGAN: conditional batch norm (shared embedding + hierarchical latent chunk) and the
projection head against numpy with exact singular values; orthogonal regularization by
numpy; truncated-normal latents against scipy's truncnorm; the EMA of a run's checkpoints
against its formula and the sampler's use of it; standing statistics (a sample does not
depend on the rest of its batch; psi -> 0 gives G(0, y)); and, on the checkpoints and
logged losses of one tiny run through the runtime: D steps that separate real from fake,
a D step's and a G step's losses recomputed by hand from the documented keys (which
labels go with which images), and a G step that lowers G's loss."""

from __future__ import annotations

import json

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats
from conftest import CONFIGS

from gen_jax import load_config, registry, train
from gen_jax.checkpoint import Checkpointer
from gen_jax.data import make_train_iterator
from gen_jax.errors import ConfigError
from gen_jax.gans import biggan
from gen_jax.gans.gan import apply_d

CONFIG = CONFIGS / "biggan_patches.py"


def _exact_spectral(params: dict, model_state: dict) -> dict:
    """``model_state`` with every power-iteration vector set to its kernel's exact top right
    singular vector (numpy SVD), so that each layer divides by the exact sigma."""
    def fix(path, u):
        node = params
        for key in path[:-1]:
            node = node[key.key]
        w = np.asarray(node["kernel" if "kernel" in node else "embed"])
        return jnp.asarray(np.linalg.svd(w.reshape(-1, w.shape[-1]))[2][0], u.dtype)

    return {**model_state, "spectral": jax.tree_util.tree_map_with_path(fix, model_state["spectral"])}


def _sigma(w) -> float:
    w = np.asarray(w, np.float64)
    return float(np.linalg.svd(w.reshape(-1, w.shape[-1]), compute_uv=False)[0])


# The smoke config, trained 6 steps with every checkpoint kept; D's learning rate raised
# so that its steps show within the run. EMA: a copy for G steps 1-2, averaging from 3.
RUN = {"train.num_steps": 6, "train.checkpoint_every": 1, "train.keep_checkpoints": 0,
       "d_optim.learning_rate": 3e-3}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """The tiny run through the runtime; its states after steps 1, 2, 3 and 6; a jitted sampler."""
    cfg = load_config(f"{CONFIG}:smoke", **RUN)
    workdir = tmp_path_factory.mktemp("biggan")
    final = jax.device_get(train.train_and_evaluate(cfg, workdir))
    ckpt = Checkpointer(workdir, keep=0, async_save=False, create=False)
    # Host arrays throughout, so each jitted function below compiles once for all states.
    states = {s: jax.device_get(ckpt.restore(final, None, s)[0]) for s in (1, 2, 3)}
    ckpt.close()
    method = registry.build(cfg)
    it = make_train_iterator(cfg, cfg.seed)
    batches = [next(it) for _ in range(3)]
    rows = {r["step"]: r for r in map(json.loads, (workdir / "metrics.jsonl").read_text().splitlines())
            if r["split"] == "train"}
    jitted = jax.jit(lambda s, r, y, psi: method.sample(s, r, len(y), labels=y, truncation=psi))

    def sample(state, rng, labels, truncation=0.0):  # one program for every call below
        return np.asarray(jitted(state, rng, jnp.asarray(labels, jnp.int32), jnp.float32(truncation)))

    return {"cfg": cfg, "state": final, "states": {**states, 6: final}, "method": method,
            "sample": sample, "x": jnp.asarray(batches[0]["x"]), "y": jnp.asarray(batches[0]["y"]),
            "batches": batches, "rows": rows, "workdir": workdir,
            "train_key": train.setup(cfg, workdir).keys["train"]}


def test_a_tiny_run_trains_and_samples_class_by_class(run):
    state, method = run["state"], run["method"]
    assert (int(state.step), int(state.d.step), int(state.g.step)) == (6, 6, 6)
    assert (run["workdir"] / "samples" / "step_000006.png").exists()
    # Spectral norm's power-iteration vectors advance in both networks' updates.
    for net in ("g", "d"):
        u2, u3 = (jax.tree.leaves(getattr(run["states"][s], net).model_state["spectral"]) for s in (2, 3))
        assert all(np.abs(np.asarray(a) - b).max() > 0 for a, b in zip(u2, u3, strict=True)
                   if a.size > 1), net  # (a 1-vector, D's output layer's, is always +-1)
    x = run["sample"](state, jax.random.key(0), method.class_labels(10))
    assert x.shape == (10, 8, 8, 3) and np.abs(x).max() <= 1.0 and np.isfinite(x).all()
    np.testing.assert_array_equal(method.class_labels(20), np.repeat(np.arange(10), 2))


# -- the paper's pieces by hand --------------------------------------------------------


def test_conditional_batch_norm_of_two_classes_by_numpy(run):
    """Block 0's first CBN: batch statistics, gain 1 + W_g c and bias W_b c, with c = [shared
    embedding of the class, latent chunk 1] (chunk 0 feeds the input layer)."""
    method, g = run["method"], run["state"].g
    ms = _exact_spectral(g.params, g.model_state)
    n, dz = 6, method.config.model.latent_dim
    z = np.random.default_rng(0).normal(size=(n, dz)).astype(np.float32)
    y = np.array([0, 0, 0, 1, 1, 1], np.int32)

    @jax.jit
    def inner(params, ms, z, y):
        _, st = method.g_net.apply({"params": params, **ms}, z, y, capture_intermediates=True,
                                   mutable=["intermediates"])
        it = st["intermediates"]
        return it["linear"]["__call__"][0], it["block0"]["bn1"]["__call__"][0]

    lin, bn1 = map(np.asarray, inner(g.params, ms, z, y))
    p = jax.tree.map(np.asarray, g.params)
    h = lin.reshape(n, 4, 4, -1).astype(np.float64)
    x_hat = (h - h.mean((0, 1, 2))) / np.sqrt(h.var((0, 1, 2)) + 1e-5)
    chunk = dz // len(method.config.model.g_channels)
    cond = np.concatenate([p["shared"]["embedding"][y], z[:, chunk:2 * chunk]], -1)
    wg, wb = p["block0"]["bn1"]["gain"]["kernel"], p["block0"]["bn1"]["bias"]["kernel"]
    gain = 1.0 + cond @ wg / _sigma(wg)
    bias = cond @ wb / _sigma(wb)
    want = x_hat * gain[:, None, None, :] + bias[:, None, None, :]
    np.testing.assert_allclose(bn1, want, rtol=1e-4, atol=1e-4)
    assert np.abs(want[:3] - want[3:]).max() > 1e-2  # the two classes are normalized apart


def test_projection_discriminator_class_term_is_the_inner_product(run):
    method, d = run["method"], run["state"].d
    ms = _exact_spectral(d.params, d.model_state)
    x = run["x"][:4]
    y0, y1 = jnp.array([0, 1, 2, 3]), jnp.array([5, 6, 7, 8])

    @jax.jit
    def scores(x, y0, y1):
        v = {"params": d.params, **ms}
        return (method.d_net.apply(v, x, y0), method.d_net.apply(v, x, y1),
                method.d_net.apply(v, x, y0, terms=True))

    out0, out1, (psi, phi, table) = jax.tree.map(np.asarray, scores(x, y0, y1))
    p = jax.tree.map(np.asarray, d.params)
    w = p["linear"]["kernel"]
    np.testing.assert_allclose(psi, phi @ w[:, 0] / np.linalg.norm(w) + p["linear"]["bias"][0],
                               rtol=1e-4, atol=1e-4)
    embed = p["embed"] / _sigma(p["embed"])
    np.testing.assert_allclose(table, embed, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(out0, psi + np.sum(embed[y0] * phi, -1), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(out0 - out1, np.sum((embed[y0] - embed[y1]) * phi, -1), rtol=1e-3,
                               atol=1e-4)
    assert np.abs(out0 - out1).min() > 1e-3


def _ortho_by_numpy(params: dict) -> float:
    """sum ||W^T W - diag(W^T W)||_F^2 over G's kernels (fan_in x fan_out), not the shared embedding."""
    total = 0.0
    for path, w in jax.tree_util.tree_flatten_with_path(params)[0]:
        if path[-1].key != "kernel" or path[0].key == "shared":
            continue
        w = np.asarray(w, np.float64).reshape(-1, w.shape[-1])
        gram = w.T @ w
        total += np.sum((gram - np.diag(np.diag(gram))) ** 2)
    return float(total)


def test_orthogonal_regularization_by_numpy():
    rng = np.random.default_rng(1)
    params = {"shared": {"embedding": rng.normal(size=(4, 3))},
              "conv": {"kernel": rng.normal(size=(3, 3, 2, 5)), "bias": rng.normal(size=5)},
              "block": {"gain": {"kernel": rng.normal(size=(6, 4))}}}
    want = 0.0
    for w in (params["conv"]["kernel"].reshape(18, 5), params["block"]["gain"]["kernel"]):
        gram = w.T @ w
        want += np.sum((gram - np.diag(np.diag(gram))) ** 2)
    assert abs(_ortho_by_numpy(params) - want) < 1e-9 * want
    got = jax.jit(biggan.ortho_reg)(jax.tree.map(jnp.float32, params))
    np.testing.assert_allclose(got, want, rtol=1e-5)
    q = np.linalg.qr(rng.normal(size=(7, 4)))[0] * 3.0  # orthogonal columns, any norm: zero
    assert float(biggan.ortho_reg({"a": {"kernel": jnp.float32(q)}})) < 1e-8


def test_truncated_latents_stay_within_psi_and_follow_the_truncated_normal():
    draw = jax.jit(biggan.truncated_normal, static_argnums=1)
    for psi in (0.5, 1.5):
        z = np.asarray(draw(jax.random.key(2), (200, 20), psi)).ravel()
        assert np.abs(z).max() <= psi
        ks = scipy.stats.kstest(z, scipy.stats.truncnorm(-psi, psi).cdf)
        assert ks.pvalue > 1e-3, (psi, ks)
    z = np.asarray(draw(jax.random.key(2), (200, 20), 0.0)).ravel()  # 0: no truncation
    assert scipy.stats.kstest(z, "norm").pvalue > 1e-3 and np.abs(z).max() > 2.5


def test_ema_follows_the_formula_with_its_start_step(run):
    """In the run: a copy of G after G steps 1 and 2 (< ema_start = 3), then
    ema_3 = decay ema_2 + (1 - decay) params_3."""
    st, decay = run["states"], run["cfg"].train.ema_decay
    assert run["cfg"].biggan.ema_start == 3
    for s in (1, 2):
        for p, e in zip(jax.tree.leaves(st[s].g.params), jax.tree.leaves(st[s].g.ema_params), strict=True):
            np.testing.assert_array_equal(p, e)
    for e2, p3, e3 in zip(jax.tree.leaves(st[2].g.ema_params), jax.tree.leaves(st[3].g.params),
                          jax.tree.leaves(st[3].g.ema_params), strict=True):
        np.testing.assert_allclose(e3, decay * np.asarray(e2) + (1 - decay) * np.asarray(p3),
                                   rtol=1e-5, atol=1e-7)
    assert any(np.abs(np.asarray(e) - p).max() > 1e-6 for e, p in zip(
        jax.tree.leaves(st[3].g.ema_params), jax.tree.leaves(st[3].g.params), strict=True))
    ema, params = {"w": jnp.array([1.0, 2.0])}, {"w": jnp.array([3.0, -2.0])}
    np.testing.assert_allclose(biggan.ema_update(ema, params, jnp.int32(4), 0.9, 5)["w"], [3.0, -2.0])
    np.testing.assert_allclose(biggan.ema_update(ema, params, jnp.int32(5), 0.9, 5)["w"],
                               [0.9 * 1 + 0.1 * 3, 0.9 * 2 - 0.1 * 2], rtol=1e-6)


# -- the sampler ----------------------------------------------------------------------


def test_sample_uses_the_ema_weights_not_the_raw_ones(run):
    state, sample, labels = run["state"], run["sample"], run["method"].class_labels(10)
    g = state.g
    assert any(not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(g.params),
                                                         jax.tree.leaves(g.ema_params), strict=True))
    scramble = lambda t: jax.tree.map(lambda a: -a[::-1] if a.ndim else a, t)  # noqa: E731
    key = jax.random.key(3)
    base = sample(state, key, labels)
    raw_changed = state.replace(g=g.replace(params=scramble(g.params)))
    ema_changed = state.replace(g=g.replace(ema_params=scramble(g.ema_params)))
    np.testing.assert_array_equal(sample(raw_changed, key, labels), base)
    assert np.abs(sample(ema_changed, key, labels) - base).max() > 1e-3


def test_standing_statistics_and_truncation(run):
    """A sample does not depend on what else is in its batch (fixed statistics), and latents
    truncated at psi -> 0 give the image of z = 0 for each class (psi = 0.01: ~500 rounds
    of resampling; closer to 0 the loop grows as 1 / psi)."""
    method, state = run["method"], run["state"]
    gen = jax.jit(method.generate)
    z = jax.random.normal(jax.random.key(4), (10, method.config.model.latent_dim))
    y = jnp.arange(10) % 3
    rs = jax.random.key(5)
    full = np.asarray(gen(state, z, y, rs))
    other = np.asarray(gen(state, z.at[4:].multiply(-3.0), y.at[4:].set(9), rs))
    np.testing.assert_allclose(other[:4], full[:4], rtol=1e-4, atol=1e-5)
    key = jax.random.key(6)
    tiny = run["sample"](state, key, y, truncation=1e-2)
    at_zero = np.asarray(gen(state, jnp.zeros_like(z), y, jax.random.split(key)[1]))
    near, far = np.abs(tiny - at_zero).max(), np.abs(run["sample"](state, key, y) - at_zero).max()
    assert near < 0.05 * far, (near, far)


# -- the updates ----------------------------------------------------------------------


def test_d_steps_score_real_above_fake(run):
    """D after steps 2 and 6 of the run, on one real batch and fixed fakes: D(real, y) -
    D(fake, y) grows."""
    method, st = run["method"], run["states"]
    x, y = run["x"][:10], run["y"][:10]  # (10 labels: the sampler's program of the tests above)
    fake = jnp.asarray(run["sample"](run["state"], jax.random.key(7), y))

    @jax.jit
    def margin(d):
        out, _ = apply_d(method.d_net, d.params, d.model_state, jnp.concatenate([x, fake]),
                         jnp.concatenate([y, y]))
        return (out[:len(y)] - out[len(y):]).mean()

    before, after = float(margin(st[2].d)), float(margin(st[6].d))
    assert after > before + 0.3, (before, after)


def test_d_step_scores_reals_with_their_labels_and_fakes_with_theirs(run):
    """Step 3's logged d_real, d_fake and d_loss, recomputed by hand: D (after step 2) on the
    step's real batch with its labels, advancing its power iteration, then on G's samples of
    latents N(0, I) and uniform classes drawn from the step's D key (fold_in(train key, 2),
    split into d_steps + 1, the first; split into a latent and a label key), with those
    classes."""
    method, st, cfg = run["method"], run["states"], run["cfg"]
    n = cfg.data.batch_size // cfg.biggan.d_steps
    batch = run["batches"][2]
    x, y = jnp.asarray(batch["x"][:n]), jnp.asarray(batch["y"][:n])
    key = jax.random.split(jax.random.fold_in(run["train_key"], 2), cfg.biggan.d_steps + 1)[0]

    @jax.jit
    def scores(g, d):
        rz, ry = jax.random.split(key)
        # truncated_normal's round 0 (psi = 0: the only one)
        z = jax.random.normal(jax.random.fold_in(rz, 0), (n, cfg.model.latent_dim))
        y_fake = jax.random.randint(ry, (n,), 0, 10)
        fake, _ = method.generator(g.params, g.model_state, z, y_fake)
        real_out, ms = apply_d(method.d_net, d.params, d.model_state, x, y, update=True)
        return real_out, apply_d(method.d_net, d.params, ms, fake, y_fake)[0]

    real_out, fake_out = map(np.asarray, scores(st[2].g, st[2].d))
    row = run["rows"][3]
    np.testing.assert_allclose(row["d_real"], real_out.mean(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(row["d_fake"], fake_out.mean(), rtol=1e-4, atol=1e-5)
    hinge = np.maximum(0, 1 - real_out).mean() + np.maximum(0, 1 + fake_out).mean()
    np.testing.assert_allclose(row["d_loss"], hinge, rtol=1e-4, atol=1e-5)


def test_g_loss_by_hand_and_a_g_step_lowers_it(run):
    """G's loss is -E[D(G(z, y), y)] + beta ortho_reg (beta = biggan.ortho_weight). Step 3's
    G update, on its own latents and labels (keys as documented: fold_in(train key, 2),
    split into d_steps + 1, the last for G), lowers that loss at step 3's D."""
    method, st, cfg = run["method"], run["states"], run["cfg"]
    step_rng = jax.random.fold_in(run["train_key"], 2)
    g_key = jax.random.split(step_rng, cfg.biggan.d_steps + 1)[-1]
    n = cfg.data.batch_size // cfg.biggan.d_steps

    @jax.jit
    def losses(s2, s3):
        rz, ry = jax.random.split(g_key)
        z, y = method.latents(rz, n), method.random_labels(ry, n)
        before, (metrics, _) = method.g_loss(s2.g.params, s2.replace(d=s3.d), z, y)
        after, _ = method.g_loss(s3.g.params, s3.replace(g=s3.g.replace(model_state=s2.g.model_state)), z, y)
        # By hand: D(G(z, y), y), G advancing its power iteration as in its training step.
        fake, _ = method.generator(s2.g.params, s2.g.model_state, z, y, update=True)
        return before, after, metrics, apply_d(method.d_net, s3.d.params, s3.d.model_state, fake, y)[0]

    before, after, metrics, d_out = losses(st[2], st[3])
    ortho = _ortho_by_numpy(st[2].g.params)
    beta = cfg.biggan.ortho_weight
    assert beta > 0 and ortho > 0
    np.testing.assert_allclose(float(metrics["ortho"]), ortho, rtol=1e-5)
    np.testing.assert_allclose(float(metrics["g_loss"]), -float(d_out.mean()), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(float(before), -float(d_out.mean()) + beta * ortho, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(float(metrics["g_loss"]), run["rows"][3]["g_loss"], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(ortho, run["rows"][3]["ortho"], rtol=1e-5)
    assert float(after) < float(before), (before, after)


def test_config_errors_name_the_value():
    for overrides, match in (({"model.latent_dim": 7}, "model.latent_dim=7 must split"),
                             ({"biggan.truncation": -1.0}, "biggan.truncation=-1.0"),
                             ({"model.d_downsample": (True,)}, "one flag per entry"),
                             ({"data.name": "moons"}, "BigGAN generates images; 'moons'"),
                             ({"model.g_channels": (8, 8, 8)}, "makes 16px images"),
                             ({"model.attention_resolution": 8}, r"=8 must be 0 \(none\) or a size "
                              r"output by both a G block \[8\] and a D block \[4\]")):
        with pytest.raises(ConfigError, match=match):
            registry.build(load_config(f"{CONFIG}:smoke", **overrides))


def test_unlabelled_images_train_as_one_class():
    """faces100 has no labels: BigGAN trains on it as one class (every label 0), the same
    updates as the batch given class 0 explicitly; samples are of that class."""
    cfg = load_config(f"{CONFIG}:smoke", **{"data.name": "faces100"})
    with cfg.unlocked():
        cfg.data.image_size = 8  # the smoke networks' size
    method = registry.build(cfg)
    assert method.num_classes == 1 and method.info.num_classes is None
    x = jnp.asarray(np.random.default_rng(0).uniform(-1, 1, (16, 8, 8, 1)), jnp.float32)
    state = method.init(jax.random.key(0), {"x": x})
    step = jax.jit(method.train_step)
    unlabelled = step(state, {"x": x}, jax.random.key(1))
    chex.assert_trees_all_close(unlabelled, step(state, {"x": x, "y": jnp.zeros(16, jnp.int32)},
                                                 jax.random.key(1)))
    assert np.isfinite(float(unlabelled[1]["loss"]))
    np.testing.assert_array_equal(method.class_labels(5), np.zeros(5))
    assert method.sample(unlabelled[0], jax.random.key(2), 4).shape == (4, 8, 8, 1)


def _pool2(a):
    n, h, w, c = a.shape
    return a.reshape(n, h // 2, 2, w // 2, 2, c).max((2, 4)).reshape(n, -1, c)


def test_self_attention_by_numpy_and_its_place_in_both_networks():
    """SAGAN's block against numpy (1x1 convs read off as matrices by applying each
    spectrally normalized conv to the identity); gamma starts at 0, so G and D with
    attention equal them without it until gamma moves; with gamma != 0 it changes both."""
    att = biggan.SelfAttention(16)
    g_net = biggan.Generator((8, 8, 3), (8, 8), 10, 4, (-1.0, 1.0), attention_resolution=8)
    d_net = biggan.Discriminator((8, 8), (False, True), 10, attention_resolution=8)

    @jax.jit  # one program (eagerly, every slice of init_variables compiled on its own)
    def inputs_and_variables():
        x = jax.random.normal(jax.random.key(0), (2, 4, 4, 16))
        z, y = jax.random.normal(jax.random.key(2), (4, 8)), jnp.arange(4)
        img = jax.random.normal(jax.random.key(3), (4, 8, 8, 3))
        k = jax.random.key(0)
        return (x, z, y, img,
                biggan.init_variables(jax.random.key(1), jax.eval_shape(att.init, k, x)),
                biggan.init_variables(jax.random.key(4), jax.eval_shape(g_net.init, k, z, y)),
                biggan.init_variables(jax.random.key(5), jax.eval_shape(d_net.init, k, img, y)))

    x, z, y, img, v, gv, dv = inputs_and_variables()
    assert float(v["params"]["gamma"]) == 0.0
    v = {**v, "params": {**v["params"], "gamma": jnp.float32(0.7)}}

    def without(variables):
        return {k: {n: w for n, w in col.items() if n != "attention"} for k, col in variables.items()}

    def with_gamma(variables, gamma):
        return {**variables, "params": {**variables["params"], "attention": {
            **variables["params"]["attention"], "gamma": jnp.float32(gamma)}}}

    @jax.jit
    def run(v, gv, dv):
        mats = {n: att.apply(v, jnp.eye(k).reshape(k, 1, 1, k), method=lambda m, e, n=n: getattr(m, n)(e))
                for n, k in (("theta", 16), ("phi", 16), ("g", 16), ("o", 8))}
        g_plain = biggan.Generator((8, 8, 3), (8, 8), 10, 4, (-1.0, 1.0))
        d_plain = biggan.Discriminator((8, 8), (False, True), 10)
        return (att.apply(v, x), {n: m.reshape(m.shape[0], -1) for n, m in mats.items()},
                [g_net.apply(with_gamma(gv, a), z, y) for a in (0.0, 0.5)],
                g_plain.apply(without(gv), z, y),
                [d_net.apply(with_gamma(dv, a), img, y) for a in (0.0, 0.5)],
                d_plain.apply(without(dv), img, y))

    out, w, (g0, g5), g_plain, (d0, d5), d_plain = jax.device_get(run(v, gv, dv))
    xn = np.asarray(x, np.float64)
    theta = xn.reshape(2, 16, 16) @ w["theta"]
    phi, g = _pool2(xn @ w["phi"]), _pool2(xn @ w["g"])
    logits = theta @ phi.transpose(0, 2, 1)
    beta = np.exp(logits - logits.max(-1, keepdims=True))
    beta /= beta.sum(-1, keepdims=True)
    want = xn + 0.7 * ((beta @ g) @ w["o"]).reshape(2, 4, 4, 16)
    np.testing.assert_allclose(out, want, rtol=1e-4, atol=1e-5)
    assert np.abs(want - xn).max() > 1e-2  # not the identity
    assert {"attention"} <= set(gv["params"]) and {"attention"} <= set(dv["params"])
    np.testing.assert_allclose(g0, g_plain, atol=1e-6)
    np.testing.assert_allclose(d0, d_plain, atol=1e-5)
    assert np.abs(g5 - g0).max() > 1e-3 and np.abs(d5 - d0).max() > 1e-3
    # The Method places it from the config (traced only): 16px, attention at 8x8 in both.
    method = registry.build(load_config(f"{CONFIG}:smoke", **{
        "data.patch_size": 16, "model.g_channels": (8, 8, 8), "model.latent_dim": 6,
        "model.d_channels": (8, 8), "model.d_downsample": (True, False), "model.attention_resolution": 8}))
    batch = {"x": jnp.zeros((16, 16, 16, 3)), "y": jnp.zeros((16,), jnp.int32)}
    state = jax.eval_shape(method.init, jax.random.key(0), batch)
    assert "attention" in state.g.params and "attention" in state.d.params
    assert jax.eval_shape(lambda s: method.sample(s, jax.random.key(1), 4), state).shape == (4, 16, 16, 3)
