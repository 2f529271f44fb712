"""VQ-VAE / VQ-VAE-2: quantizer vs brute force, straight-through gradient, EMA update by
hand, dead-code restarts, the Method's state updates, and the prior's config errors."""

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
    code_perplexity,
    ema_codebook_update,
    restart_dead_codes,
)
from gen_jax.data import load_split
from gen_jax.errors import ConfigError

TINY = {"model.channels": 8, "model.code_dim": 4, "model.num_codes": 8, "model.num_res": 0,
        "data.batch_size": 16}


def test_quantizer_rows_nearest_code_and_straight_through():
    vq = VectorQuantizer(num_codes=7, dim=3, ema=False)
    z = jax.random.normal(jax.random.key(0), (2, 4, 4, 3))
    params = vq.init(jax.random.key(1), z)
    table = np.asarray(params["params"]["codebook"])
    z_st, aux = vq.apply(params, z)
    # Brute-force nearest neighbour.
    d = ((np.asarray(z)[..., None, :] - table) ** 2).sum(-1)
    np.testing.assert_array_equal(aux["idx"], d.argmin(-1))
    # Quantized outputs are exactly codebook rows.
    np.testing.assert_array_equal(np.asarray(aux["z_q"]), table[np.asarray(aux["idx"])])
    np.testing.assert_allclose(z_st, aux["z_q"], atol=1e-6)
    # Straight-through: d(sum(w * z_st))/dz = w (the identity), although argmin has no gradient.
    w = jax.random.normal(jax.random.key(2), z.shape)
    gz = jax.grad(lambda z: jnp.sum(w * vq.apply(params, z)[0]))(z)
    np.testing.assert_allclose(gz, w, rtol=1e-6)
    # ... and no gradient reaches the codebook through the straight-through output.
    gp = jax.grad(lambda p: jnp.sum(w * vq.apply(p, z)[0]))(params)
    assert not np.asarray(gp["params"]["codebook"]).any()


def test_ema_update_restart_and_perplexity_by_hand():
    rng = np.random.default_rng(0)
    k, d, m, decay, eps = 5, 3, 40, 0.9, 1e-5
    count, summed = rng.uniform(0.5, 2, k), rng.normal(size=(k, d))
    z, idx = rng.normal(size=(m, d)), rng.integers(0, k - 1, m)  # code k-1 unused
    new_count, new_sum, table = ema_codebook_update(jnp.asarray(count), jnp.asarray(summed),
                                                    jnp.asarray(z), jnp.asarray(idx), decay, eps)
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
    new_table, dead = restart_dead_codes(jnp.asarray(table), usage, jnp.asarray(z), jax.random.key(0), 0.5)
    np.testing.assert_array_equal(dead, [False, True, False, True, False])
    np.testing.assert_array_equal(np.asarray(new_table)[~np.asarray(dead)], np.asarray(table)[[0, 2, 4]])
    for row in np.asarray(new_table)[np.asarray(dead)]:  # restarted onto encoder outputs
        assert np.any(np.all(np.isclose(z, row), axis=1))

    perplexity, used = code_perplexity(jnp.array([0, 0, 1, 2]), 4)
    p = np.array([0.5, 0.25, 0.25])
    assert float(perplexity) == pytest.approx(np.exp(-(p * np.log(p)).sum()), rel=1e-6)
    assert float(used) == 0.75


# The smoke runs of configs/vqvae*_digits.py train with EMA codebooks; this one uses the loss.
@pytest.mark.parametrize("name,codebook", [("vqvae2_digits.py", "loss")])
def test_method_step_updates_codebooks_and_encoder(name, codebook):
    cfg = load_config(CONFIGS / name, **TINY, **{"model.codebook": codebook})
    method = registry.build(cfg)
    x, _ = load_split(cfg, "train")
    x = jnp.asarray(x[:16])
    state = jax.jit(method.init)(jax.random.key(0), {"x": x})

    @jax.jit  # one compiled function: eager op-by-op dispatch would compile every op
    def run(state, x):
        new, metrics = method.train_step(state, {"x": x}, jax.random.key(1))
        idx = [a["idx"] for a in method._forward(state.params, state.model_state, x)[2]]
        codes = method.encode(new, x)
        return (new, metrics, idx, codes, method.reconstruct(new, x), method.decode(new, codes),
                method.sample(new, jax.random.key(2), 3))

    new, metrics, idx, codes, recon, decoded, samples = run(state, x)
    for lvl, lvl_idx in zip(method.levels, idx, strict=True):
        # Usage starts at zero: a code restarts unless this batch alone lifts its running
        # usage (1 - decay) * count to the threshold.
        counts = np.bincount(np.asarray(lvl_idx).ravel(), minlength=8)
        want = np.sum((1 - cfg.model.ema_decay) * counts < cfg.model.restart_threshold)
        assert float(metrics[f"{lvl}_restarted"]) == want > 0
        assert 1.0 <= float(metrics[f"{lvl}_perplexity"]) <= 8.0
        table = (new.model_state[lvl]["codebook"] if codebook == "ema"
                 else new.params[lvl]["codebook"])
        assert not np.allclose(table, state.model_state[lvl]["codebook"] if codebook == "ema"
                               else state.params[lvl]["codebook"])
    # The encoder got gradient through the straight-through quantizer and moved.
    enc = "enc" if name == "vqvae_digits.py" else "enc_b"
    moved = jax.tree.map(lambda a, b: float(jnp.abs(a - b).max()), new.params[enc], state.params[enc])
    assert min(jax.tree.leaves(moved)) > 0
    want = {"vqvae_digits.py": [(16, 4, 4)], "vqvae2_digits.py": [(16, 2, 2), (16, 4, 4)]}[name]
    assert [c.shape for c in codes] == want
    assert all(int(c.min()) >= 0 and int(c.max()) < 8 for c in codes)
    np.testing.assert_allclose(recon, decoded)
    assert samples.shape == (3, 8, 8, 1) and float(samples.min()) >= -1 and float(samples.max()) <= 1


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
