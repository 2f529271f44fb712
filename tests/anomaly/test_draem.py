"""DRAEM: Perlin simulation, focal loss, SSIM, image score and the loss wiring; the
anomaly-map capability of the reconstruction methods."""

from __future__ import annotations

import ast
import inspect

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gen_jax import load_config, registry
from gen_jax.anomaly import draem
from gen_jax.anomaly.ssim import ssim
from gen_jax.data import dataset_info

CONFIGS = "configs"


@pytest.fixture(scope="module")
def method_and_state():
    cfg = load_config(f"{CONFIGS}/draem_brick.py:smoke")
    method = registry.build(cfg, dataset_info(cfg.data))
    x = jnp.asarray(np.random.default_rng(0).random((4, *method.info.shape)), jnp.float32)
    return method, jax.jit(method.init)(jax.random.key(0), {"x": x}), x


def test_perlin_is_deterministic_per_key_and_in_range():
    res = jnp.array([2, 4])
    # Jitted once (eagerly, each op would compile on its own).
    perlin = jax.jit(lambda k, res: draem.perlin_noise(k, (32, 32), res, 0.3, 8))
    a = perlin(jax.random.key(1), res)
    b = perlin(jax.random.key(1), res)
    c = perlin(jax.random.key(2), res)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    assert float(jnp.abs(a).max()) <= 1.0 and float(jnp.abs(a).max()) > 0.2


def test_simulated_anomalies_are_deterministic_and_only_inside_the_mask():
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.random((32, 16, 16, 1)), jnp.float32)
    bank = jnp.asarray(rng.random((3, 32, 32, 1)), jnp.float32)
    fn = jax.jit(lambda k, p: draem.simulate_anomalies(k, x, bank, (0.0, 1.0), 3, p), static_argnums=1)
    sim = lambda k, p=0.5: fn(jax.random.key(k), p)
    (a, ma), (b, mb), (_c, mc) = sim(0), sim(0), sim(1)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(ma, mb)
    assert not np.array_equal(ma, mc)
    changed = np.asarray(jnp.abs(a - x) > 1e-6)[..., 0]
    assert not (changed & (np.asarray(ma) == 0)).any()
    assert changed[np.asarray(ma) == 1].mean() > 0.8
    assert set(np.unique(ma)) <= {0.0, 1.0}
    normal = np.asarray(ma).sum((1, 2)) == 0
    assert 0.2 < normal.mean() < 0.9  # about half left normal (plus empty thresholded masks)
    _, always = sim(2, 0.0)
    assert (np.asarray(always).sum((1, 2)) > 0).mean() > 0.5


def test_perlin_simulator_shares_no_code_with_the_benchmark_defects():
    tree = ast.parse(inspect.getsource(draem))
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert not any("benchmark" in (m or "") for m in imported)
    assert not set(draem.ANOMALY_SOURCES) & {"brick", "grass", "gravel"}


def test_focal_loss_is_the_published_formula():
    logits = jnp.array([[2.0, -1.0], [0.3, 0.5], [-1.0, 3.0]])
    target = jnp.array([1.0, 0.0, 1.0])
    p1 = jax.nn.softmax(logits)[:, 1]
    pt = jnp.where(target == 1, p1, 1 - p1)
    for gamma in (0.0, 2.0):
        expected = jnp.mean(-((1 - pt) ** gamma) * jnp.log(pt))
        assert float(draem.focal_loss(logits, target, gamma)) == pytest.approx(float(expected), rel=1e-5)
    # Confident and right costs little; confident and wrong costs a lot.
    good = draem.focal_loss(jnp.array([[-4.0, 4.0]]), jnp.array([1.0]))
    bad = draem.focal_loss(jnp.array([[-4.0, 4.0]]), jnp.array([0.0]))
    assert float(good) < 1e-4 < 1.0 < float(bad)


def test_ssim_matches_scikit_image():
    from skimage.metrics import structural_similarity

    rng = np.random.default_rng(0)
    a = rng.random((2, 24, 24, 1)).astype(np.float32)
    b = np.clip(a + 0.2 * rng.normal(size=a.shape), 0, 1).astype(np.float32)
    jssim = jax.jit(ssim, static_argnums=2)
    ours = np.asarray(jssim(jnp.asarray(a), jnp.asarray(b), 1.0))
    for i in range(2):
        ref = structural_similarity(a[i, ..., 0], b[i, ..., 0], data_range=1.0, gaussian_weights=True,
                                    sigma=1.5, use_sample_covariance=False)
        assert ours[i] == pytest.approx(ref, abs=1e-4)
    assert float(jssim(jnp.asarray(a), jnp.asarray(a), 1.0)[0]) == pytest.approx(1.0, abs=1e-5)


def test_image_score_is_the_max_of_the_mean_filtered_map():
    rng = np.random.default_rng(1)
    maps = rng.random((2, 12, 12)) * 0.2
    window = 5
    padded = np.pad(maps, ((0, 0), (2, 2), (2, 2)))
    brute = np.array([[[padded[n, i:i + window, j:j + window].mean() for j in range(12)]
                       for i in range(12)] for n in range(2)]).max((1, 2))
    np.testing.assert_allclose(draem.image_score(jnp.asarray(maps, jnp.float32), window), brute, rtol=1e-5)
    pasted = maps.copy()
    pasted[0, 4:9, 4:9] = 1.0  # a defect in the segmentation raises the image score
    assert float(draem.image_score(jnp.asarray(pasted, jnp.float32), window)[0]) > brute[0] + 0.5


def test_loss_wiring_segments_the_simulated_mask(method_and_state):
    """The focal term is the loss of the discriminative output on (reconstruction,
    simulated image) against the simulated mask, with 1 = anomalous."""
    method, state, x = method_and_state
    rng = jax.random.key(5)

    @jax.jit
    def parts(params):
        _, (terms, _) = method.loss_fn(params, state.model_state, {"x": x}, rng, True)
        x_aug, mask = method.simulate(rng, x)
        rec = method.recon_net.apply({"params": params["recon"]}, x_aug)
        logits = method.disc_net.apply({"params": params["disc"]}, jnp.concatenate([rec, x_aug], -1))
        # The map is the softmax of the same network on (reconstruction, input).
        rec_x = method.recon_net.apply({"params": params["recon"]}, x)
        lx = method.disc_net.apply({"params": params["disc"]}, jnp.concatenate([rec_x, x], -1))
        return (terms, draem.focal_loss(logits, mask), draem.focal_loss(logits, 1 - mask),
                jnp.mean((rec - x) ** 2), jax.nn.softmax(lx)[..., 1])

    terms, focal, focal_swapped, l2, map_ref = parts(state.params)
    assert float(terms["focal"]) == pytest.approx(float(focal), rel=1e-5)
    assert float(terms["focal"]) != pytest.approx(float(focal_swapped), rel=1e-3)
    assert float(terms["l2"]) == pytest.approx(float(l2), rel=1e-5)
    np.testing.assert_allclose(jax.jit(method.anomaly_map)(state, x), map_ref, rtol=1e-5, atol=1e-6)


def test_capabilities_are_typed(method_and_state):
    method = method_and_state[0]
    assert isinstance(method, registry.HasAnomalyMap) and isinstance(method, registry.HasAnomalyScore)
    assert "draem" in registry.available()


def test_autoencoder_anomaly_map_adds_up_to_its_score():
    cfg = load_config(f"{CONFIGS}/ae_digits.py:smoke")
    method = registry.build(cfg, dataset_info(cfg.data))
    x = jnp.asarray(np.random.default_rng(2).random((3, 8, 8, 1)), jnp.float32)
    state = jax.jit(method.init)(jax.random.key(0), {"x": x})
    assert isinstance(method, registry.HasAnomalyMap)
    maps, scores = jax.jit(lambda s: (method.anomaly_map(s, x, None), method.anomaly_score(s, x)))(state)
    assert maps.shape == (3, 8, 8)
    np.testing.assert_allclose(maps.sum((1, 2)), scores, rtol=1e-5)


def test_ssim_loss_fits_its_window_to_images_smaller_than_11_px():
    """On 8x8 digits (the config's ``:digits`` variant) the SSIM term uses a 7 px window
    (SSIM takes only windows inside the image; 11 px does not fit)."""
    sizes = ((64, 64), (11, 30), (8, 8), (10, 12), (3, 5))
    assert [draem.ssim_window(*s) for s in sizes] == [11, 11, 7, 9, 3]
    cfg = load_config(f"{CONFIGS}/draem_brick.py:digits,smoke", **{"data.classes": (3,)})
    method = registry.build(cfg, dataset_info(cfg.data))
    assert method.info.shape == (8, 8, 1)
    x = jnp.asarray(np.random.default_rng(3).random((4, 8, 8, 1)), jnp.float32)
    state = jax.jit(method.init)(jax.random.key(0), {"x": x})
    rng = jax.random.key(1)

    @jax.jit
    def parts(params):
        _, (terms, _) = method.loss_fn(params, state.model_state, {"x": x}, rng, True)
        rec = method.recon_net.apply({"params": params["recon"]}, method.simulate(rng, x)[0])
        return terms["ssim_loss"], 1.0 - jnp.mean(ssim(rec, x, 1.0, 7))

    got, want = parts(state.params)
    assert np.isfinite(float(got)) and float(got) == pytest.approx(float(want), rel=1e-5)
