"""MAE: patchify and position embeddings against index formulas, exact mask ratio,
loss on hidden patches only, encoder blind to hidden pixels, training, probe."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import CONFIGS

from gen_jax import load_config, registry
from gen_jax.autoencoders.mae import (
    linear_probe,
    logistic_probe,
    masked_patch_loss,
    normalize_patches,
    num_masked_patches,
    random_masking,
)
from gen_jax.data import load_split
from gen_jax.errors import ConfigError
from gen_jax.nn.attention import patchify, sincos_pos_embed_2d, unpatchify

TINY_MAE = {"model.enc_dim": 32, "model.enc_depth": 2, "model.enc_heads": 2, "model.dec_dim": 16,
            "model.dec_depth": 1, "model.dec_heads": 2, "data.batch_size": 32,
            "optim.schedule": "constant", "optim.warmup_steps": 0, "optim.learning_rate": 2e-3,
            "train.num_steps": 60}


def tiny_mae_config(**overrides):
    return load_config(CONFIGS / "mae_digits.py", **{**TINY_MAE, **overrides})


@pytest.fixture(scope="module")
def trained():
    """A tiny MAE trained 60 steps on one fixed batch (shared: one compile)."""
    config = tiny_mae_config()
    mae = registry.build(config)
    x, _ = load_split(config, "train")
    x = jnp.asarray(x[:32])
    state = jax.jit(mae.init)(jax.random.key(0), {"x": x})
    step = jax.jit(mae.train_step)
    losses = []
    for i in range(60):
        state, metrics = step(state, {"x": x}, jax.random.key(100 + i))
        losses.append(float(metrics["loss"]))
    mae.fwd = jax.jit(mae._forward, static_argnums=3)  # shared by the tests below: one compile
    return mae, state, x, losses


def test_patchify_matches_the_index_formula_and_inverts():
    n, h, w, c, p = 2, 6, 4, 3, 2
    x = np.arange(n * h * w * c, dtype=np.float32).reshape(n, h, w, c)
    patches = np.asarray(patchify(x, p))
    assert patches.shape == (n, (h // p) * (w // p), p * p * c)
    for b, i, j, di, dj, k in [(0, 0, 0, 0, 0, 0), (1, 2, 1, 1, 0, 2), (1, 1, 1, 0, 1, 1)]:
        # patch i * (w/p) + j, entry (di * p + dj) * c + k  <-  pixel (i*p + di, j*p + dj, k)
        assert patches[b, i * (w // p) + j, (di * p + dj) * c + k] == x[b, i * p + di, j * p + dj, k]
    np.testing.assert_array_equal(unpatchify(patches, p, (h, w, c)), x)
    with pytest.raises(ValueError, match="divisible"):
        patchify(np.zeros((1, 5, 4, 1)), 2)


def test_sincos_embedding_matches_its_formula():
    dim, gh, gw = 8, 3, 4
    emb = sincos_pos_embed_2d(dim, gh, gw)
    assert emb.shape == (gh * gw, dim)
    for r in range(gh):
        for col in range(gw):
            for k in range(2):
                w_k = 10000.0 ** (-k / 2)
                row_vec = emb[r * gw + col]
                assert row_vec[k] == pytest.approx(np.sin(r * w_k), abs=1e-6)
                assert row_vec[2 + k] == pytest.approx(np.cos(r * w_k), abs=1e-6)
                assert row_vec[4 + k] == pytest.approx(np.sin(col * w_k), abs=1e-6)
                assert row_vec[6 + k] == pytest.approx(np.cos(col * w_k), abs=1e-6)
    with pytest.raises(ConfigError, match="divisible by 4"):
        sincos_pos_embed_2d(6, 2, 2)


@pytest.mark.parametrize("ratio, hidden", [(0.75, 12), (0.85, 14), (0.95, 15), (0.5, 8)])
def test_mask_ratio_is_exact_for_every_example(ratio, hidden):
    assert num_masked_patches(ratio, 16) == hidden
    ids_keep, ids_restore, mask = (np.asarray(a) for a in random_masking(jax.random.key(0), 500, 16, hidden))
    assert (mask.sum(1) == hidden).all() and set(np.unique(mask)) == {0.0, 1.0}
    for b in range(500):
        # the kept indices are exactly the visible positions; ids_restore inverts the shuffle
        assert sorted(ids_keep[b]) == list(np.flatnonzero(mask[b] == 0))
        assert sorted(ids_restore[b]) == list(range(16))
    # Each patch is hidden with probability ratio; masks differ between examples.
    assert np.abs(mask.mean(0) - hidden / 16).max() < 0.08
    sets = math.comb(16, hidden)
    assert len({m.tobytes() for m in mask}) > 0.9 * sets * (1 - (1 - 1 / sets) ** 500)  # E[#distinct]
    other = np.asarray(random_masking(jax.random.key(1), 500, 16, hidden)[2])
    assert not np.array_equal(other, mask)


def test_loss_ignores_predictions_at_visible_patches():
    rng = np.random.default_rng(0)
    pred, target = rng.normal(size=(2, 4, 16, 5)).astype(np.float32)
    _, _, mask = random_masking(jax.random.key(2), 4, 16, 12)
    mask = np.asarray(mask)
    base = np.asarray(masked_patch_loss(pred, target, mask))
    want = ((pred - target) ** 2).mean(-1)
    np.testing.assert_allclose(base, (want * mask).sum(1) / 12, rtol=1e-5)
    changed = pred + 10.0 * (1.0 - mask)[..., None] * rng.normal(size=pred.shape).astype(np.float32)
    np.testing.assert_array_equal(np.asarray(masked_patch_loss(changed, target, mask)), base)
    hidden_changed = pred + 0.1 * mask[..., None]
    assert not np.allclose(np.asarray(masked_patch_loss(hidden_changed, target, mask)), base)


def test_model_loss_is_the_masked_loss_and_visible_predictions_do_not_enter(trained):
    mae, state, x, _ = trained
    rng = jax.random.key(7)
    loss, terms = jax.jit(mae.get_loss_fn())(state.params, x, rng)
    patches = patchify(x, 2)
    pred, mask = mae.fwd(state.params, patches, rng, mae.num_masked)
    assert (np.asarray(mask).sum(1) == 12).all()
    assert float(loss) == pytest.approx(float(masked_patch_loss(pred, patches, mask).mean()), rel=1e-6)
    scrambled = jnp.where(mask[..., None] > 0, pred, -pred + 3.0)
    assert float(masked_patch_loss(scrambled, patches, mask).mean()) == pytest.approx(float(loss), rel=1e-6)
    # The decoder's (untrained-for) visible-patch error is larger than the hidden-patch loss.
    assert float(terms["mse_visible_pixels"]) > 0.0


def test_encoder_is_blind_to_hidden_patches(trained):
    mae, state, x, _ = trained
    rng = jax.random.key(11)
    patches = patchify(x[:8], 2)
    pred, mask = mae.fwd(state.params, patches, rng, mae.num_masked)
    noise = jax.random.normal(jax.random.key(12), patches.shape)
    pred_hidden, _ = mae.fwd(state.params, patches + mask[..., None] * noise, rng, mae.num_masked)
    np.testing.assert_allclose(pred_hidden, pred, atol=1e-5)
    pred_visible, _ = mae.fwd(state.params, patches + (1 - mask)[..., None] * noise, rng,
                                   mae.num_masked)
    assert np.abs(np.asarray(pred_visible - pred)).max() > 1e-2


def test_loss_falls_and_outputs_have_the_right_shapes(trained):
    mae, state, x, losses = trained
    assert np.isfinite(losses).all()
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:3]), losses
    s = jax.jit(mae.sample, static_argnums=2)(state, jax.random.key(1), 5)
    assert s.shape == (5, 8, 8, 1) and float(s.min()) >= 0.0 and float(s.max()) <= 1.0
    parts = jax.jit(mae.reconstruction_parts, static_argnames="mask_ratio")(
        state, x[:4], jax.random.key(2), mask_ratio=0.5)
    visible = np.repeat(np.repeat((np.asarray(parts["mask"]) == 0).reshape(4, 4, 4), 2, 1), 2, 2)[..., None]
    assert visible.sum() == 4 * 8 * 4  # half the 16 patches, 4 pixels each
    np.testing.assert_array_equal(np.asarray(parts["pasted"])[visible], np.asarray(x[:4])[visible])
    assert (np.asarray(parts["masked"])[~visible] == 0.0).all()
    np.testing.assert_array_equal(jax.jit(mae.reconstruct, static_argnames="mask_ratio")(
        state, x[:4], jax.random.key(2), mask_ratio=0.5), parts["pasted"])
    feats = jax.jit(mae.features, static_argnames="pool")
    mean, flat = feats(state, x[:3], pool="mean"), feats(state, x[:3], pool="flatten")
    assert mean.shape == (3, 32) and flat.shape == (3, 16 * 32)
    assert feats(state, x[:3], pool="cls").shape == (3, 32)
    np.testing.assert_allclose(mean, np.asarray(flat).reshape(3, 16, 32).mean(1), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="pool"):
        mae.features(state, x[:3], pool="max")


def test_anomaly_score_averages_the_masked_loss_over_independent_masks(trained):
    mae, state, x, _ = trained
    rng = jax.random.key(4)
    score = np.asarray(jax.jit(mae.anomaly_score, static_argnames="num_masks")(
        state, x[:8], rng, num_masks=3))
    patches = patchify(x[:8], 2)
    want = []
    for key in jax.random.split(rng, 3):
        pred, mask = mae.fwd(state.eval_params, patches, key, 12)
        want.append(np.asarray(masked_patch_loss(pred, patches, mask)))
    want = np.mean(want, axis=0)
    np.testing.assert_allclose(score, want, rtol=1e-5)


def test_normalized_pixel_targets():
    rng = np.random.default_rng(3)
    p = rng.random((2, 5, 4)).astype(np.float32)
    want = (p - p.mean(-1, keepdims=True)) / np.sqrt(p.var(-1, keepdims=True) + 1e-6)
    np.testing.assert_allclose(normalize_patches(p), want, rtol=1e-5, atol=1e-6)
    config = tiny_mae_config(**{"model.norm_pix_loss": True})
    mae = registry.build(config)
    x, _ = load_split(config, "val")
    x = jnp.asarray(x[:8])
    state = jax.jit(mae.init)(jax.random.key(0), {"x": x})
    loss, _ = jax.jit(mae.get_loss_fn())(state.params, x, jax.random.key(1))
    patches = patchify(x, 2)
    pred, mask = jax.jit(mae._forward, static_argnums=3)(state.params, patches, jax.random.key(1), 12)
    assert float(loss) == pytest.approx(float(masked_patch_loss(pred, jnp.asarray(
        (np.asarray(patches) - np.asarray(patches).mean(-1, keepdims=True))
        / np.sqrt(np.asarray(patches).var(-1, keepdims=True) + 1e-6)), mask).mean()), rel=1e-5)


def test_patch_statistics_are_a_warmed_up_ema_of_the_batch_moments(trained):
    """Trained on one fixed batch: the running moments are (1 - prod d_n) times that
    batch's per-position moments plus prod d_n times the N(0, I) start, d_n the
    warmed-up decay of update n; eval leaves them alone."""
    mae, state, x, _ = trained
    patches = np.asarray(patchify(x, 2), np.float64)
    keep = np.prod([min(0.99, (1 + n) / (10 + n)) for n in range(60)])
    assert int(state.model_state["count"]) == 60 == int(state.step)
    want_mean = (1 - keep) * patches.mean(0)
    want_second = (1 - keep) * np.einsum("nlp,nlq->lpq", patches, patches) / len(x) + keep * np.eye(4)
    np.testing.assert_allclose(state.model_state["mean"], want_mean, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(state.model_state["second"], want_second, rtol=1e-4, atol=1e-5)
    assert set(jax.jit(mae.eval_step)(state, {"x": x}, jax.random.key(0))) >= {"loss",
                                                                              "mse_masked_pixels"}


def test_linear_probe_on_frozen_features(trained):
    mae, state, _, _ = trained
    # The caller loads the labelled splits (all classes); the probe takes arrays.
    config = tiny_mae_config()
    splits = [load_split(config, s) for s in ("train", "val", "test")]
    result = linear_probe(mae, state, *splits, cs=(1.0,))
    assert set(result) == {"train_accuracy", "val_accuracy", "test_accuracy", "C"}
    assert result["test_accuracy"] > 0.5  # 10 classes: chance is 0.1
    rng = np.random.default_rng(0)
    f = rng.normal(size=(300, 2)) + np.repeat(np.eye(2) * 4, 150, 0)
    y = np.repeat([0, 1], 150)
    separable = logistic_probe((f, y), (f, y), (f, y), cs=(0.1, 1.0))
    assert separable["test_accuracy"] > 0.95 and separable["C"] in (0.1, 1.0)


@pytest.mark.parametrize("overrides, match", [
    ({"model.patch_size": 3}, "patch_size"),
    ({"model.mask_ratio": 0.99}, "leave at least one visible"),
    ({"model.mask_ratio": 0.02}, "hide at least one"),
    ({"model.enc_heads": 3}, "enc_heads"),
    ({"model.dec_dim": 18}, "divisible by 4"),
    ({"data.name": "moons"}, "image data"),
])
def test_bad_configs_raise_config_error(overrides, match):
    with pytest.raises(ConfigError, match=match):
        registry.build(tiny_mae_config(**overrides))
    if "model.mask_ratio" not in overrides:
        return
    mae = registry.build(tiny_mae_config())
    with pytest.raises(ConfigError, match="mask ratio"):
        mae.reconstruction_parts(None, jnp.zeros((1, 8, 8, 1)), jax.random.key(0),
                                 mask_ratio=overrides["model.mask_ratio"])
