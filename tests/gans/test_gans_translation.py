"""Image-to-image tasks (checked with scipy/numpy), pix2pix and CycleGAN steps, and their
samples: translations of the caller's images or of the state's references, never of data
the Method reads itself."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import CONFIGS
from scipy import ndimage

import gen_jax.data
import gen_jax.data.sources
from gen_jax import load_config, registry
from gen_jax.data import get_source, load_split
from gen_jax.errors import ConfigError
from gen_jax.gans import tasks


def _no_data_access(monkeypatch):
    """Every way into a dataset raises from here on: a Method must not read data itself."""
    def refuse(*args, **kwargs):
        raise AssertionError("a Method read data")

    for module in (gen_jax.data, gen_jax.data.sources):
        for name in ("get_source", "make_eval_batches", "load_split", "make_train_iterator"):
            if hasattr(module, name):
                monkeypatch.setattr(module, name, refuse)


TINY_NETS = {"model.g_channels": (4, 4), "model.d_channels": (4, 4), "data.batch_size": 16,
             "train.ema_decay": 0.0}


def test_edges_lowres_and_domain_transforms_match_scipy():
    rng = np.random.default_rng(0)
    x01 = rng.random((2, 8, 8, 1)).astype(np.float32)
    # Per image: on a stacked array scipy would also smooth across the batch axis.
    sx = np.stack([ndimage.sobel(im[..., 0], axis=1, mode="constant") for im in x01])
    sy = np.stack([ndimage.sobel(im[..., 0], axis=0, mode="constant") for im in x01])
    want = np.clip(np.sqrt(sx**2 + sy**2) / 4.0, 0, 1)
    np.testing.assert_allclose(tasks.sobel_edges(jnp.asarray(x01))[..., 0], want, atol=1e-5)
    x = 2 * x01 - 1  # value range (-1, 1)
    got = tasks.paired_input(jnp.asarray(x), "lowres", (-1.0, 1.0), 2)
    block = x.reshape(2, 4, 2, 4, 2, 1).mean((2, 4))
    np.testing.assert_allclose(got, np.repeat(np.repeat(block, 2, 1), 2, 2), atol=1e-6)
    np.testing.assert_allclose(tasks.domain_b(jnp.asarray(x), "invert", (-1.0, 1.0)), -x, atol=1e-6)
    thick = ndimage.maximum_filter(x01[..., 0], size=(1, 3, 3), mode="constant", cval=-np.inf)
    np.testing.assert_allclose(tasks.domain_b(jnp.asarray(x01), "thicken", (0.0, 1.0))[..., 0], thick)
    with pytest.raises(ConfigError, match="known: edges, lowres"):
        tasks.paired_input(jnp.asarray(x), "colorize", (-1.0, 1.0))


def test_digit_domains_are_disjoint_halves_fixed_by_content():
    config = load_config(CONFIGS / "cyclegan_digits.py")
    x, _ = load_split(config, "train")
    raw, _ = get_source(config.data, "train").get(np.arange(len(x)))
    half = np.asarray(tasks.content_half(jnp.asarray(x), (-1.0, 1.0), 17))
    np.testing.assert_array_equal(half, raw.reshape(len(raw), -1).sum(1) % 2)  # parity of the levels
    assert 0.4 < half.mean() < 0.6
    xa, xb, is_b = tasks.unpaired_domains(jnp.asarray(x[:64]), None, "invert", (-1.0, 1.0), 17)
    np.testing.assert_array_equal(is_b, half[:64])
    np.testing.assert_allclose(xb, -x[:64], atol=1e-6)


def test_pix2pix_step_and_l1_against_a_hand_computation(monkeypatch):
    config = load_config(CONFIGS / "pix2pix_digits.py", **TINY_NETS)
    method = registry.build(config)
    x, _ = load_split(config, "train")
    batch = {"x": jnp.asarray(x[:16])}
    inp = tasks.paired_input(batch["x"], "edges", (-1.0, 1.0))
    other = jnp.asarray(x[16:19])
    _no_data_access(monkeypatch)
    key = jax.random.key(3)

    @jax.jit
    def run():  # one compiled function: compiling is what costs time here
        state = method.init(jax.random.key(0), batch)
        state, metrics = method.train_step(state, batch, jax.random.key(1))
        m = method.eval_step(state, batch, jax.random.key(2))
        tiled = jnp.concatenate([inp, inp[:4]])
        samples = (method.sample(state, key, 20), method.translate(state, tiled, key),
                   method.sample(state, key, 3, inputs=other),
                   method.translate(state, tasks.paired_input(other, "edges", (-1.0, 1.0)), key))
        recon = method.reconstruct(state, batch["x"], jax.random.key(2))
        return state, metrics, m, method.translate(state, inp, jax.random.key(2)), samples, recon

    state, metrics, m, out, (sampled, want, sampled_other, want_other), recon = run()
    # reconstruct(state, x, rng) = the translation of x's task input, the same key its dropout.
    np.testing.assert_allclose(recon, out, atol=1e-6)
    # sample() translates the task inputs of the example batch kept in the state (repeated up
    # to num), or of the caller's images.
    np.testing.assert_allclose(state.inputs, batch["x"], atol=1e-6)
    assert sampled.shape == (20, 8, 8, 1)
    np.testing.assert_allclose(sampled, want, atol=1e-6)
    np.testing.assert_allclose(sampled_other, want_other, atol=1e-6)
    assert not np.allclose(sampled_other, sampled[:3])
    assert (int(state.step), int(state.g.step), int(state.d.step)) == (1, 1, 1)
    assert float(metrics["g_loss"]) == pytest.approx(
        float(metrics["g_adv"] + 100.0 * metrics["l1"]), rel=1e-5)
    assert float(m["l1"]) == pytest.approx(float(np.mean(np.abs(np.asarray(out) - batch["x"]))), rel=1e-5)
    assert out.shape == batch["x"].shape and float(jnp.abs(out).max()) <= 1.0


def test_cyclegan_cycle_term_against_a_hand_computation(monkeypatch):
    config = load_config(CONFIGS / "cyclegan_digits.py", **TINY_NETS)
    method = registry.build(config)
    x, _ = load_split(config, "val")
    batch = {"x": jnp.asarray(x[:16])}
    _no_data_access(monkeypatch)

    @jax.jit
    def run():
        state = method.init(jax.random.key(0), batch)
        state, metrics = method.train_step(state, batch, jax.random.key(1))
        xa, xb, is_b = method.domains(batch)
        back = method.translate(state, method.translate(state, xb, "ba"), "ab")
        samples = (method.sample(state, jax.random.key(3), 20), method.translate(state, batch["x"], "ab"),
                   method.sample(state, jax.random.key(3), 5, inputs=xb[:5], direction="ba"),
                   method.translate(state, xb[:5], "ba"))
        return (state, metrics, method.eval_step(state, batch, jax.random.key(2)), xa, xb, is_b,
                method.reconstruct(state, xa, jax.random.key(4)), back, samples)

    state, metrics, m, xa, xb, is_b, cyc_a, back, samples = jax.device_get(run())
    sampled, fake_b, sampled_ba, want_ba = samples
    # sample() translates the example batch kept in the state (A -> B by default, repeated up
    # to num), or the caller's images in the direction asked.
    np.testing.assert_allclose(state.inputs, batch["x"], atol=1e-6)
    np.testing.assert_allclose(sampled, np.concatenate([fake_b, fake_b[:4]]), atol=1e-5)
    np.testing.assert_allclose(sampled_ba, want_ba, atol=1e-5)
    assert set(state.g.params) == {"ab", "ba"} and set(state.d.params) == {"a", "b"}
    assert cyc_a.shape == xa.shape  # reconstruct(state, x, rng): the A -> B -> A cycle, x's shape
    w_a, w_b = 1 - is_b, is_b
    err_a = np.abs(cyc_a - xa).reshape(16, -1).mean(1)
    err_b = np.abs(back - xb).reshape(16, -1).mean(1)
    want = (err_a * w_a).sum() / w_a.sum() + (err_b * w_b).sum() / w_b.sum()
    assert float(m["cycle"]) == pytest.approx(want, rel=1e-4)
    assert float(m["g_loss"]) == pytest.approx(
        float(m["g_adv"] + 10 * m["cycle"] + 0.5 * 10 * m["identity"]), rel=1e-5)
    assert 0 < float(metrics["frac_b"]) < 1


@pytest.mark.parametrize("config_name, overrides, match", [
    ("pix2pix_digits.py", {"model.task": "colorize"}, "known paired tasks: edges, lowres"),
    ("cyclegan_digits.py", {"model.task": "rotate"}, "known: invert, thicken, labels"),
    ("cyclegan_digits.py", {"data.dequantize": "uniform"}, "hashes pixel levels"),
    ("cyclegan_digits.py", {"gan.objective": "wgan"}, "CycleGAN supports"),
])
def test_translation_config_errors(config_name, overrides, match):
    with pytest.raises(ConfigError, match=match):
        registry.build(load_config(CONFIGS / config_name, **overrides))


def test_evaluation_translates_the_validation_images(tmp_path):
    """The measured samples of a translation Method are translations of the validation
    images, not of the 64 reference images its state keeps for figures (tiled, they made
    the leaderboard's pix2pix samples look far less varied than the model is)."""
    from gen_jax import evaluate, train

    n = 80  # more than the state's reference images
    cfg = load_config(f"{CONFIGS / 'pix2pix_digits.py'}:smoke", **{
        "train.num_steps": 1, "eval.num_samples": n, "eval.sample_metrics": False})
    train.train_and_evaluate(cfg, tmp_path)
    _, samples = evaluate.evaluate_with_samples(None, tmp_path)
    run = train.setup(None, tmp_path)
    state, _ = train.restore_run(run)
    x_val, _ = load_split(cfg, "val")
    assert state.inputs.shape[0] < n <= len(x_val)
    r_timed = jax.random.split(run.keys["bench"])[1]
    expected = jax.jit(lambda s, r, x: run.method.sample(s, r, n, inputs=x))(state, r_timed, x_val[:n])
    np.testing.assert_allclose(samples, np.asarray(expected), atol=1e-5)
    assert train.sample_inputs(train.setup(load_config(CONFIGS / "vae_digits.py"), tmp_path / "v"), n) is None
