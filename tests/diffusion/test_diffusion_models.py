"""The UNet (CIFAR-10 parameter count and structure), classifier-free guidance, and
the ddpm / score_sde Methods end to end on tiny settings (the UNet's train step runs
in the ddpm_digits config smoke test)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import CONFIGS

from gen_jax import load_config, registry
from gen_jax.data import DataInfo, load_split
from gen_jax.diffusion.ddpm import build_network
from gen_jax.errors import ConfigError

# Guidance is architecture-independent: a tiny MLP denoiser keeps the compile short.
TINY_COND = {"model.arch": "mlp", "model.hidden": 16, "model.depth": 1, "model.num_timesteps": 20,
             "data.batch_size": 16, "sampler.num_steps": 3}


def test_cifar10_config_builds_the_35_7m_parameter_unet():
    cfg = load_config(CONFIGS / "ddpm_cifar10.py")
    info = DataInfo("tfds:cifar10", "image", (32, 32, 3), 256, 10)
    net = build_network(cfg, info)
    shapes = jax.eval_shape(lambda: net.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)),
                                             jnp.zeros((1,), jnp.int32)))
    n = sum(int(np.prod(a.shape)) for a in jax.tree.leaves(shapes))
    assert n == 35_746_307  # Ho et al. (2020): 35.7M
    paths = {"/".join(map(str, k)) for k, _ in jax.tree_util.tree_flatten_with_path(shapes)[0]}
    assert any("AttnBlock" in p for p in paths)
    # The residual blocks keep their checkpoint names from before the TimeResBlock rename:
    # 4 levels x 2 down + 2 middle + 4 levels x 3 up = 22 blocks, ResBlock_0..ResBlock_21.
    blocks = {p.split("/")[1] for p in paths if "ResBlock" in p}
    assert blocks == {f"['ResBlock_{i}']" for i in range(22)}


def test_classifier_free_guidance_and_conditioning():
    cfg = load_config(CONFIGS / "ddpm_cfg_digits.py", **TINY_COND)
    method = registry.build(cfg)
    x, y = load_split(cfg, "train")
    batch = {"x": x[:16], "y": y[:16]}
    state = jax.jit(method.init)(jax.random.key(0), batch)
    # Perturb the zero-initialised output layers so the network depends on its inputs.
    params = jax.tree.map(lambda p: p + 0.05 * jax.random.normal(jax.random.key(1), p.shape), state.params)
    xt = jnp.asarray(x[:8])
    t = jnp.arange(8, dtype=jnp.int32) * 2
    labels = jnp.asarray(y[:8])

    @jax.jit
    def outs(params):
        cond = method.eps_fn(params, labels, 0.0)(xt, t)[0]
        direct = method._apply(params, xt, t, labels)[0]
        uncond = method.eps_fn(params, None)(xt, t)[0]
        null = method._apply(params, xt, t, jnp.full((8,), 10))[0]
        guided = method.eps_fn(params, labels, 1.5)(xt, t)[0]
        other = method.eps_fn(params, (labels + 1) % 10, 0.0)(xt, t)[0]
        return cond, direct, uncond, null, guided, other

    cond, direct, uncond, null, guided, other = (np.asarray(a) for a in outs(params))
    np.testing.assert_allclose(cond, direct, atol=1e-6)      # w = 0 is the conditional model
    np.testing.assert_allclose(uncond, null, atol=1e-6)      # no labels = the null label
    np.testing.assert_allclose(guided, cond + 1.5 * (cond - uncond), rtol=1e-4, atol=1e-5)
    assert np.abs(cond - other).max() > 1e-3                 # the label matters
    with pytest.raises(ConfigError, match="class-conditional"):
        registry.build(load_config(CONFIGS / "ddpm_digits.py")).sample(state, jax.random.key(0), 2,
                                                                        guidance=1.0)


IDDPM = {"model.arch": "mlp", "model.hidden": 32, "model.depth": 1, "model.num_timesteps": 20,
         "model.schedule": "cosine", "model.variance": "learned", "model.loss": "hybrid",
         "model.pred": "v", "model.timestep_sampler": "importance", "data.batch_size": 32,
         "train.ema_decay": 0.9, "sampler.num_steps": 3}


def test_iddpm_options_train_sample_and_bound():
    cfg = load_config(CONFIGS / "ddpm_digits.py", **IDDPM)
    method = registry.build(cfg)
    x, _ = load_split(cfg, "train")
    state = jax.jit(method.init)(jax.random.key(0), {"x": x[:32]})
    step = jax.jit(method.train_step)
    losses = []
    for i in range(4):
        state, metrics = step(state, {"x": x[32 * i:32 * (i + 1)]}, jax.random.key(10 + i))
        losses.append(float(metrics["loss"]))
    assert np.all(np.isfinite(losses)) and int(state.model_state["count"].sum()) == 4 * 32
    draw = jax.jit(lambda s, r: method.sample(s, r, 6, method="ddpm", num_steps=10))
    samples = draw(state, jax.random.key(0))
    assert samples.shape == (6, 8, 8, 1) and float(jnp.abs(samples).max()) <= 1.0
    lp = jax.jit(method.log_prob)(state, jnp.asarray(x[:5]), jax.random.key(3))
    bpd = -np.asarray(lp) / (64 * np.log(2))
    # An untrained model's bound is poor but a real bound: positive, finite, per example.
    assert lp.shape == (5,) and np.all(np.isfinite(bpd)) and np.all(bpd > 0)
    for bad, match in [({"model.loss": "simple"}, "needs a loss that trains it"),
                       ({"model.pred": "score"}, "model.pred must be one of eps, x0, v"),
                       ({"data.dequantize": "uniform"}, "dequantize='none'")]:
        with pytest.raises(ConfigError, match=match):
            registry.build(load_config(CONFIGS / "ddpm_digits.py", **{**IDDPM, **bad}))


def test_score_sde_method_on_moons():
    cfg = load_config(CONFIGS / "sde_moons.py", **{"model.hidden": 32, "model.depth": 1,
                                                   "sampler.ode_solver": "rk4", "sampler.num_steps": 4})
    method = registry.build(cfg)
    x, _ = load_split(cfg, "train")
    state = jax.jit(method.init)(jax.random.key(0), {"x": x[:64]})
    state, metrics = jax.jit(method.train_step)(state, {"x": x[:64]}, jax.random.key(1))
    assert np.isfinite(float(metrics["loss"]))
    lp = jax.jit(method.log_prob)(state, jnp.asarray(x[:3]), jax.random.key(2))
    assert lp.shape == (3,) and np.all(np.isfinite(lp))
    with pytest.raises(ConfigError, match="sampler.ode_solver must be one of rk4, heun, rk45"):
        registry.build(load_config(CONFIGS / "sde_moons.py", **{"sampler.ode_solver": "dopri"}))
