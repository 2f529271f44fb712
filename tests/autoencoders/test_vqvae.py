"""VQ-VAE / VQ-VAE-2: quantizer vs brute force, straight-through gradient, EMA update by
hand, dead-code restarts, the Method's state updates in both codebook modes (EMA statistics
against numpy, where the codebook and commitment gradients go), and the prior's config errors."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import CONFIGS

from gen_jax import load_config, registry
from gen_jax.autoencoders.vqvae import (
    VectorQuantizer,
    VQDecoder,
    VQEncoder,
    code_perplexity,
    ema_codebook_update,
    restart_dead_codes,
)
from gen_jax.data import load_split
from gen_jax.errors import ConfigError
from gen_jax.registry import HasAnomalyScore, HasLatent, HasLogProb, HasReconstruct, Method

TINY = {"model.channels": 8, "model.code_dim": 4, "model.num_codes": 8, "model.num_res": 0,
        "data.batch_size": 16}


def test_quantizer_rows_nearest_code_and_straight_through():
    vq = VectorQuantizer(num_codes=7, dim=3, ema=False)
    z = jax.random.normal(jax.random.key(0), (2, 4, 4, 3))
    # Jitted (eagerly, each op would compile on its own).
    params = jax.jit(vq.init)(jax.random.key(1), z)
    table = np.asarray(params["params"]["codebook"])
    z_st, aux = jax.jit(vq.apply)(params, z)
    # Brute-force nearest neighbour.
    d = ((np.asarray(z)[..., None, :] - table) ** 2).sum(-1)
    np.testing.assert_array_equal(aux["idx"], d.argmin(-1))
    # Quantized outputs are exactly codebook rows.
    np.testing.assert_array_equal(np.asarray(aux["z_q"]), table[np.asarray(aux["idx"])])
    np.testing.assert_allclose(z_st, aux["z_q"], atol=1e-6)
    # Straight-through: d(sum(w * z_st))/dz = w (the identity), although argmin has no gradient.
    w = jax.random.normal(jax.random.key(2), z.shape)
    gz = jax.jit(jax.grad(lambda z: jnp.sum(w * vq.apply(params, z)[0])))(z)
    np.testing.assert_allclose(gz, w, rtol=1e-6)
    # ... and no gradient reaches the codebook through the straight-through output.
    gp = jax.jit(jax.grad(lambda p: jnp.sum(w * vq.apply(p, z)[0])))(params)
    assert not np.asarray(gp["params"]["codebook"]).any()


def test_residual_blocks_keep_their_checkpoint_names():
    """VQResBlock instances are named ResBlock_<i>, as before the class was renamed."""
    for net, x in ((VQEncoder(8, 2, 4, 1), jnp.zeros((1, 8, 8, 1))),
                   (VQDecoder(8, 2, 1, 1), jnp.zeros((1, 4, 4, 4)))):
        shapes = jax.eval_shape(lambda net=net, x=x: net.init(jax.random.key(0), x))
        assert {"ResBlock_0", "ResBlock_1"} <= set(shapes["params"])


def test_ema_update_restart_and_perplexity_by_hand():
    rng = np.random.default_rng(0)
    k, d, m, decay, eps = 5, 3, 40, 0.9, 1e-5
    count, summed = rng.uniform(0.5, 2, k), rng.normal(size=(k, d))
    z, idx = rng.normal(size=(m, d)), rng.integers(0, k - 1, m)  # code k-1 unused
    new_count, new_sum, table = jax.jit(ema_codebook_update)(
        jnp.asarray(count), jnp.asarray(summed), jnp.asarray(z), jnp.asarray(idx), decay, eps)
    want_count, want_sum = count.copy(), summed.copy()
    for j in range(k):
        members = z[idx == j]
        want_count[j] = decay * count[j] + (1 - decay) * len(members)
        want_sum[j] = decay * summed[j] + (1 - decay) * members.sum(0)
    n = want_count.sum()
    smoothed = (want_count + eps) / (n + k * eps) * n
    np.testing.assert_allclose(new_count, want_count, rtol=1e-5)
    np.testing.assert_allclose(new_sum, want_sum, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(table, want_sum / smoothed[:, None], rtol=1e-5, atol=1e-6)

    usage = jnp.array([3.0, 0.0, 2.0, 0.1, 5.0])
    new_table, dead = jax.jit(restart_dead_codes, static_argnums=4)(
        jnp.asarray(table), usage, jnp.asarray(z), jax.random.key(0), 0.5)
    np.testing.assert_array_equal(dead, [False, True, False, True, False])
    np.testing.assert_array_equal(np.asarray(new_table)[~np.asarray(dead)], np.asarray(table)[[0, 2, 4]])
    for row in np.asarray(new_table)[np.asarray(dead)]:  # restarted onto encoder outputs
        assert np.any(np.all(np.isclose(z, row), axis=1))

    perplexity, used = jax.jit(code_perplexity, static_argnums=1)(jnp.array([0, 0, 1, 2]), 4)
    p = np.array([0.5, 0.25, 0.25])
    assert float(perplexity) == pytest.approx(np.exp(-(p * np.log(p)).sum()), rel=1e-6)
    assert float(used) == 0.75


def _ema_by_hand(stats: dict, z: np.ndarray, idx: np.ndarray, decay: float, eps: float,
                 threshold: float) -> dict:
    """One EMA codebook step with dead-code restarts, in numpy, from the definitions
    (van den Oord et al., 2017, App. A.1): N_k <- g N_k + (1 - g) n_k, m_k <- g m_k + (1 - g)
    sum_{i in k} z_i, e_k = m_k / N~_k; usage U_k <- g U_k + (1 - g) n_k, dead: U_k < threshold."""
    k = len(stats["ema_count"])
    n = np.array([np.sum(idx == j) for j in range(k)], np.float64)
    sums = np.stack([z[idx == j].sum(0) for j in range(k)])
    count = decay * np.asarray(stats["ema_count"], np.float64) + (1 - decay) * n
    summed = decay * np.asarray(stats["ema_sum"], np.float64) + (1 - decay) * sums
    total = count.sum()
    table = summed / ((count + eps) / (total + k * eps) * total)[:, None]
    usage = decay * np.asarray(stats["usage"], np.float64) + (1 - decay) * n
    return {"ema_count": count, "ema_sum": summed, "codebook": table, "dead": usage < threshold}


# configs/vqvae_digits.py trains EMA codebooks, configs/vqvae2_digits.py inherits them: one
# case per codebook mode, each on the other network, so every branch of the update runs.
@pytest.mark.parametrize("name,codebook", [("vqvae2_digits.py", "loss"), ("vqvae_digits.py", "ema")])
def test_method_step_updates_codebooks_and_encoder(name, codebook):
    # Threshold: usage starts at zero, so after one step a code is dead iff this batch used it
    # fewer than threshold / (1 - decay) = 4 times: some codes restart, others update.
    cfg = load_config(CONFIGS / name, **TINY, **{"model.codebook": codebook,
                                                 "model.restart_threshold": 0.04})
    method = registry.build(cfg)
    x, _ = load_split(cfg, "train")
    x = jnp.asarray(x[:16])
    state = jax.jit(method.init)(jax.random.key(0), {"x": x})
    levels = method.levels

    @jax.jit  # one compiled function: eager op-by-op dispatch would compile every op
    def run(state, x):
        new, metrics = method.train_step(state, {"x": x}, jax.random.key(1))
        forward = lambda p: method._forward(p, state.model_state, x)  # noqa: E731
        auxes = forward(state.params)[2]
        commit_grads = jax.grad(lambda p: sum(forward(p)[1][f"{lvl}_commitment"] for lvl in levels))(
            state.params)
        total_grads = jax.grad(lambda p: forward(p)[0])(state.params)
        recon_grads = jax.grad(lambda p: forward(p)[1]["recon_mse"])(state.params)
        codes = method.encode(new, x, jax.random.key(3))
        return (new, metrics, auxes, commit_grads, total_grads, recon_grads, codes,
                method.reconstruct(new, x, jax.random.key(4)), method.decode(new, codes),
                method.sample(new, jax.random.key(2), 3))

    (new, metrics, auxes, commit_grads, total_grads, recon_grads, codes, recon, decoded,
     samples) = run(state, x)
    m = cfg.model
    # Outside the codebooks the loss's gradient is reconstruction + beta commitment (the codebook
    # loss stops the gradient to z_e), in both modes.
    expected = jax.jit(lambda r, c: jax.tree.map(lambda r, c: r + m.beta * c, r, c))(recon_grads,
                                                                                   commit_grads)
    for (path, got), want in zip(jax.tree_util.tree_leaves_with_path(total_grads),
                                 jax.tree.leaves(expected), strict=True):
        if "codebook" not in jax.tree_util.keystr(path):
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-7, err_msg=jax.tree_util.keystr(path))
    for lvl, aux in zip(levels, auxes, strict=True):
        z = np.asarray(aux["z_e"], np.float64).reshape(-1, m.code_dim)
        idx = np.asarray(aux["idx"]).ravel()
        counts = np.bincount(idx, minlength=8)
        dead = (1 - m.ema_decay) * counts < m.restart_threshold
        assert float(metrics[f"{lvl}_restarted"]) == dead.sum()
        assert 1.0 <= float(metrics[f"{lvl}_perplexity"]) <= 8.0
        if codebook == "ema":
            assert 0 < dead.sum() < 8  # both branches below are exercised
            want = _ema_by_hand(state.model_state[lvl], z, idx, m.ema_decay, m.ema_eps,
                                m.restart_threshold)
            np.testing.assert_array_equal(want["dead"], dead)
            got = new.model_state[lvl]
            live = ~dead
            for key in ("ema_count", "ema_sum", "codebook"):
                np.testing.assert_allclose(np.asarray(got[key])[live], want[key][live], rtol=1e-4,
                                           atol=1e-6, err_msg=key)
            # Restarted codes sit on encoder outputs, with a fresh count of 1.
            table = np.asarray(got["codebook"])
            assert all(np.any(np.all(np.isclose(z, row, atol=1e-5), 1)) for row in table[dead])
            np.testing.assert_allclose(np.asarray(got["ema_sum"])[dead], table[dead], rtol=1e-6)
            np.testing.assert_array_equal(np.asarray(got["ema_count"])[dead], 1.0)
        else:
            table = np.asarray(state.params[lvl]["codebook"], np.float64)
            # The codebook's gradient is the codebook loss's alone (weight 1; the decoder's
            # path is straight-through): d/de_k mean((sg[z_e] - e_idx)^2) = 2/numel sum_{i in k} (e_k - z_i).
            want = np.stack([(table[j] - z[idx == j]).sum(0) for j in range(8)]) * 2 / z.size
            np.testing.assert_allclose(total_grads[lvl]["codebook"], want, rtol=1e-4, atol=1e-7)
            # The commitment term pulls the encoder, never the codebook.
            assert not np.asarray(commit_grads[lvl]["codebook"]).any()
            assert not np.allclose(new.params[lvl]["codebook"], table)
            # Dead codes restart onto encoder outputs after the optimizer update.
            assert 0 < dead.sum() < 8
            new_table = np.asarray(new.params[lvl]["codebook"])
            assert all(np.any(np.all(np.isclose(z, row, atol=1e-5), 1)) for row in new_table[dead])
            assert not any(np.any(np.all(np.isclose(z, row, atol=1e-5), 1)) for row in new_table[~dead])
    enc = "enc" if name == "vqvae_digits.py" else "enc_b"
    abs_max = jax.jit(lambda t: jax.tree.map(lambda g: jnp.abs(g).max(), t))
    assert min(float(g) for g in jax.tree.leaves(abs_max(commit_grads[enc]))) > 0
    # The encoder got gradient through the straight-through quantizer and moved.
    diff = jax.jit(lambda a, b: jax.tree.map(lambda a, b: a - b, a, b))(new.params[enc], state.params[enc])
    moved = jax.tree.map(float, abs_max(diff))
    assert min(jax.tree.leaves(moved)) > 0
    want = {"vqvae_digits.py": [(16, 4, 4)], "vqvae2_digits.py": [(16, 2, 2), (16, 4, 4)]}[name]
    assert [c.shape for c in codes] == want
    assert all(int(c.min()) >= 0 and int(c.max()) < 8 for c in codes)
    np.testing.assert_allclose(recon, decoded)
    assert samples.shape == (3, 8, 8, 1) and float(samples.min()) >= -1 and float(samples.max()) <= 1


@pytest.mark.parametrize("name", ["vqvae_digits.py", "vqvae2_digits.py"])
def test_one_shape_latent_and_reconstruct_and_eval_at_the_ema_parameters(name):
    """HasLatent + HasReconstruct (and no other capability) with the documented shapes; the
    train step keeps the state's structure (the "vq" collection in model_state); eval_step
    is the loss at the EMA parameters and the updated codebook statistics."""
    cfg = load_config(CONFIGS / name, **TINY, **{"train.ema_decay": 0.999})
    method = registry.build(cfg)
    assert isinstance(method, Method)
    for protocol in (HasLatent, HasReconstruct, HasAnomalyScore, HasLogProb):
        assert isinstance(method, protocol) == (protocol in (HasLatent, HasReconstruct)), protocol
    x, _ = load_split(cfg, "train")
    batch = {"x": jnp.asarray(x[:16])}
    state = jax.jit(method.init)(jax.random.key(0), batch)

    @jax.jit
    def run(state):
        new, _ = method.train_step(state, batch, jax.random.key(1))
        rng = jax.random.key(2)
        codes = method.encode(new, batch["x"], rng)
        return (new, method.eval_step(new, batch, rng), codes, method.decode(new, codes),
                method.reconstruct(new, batch["x"], rng),
                method._forward(new.ema_params, new.model_state, batch["x"])[0],
                method._forward(new.params, new.model_state, batch["x"])[0])

    new, ev, codes, decoded, recon, loss_ema, loss_raw = run(state)
    assert jax.tree.structure(new) == jax.tree.structure(state)
    assert isinstance(codes, tuple) and len(codes) == len(method.levels)
    assert [c.shape for c in codes] == [(16, *s) for s in method.code_shapes()]
    assert all(c.dtype == jnp.int32 for c in codes)
    assert decoded.shape == recon.shape == batch["x"].shape
    np.testing.assert_allclose(recon, decoded)
    assert float(ev["loss"]) == pytest.approx(float(loss_ema), rel=1e-5)
    assert abs(float(loss_ema) - float(loss_raw)) > 1e-6


def test_prior_rejects_missing_and_non_vqvae_workdirs(tmp_path):
    with pytest.raises(ConfigError, match="not a trained gen_jax workdir"):
        registry.build(load_config(CONFIGS / "vqvae_prior_digits.py",
                                   **{"model.vqvae_workdir": str(tmp_path / "nope")}))
    (tmp_path / "vae").mkdir()
    vae = load_config(CONFIGS / "vae_digits.py")
    (tmp_path / "vae" / "config.json").write_text(json.dumps(vae.to_dict()))
    with pytest.raises(ConfigError, match="holds a 'vae' run"):
        registry.build(load_config(CONFIGS / "vqvae_prior_digits.py",
                                   **{"model.vqvae_workdir": str(tmp_path / "vae")}))
    with pytest.raises(ConfigError, match="known: loss, ema"):
        registry.build(load_config(CONFIGS / "vqvae_digits.py", **{"model.codebook": "kmeans"}))
