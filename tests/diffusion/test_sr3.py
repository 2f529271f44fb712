"""SR3 super-resolution ("sr3", gen_jax/diffusion/sr3.py) against independent references.

The exact ε of a known conditional model stands in for the network: high-resolution
images x0 = up(low) + σ P⊥ z, with P∥ = nearest-upsampled average pooling and P⊥ = I - P∥,
have E[ε | x_t, low] = s [P⊥ d / (ᾱσ² + s²) + P∥ d / s²], d = x_t - √ᾱ up(low),
s² = 1 - ᾱ. With it, every sampler of the registry must return images whose average
pooling is *exactly* the low-resolution input (the P∥ part of x̂_0 is up(low) at every
step), the training loss of block-constant images must be 0 when each is paired with its
own low-resolution version, and the eval step's SR outputs are known. Also: the network's
ε depends on the low-resolution input, PSNR and the baselines against numpy by hand, and
the smoke config trained through the runtime (shared by the tests, module scope).
"""

from __future__ import annotations

import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import CONFIGS

from gen_jax import load_config, registry, train
from gen_jax.anomaly.ssim import ssim
from gen_jax.data import load_split
from gen_jax.diffusion import sr3
from gen_jax.errors import ConfigError
from gen_jax.state import TrainState

CONFIG = f"{CONFIGS / 'sr3_digits.py'}:smoke"
SIGMA = 0.1  # the exact model's spread around up(low), in the P⊥ directions


def pool_np(x: np.ndarray, f: int = 2) -> np.ndarray:
    n, h, w, c = x.shape
    return x.reshape(n, h // f, f, w // f, f, c).mean((2, 4))


def up_np(low: np.ndarray, f: int = 2) -> np.ndarray:
    return np.repeat(np.repeat(low, f, 1), f, 2)


def psnr_np(x: np.ndarray, y: np.ndarray, data_range: float) -> np.ndarray:
    mse = ((np.float64(x) - np.float64(y)) ** 2).reshape(len(x), -1).mean(1)
    return 10 * np.log10(data_range**2 / mse)


class ExactDenoiser(nn.Module):
    """E[ε | x_t, low] of the model in the module docstring, σ its one parameter; input
    channels [x_t, up(low)] as SR3 concatenates them (``up`` = nearest: P∥ x0 exactly)."""

    alphas_cumprod: tuple
    factor: int = 2

    @nn.compact
    def __call__(self, h, t, y=None, train=False):
        sigma = self.param("sigma", nn.initializers.zeros, ())
        c = h.shape[-1] // 2
        xt, m = h[..., :c], h[..., c:]
        a = jnp.asarray(self.alphas_cumprod, jnp.float32)[t][:, None, None, None]
        d = xt - jnp.sqrt(a) * m
        n, hh, ww, _ = d.shape
        f = self.factor
        par = jnp.repeat(jnp.repeat(d.reshape(n, hh // f, f, ww // f, f, c).mean((2, 4)), f, 1), f, 2)
        s2 = 1.0 - a
        return jnp.sqrt(s2) * ((d - par) / (a * sigma**2 + s2) + par / s2)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """configs/sr3_digits.py:smoke trained through the runtime (train.train_and_evaluate)."""
    cfg = load_config(CONFIG)
    workdir = tmp_path_factory.mktemp("sr3") / "run"
    state = train.train_and_evaluate(cfg, workdir)
    return dict(cfg=cfg, workdir=workdir, state=state, method=registry.build(cfg))


@pytest.fixture(scope="module")
def x_test():
    """The test split's digits in (-1, 1), as the smoke config's Method sees them."""
    return load_split(load_config(CONFIG), "test")[0]


def exact_method(**overrides):
    """The smoke config's SR3 with nearest upsampling and T = 1000 (so that the final step's
    noise level √β_0 = 0.01 is far below σ), the exact ε in place of the UNet."""
    cfg = load_config(CONFIG, **{"model.upsample": "nearest", "model.num_timesteps": 1000,
                                 "sampler.num_steps": 10, **overrides})
    method = registry.build(cfg)
    method.net = ExactDenoiser(tuple(method.sched.alphas_cumprod.tolist()))
    return method


def exact_state(sigma: float, inputs):
    """A state whose EMA parameters hold ``sigma`` (what sampling and evaluation must use)
    and whose raw parameters hold a wrong one."""
    return TrainState(step=jnp.zeros((), jnp.int32), params={"sigma": jnp.float32(1.0)}, opt_state=None,
                      ema_params={"sigma": jnp.float32(sigma)}, model_state={"inputs": inputs})


def test_smoke_run_evaluates_super_resolution(run):
    """The runtime's final validation (its first batch of 64 images) reports the SR metrics,
    the upsampling baselines' PSNR equal to numpy's on those images."""
    val = [r for r in map(json.loads, open(run["workdir"] / "metrics.jsonl")) if r["split"] == "val"][-1]
    for key in ("mse", "psnr", "ssim", "ssim_bicubic", "ssim_nearest", "lowres_rmse"):
        assert np.isfinite(val[key]), key
    x = load_split(run["cfg"], "val")[0][:val["num_examples"]]
    bicubic = np.clip(np.asarray(jax.image.resize(pool_np(x), x.shape, "bicubic")), -1, 1)
    assert val["psnr_nearest"] == pytest.approx(psnr_np(up_np(pool_np(x)), x, 2.0).mean(), rel=1e-4)
    assert val["psnr_bicubic"] == pytest.approx(psnr_np(bicubic, x, 2.0).mean(), rel=1e-4)
    assert (run["workdir"] / "samples" / "step_000003.png").exists()
    assert run["state"].model_state["inputs"].shape[1:] == (8, 8, 1)


def test_conditioning_changes_the_eps_prediction(run, x_test):
    """Random (all-live) parameters: the same x_t and t under two low-resolution inputs give
    different ε̂; the same input gives the same ε̂ (so the difference is the input's)."""
    method, x = run["method"], x_test
    rng = np.random.default_rng(0)
    params = jax.tree.map(lambda a: rng.normal(0, 0.5, a.shape).astype(np.float32), run["state"].params)
    low = sr3.downsample(jnp.asarray(x[[0, 1, 0, 0]]), 2)
    low = low.at[3, 1, 2, 0].add(0.5)  # one low-resolution pixel changed
    xt = jnp.asarray(np.broadcast_to(rng.normal(size=(1, 8, 8, 1)), (4, 8, 8, 1)), jnp.float32)
    t = jnp.full((4,), 20, jnp.int32)
    eps = np.asarray(jax.jit(lambda p, lo: method.eps_fn(p, lo)(xt, t)[0])(params, low))
    scale = np.abs(eps[0]).mean()
    assert np.abs(eps[1] - eps[0]).mean() > 0.05 * scale
    assert np.abs(eps[3] - eps[0]).mean() > 0.01 * scale
    np.testing.assert_array_equal(eps[2], eps[0])


def test_samples_pool_exactly_to_the_lowres_input(x_test):
    """With the exact ε, pooling a sample gives back its input's low-resolution image
    (given ``inputs``, and the state's reference images when none are given); samples of
    other inputs do not; the rest of the image has the model's spread σ √(3/4) (of the EMA
    parameters). DPM-Solver++(2M), 10 steps, ending with the x̂_0 step (denoise_to_zero)."""
    method = exact_method()
    x = 0.5 * x_test  # within (-0.5, 0.5): no clipping of m ± a few σ
    inputs, other, reference = x[:64], x[64:128], x[128:192]
    kw = {"denoise_to_zero": True}

    @jax.jit
    def draw(state, key):
        return (method.sample(state, key, 64, inputs=inputs, **kw),
                method.sample(state, key, 64, inputs=other, **kw), method.sample(state, key, 64, **kw))

    samples, other_samples, ref_samples = map(np.asarray, draw(exact_state(SIGMA, reference),
                                                               jax.random.key(0)))
    np.testing.assert_allclose(pool_np(samples), pool_np(inputs), atol=2e-5)
    np.testing.assert_allclose(pool_np(ref_samples), pool_np(reference), atol=2e-5)
    assert np.abs(pool_np(other_samples) - pool_np(inputs)).mean() > 0.05
    perp = samples - up_np(pool_np(samples))
    assert perp.std() == pytest.approx(SIGMA * np.sqrt(0.75), rel=0.1)


def test_training_pairs_each_image_with_its_own_lowres_input(x_test):
    """Block-constant images are determined by their low-resolution version: the exact ε
    (σ = 0) has training loss 0 when each image is conditioned on its own."""
    method = exact_method()
    x = up_np(pool_np(x_test[:64]))
    loss_fn = jax.jit(lambda b, r: method.loss_fn({"sigma": jnp.float32(0.0)}, None, b, r, True)[0])
    assert float(loss_fn({"x": x}, jax.random.key(0))) < 1e-6
    # The same denoiser on images that are not block-constant: far from 0 (the check is live).
    assert float(loss_fn({"x": x_test[:64]}, jax.random.key(0))) > 1e-2


def test_eval_step_metrics_against_numpy(x_test):
    """The eval step's PSNR/SSIM of the batch's SR samples (the same sampler and key, drawn
    here), of its nearest and bicubic baselines (numpy by hand), and lowres_rmse = 0 (DDIM
    with the exact ε keeps the P∥ part of every x̂_0 at up(low); its last step is x̂_0)."""
    method = exact_method(**{"sampler.name": "ddim"})
    x = 0.5 * x_test[:64]
    state, key = exact_state(SIGMA, x[:2]), jax.random.key(0)

    @jax.jit
    def both(state, x, key):
        sr = method.translate(state, sr3.downsample(x, 2), jax.random.split(key)[1])
        return method.eval_step(state, {"x": x}, key), sr, ssim(sr, x, 2.0, 7).mean()

    m, sr, ssim_sr = jax.device_get(both(state, x, key))
    nearest = up_np(pool_np(x))
    bicubic = np.clip(np.asarray(jax.image.resize(pool_np(x), (64, 8, 8, 1), "bicubic")), -1, 1)
    assert m["psnr"] == pytest.approx(psnr_np(sr, x, 2.0).mean(), rel=1e-4)
    assert m["psnr_nearest"] == pytest.approx(psnr_np(nearest, x, 2.0).mean(), rel=1e-4)
    assert m["psnr_bicubic"] == pytest.approx(psnr_np(bicubic, x, 2.0).mean(), rel=1e-4)
    assert m["ssim"] == pytest.approx(float(ssim_sr), abs=1e-5)  # 7x7 window on 8x8 images
    assert m["lowres_rmse"] < 1e-5
    np.testing.assert_allclose(pool_np(sr), pool_np(x), atol=1e-5)


def test_psnr_and_resampling_against_numpy():
    rng = np.random.default_rng(1)
    x = rng.uniform(-1, 1, (5, 8, 8, 1)).astype(np.float32)
    y = np.clip(x + rng.normal(0, 0.1, x.shape), -1, 1).astype(np.float32)
    const = np.full((1, 4, 4, 1), 0.3, np.float32)

    @jax.jit
    def ours(x, y, const):
        low = sr3.downsample(x, 2)
        return (sr3.psnr(x, y, 2.0), sr3.psnr(x, x, 2.0), low, sr3.upsample(low, (8, 8), "nearest"),
                sr3.upsample(const, (8, 8), "bicubic"))

    p, p_same, low, near, bicubic = map(np.asarray, ours(x, y, const))
    np.testing.assert_allclose(p, psnr_np(x, y, 2.0), rtol=1e-5)
    np.testing.assert_allclose(p_same, 100.0, rtol=1e-6)
    np.testing.assert_allclose(low, pool_np(x), atol=1e-6)
    np.testing.assert_array_equal(near, up_np(low))
    np.testing.assert_allclose(bicubic, 0.3, atol=1e-6)  # bicubic weights sum to one
    assert sr3.ssim_window((8, 8)) == 7 and sr3.ssim_window((64, 64)) == 11


@pytest.mark.parametrize("key,value,match", [
    ("model.lowres_factor", 3, "lowres_factor"), ("model.upsample", "bilinear", "upsample"),
    ("model.variance", "learned", "variance"), ("model.arch", "mlp", "arch")])
def test_bad_config_values_raise(key, value, match):
    with pytest.raises(ConfigError, match=match):
        registry.build(load_config(CONFIG, **{key: value}))


def test_translate_rejects_wrong_lowres_shape(run):
    with pytest.raises(ValueError, match="low-resolution images have shape"):
        run["method"].translate(run["state"], jnp.zeros((2, 8, 8, 1)), jax.random.key(0))
