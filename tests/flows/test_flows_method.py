"""The flow Methods: a 2-D density integrates to 1 (at init and after training),
bits/dim on the discrete scale, the variational dequantization bound, sampling,
encode/decode and config errors."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import CONFIGS

from gen_jax import load_config
from gen_jax.data import DataInfo, load_split
from gen_jax.errors import ConfigError
from gen_jax.flows import Flow, discrete_bits_per_dim, discrete_offset


def _grid_mass(method, state, lim=8.0, n=400):
    """Riemann sum of exp(log_prob) over [-lim, lim]^2 (n x n cell centres)."""
    h = 2 * lim / n
    c = -lim + h * (np.arange(n) + 0.5)
    pts = jnp.asarray(np.stack(np.meshgrid(c, c), -1).reshape(-1, 2), jnp.float32)
    lp = jax.jit(method.log_prob)(state, pts, jax.random.key(0))
    return float(jnp.sum(jnp.exp(lp)) * h * h)


def _perturb(params, key, scale=0.3):
    leaves, tree = jax.tree_util.tree_flatten_with_path(params)
    keys = jax.random.split(key, len(leaves))
    fixed = [getattr(p[-1], "key", None) in ("p", "sign_s") for p, _ in leaves]  # LU permutation, signs
    return jax.tree_util.tree_unflatten(tree, [
        leaf if f else leaf + scale * jax.random.normal(k, leaf.shape)
        for (_, leaf), k, f in zip(leaves, keys, fixed, strict=True)])


def test_2d_density_integrates_to_one_at_init_and_after_training():
    cfg = load_config(CONFIGS / "flow_toy2d.py", **{
        "model.num_couplings": 4, "model.hidden": 32, "data.num_train": 2048,
        "optim.schedule": "constant", "optim.warmup_steps": 0, "optim.learning_rate": 3e-3})
    flow = Flow(cfg, "realnvp")
    x, _ = load_split(cfg, "train")
    state = flow.init(jax.random.key(0), {"x": x[:256]})
    # Random parameters: a non-trivial density whose normalisation rests on the log-dets.
    rand = state.replace(params=_perturb(state.params, jax.random.key(1), 0.1))
    assert _grid_mass(flow, rand) == pytest.approx(1.0, abs=0.01)

    step = jax.jit(flow.train_step)
    first = None
    for i in range(150):
        j = (i * 256) % (len(x) - 256)
        state, metrics = step(state, {"x": x[j:j + 256]}, jax.random.key(10 + i))
        first = float(metrics["nll"]) if first is None else first
    assert float(metrics["nll"]) < first - 0.5  # it learned (moons: ~2.8 -> below 2.3 nats)
    assert _grid_mass(flow, state) == pytest.approx(1.0, abs=0.01)


@pytest.mark.parametrize("value_range", [(0.0, 1.0), (-1.0, 1.0)])
def test_uniform_model_on_8bit_data_is_exactly_8_bits_per_dim(value_range):
    from ml_collections import ConfigDict

    info = DataInfo("tfds:mnist", "image", (28, 28, 1), 256, 10)
    data = ConfigDict({"binarize": "none", "dequantize": "uniform", "value_range": value_range})
    lo, hi = value_range
    log_density = -info.dim * math.log(hi - lo)  # U([lo, hi]^D)
    bpd = discrete_bits_per_dim(jnp.float32(log_density), discrete_offset(info, data, False), info.dim)
    assert float(bpd) == pytest.approx(8.0, abs=1e-6)
    data.dequantize = "none"  # the model dequantizes: same offset, computed by hand
    assert discrete_offset(info, data, True) == pytest.approx(info.dim * math.log((hi - lo) / 256))


@pytest.fixture(scope="module")
def flowpp():
    cfg = load_config(CONFIGS / "flowpp_digits.py", **{
        "model.num_steps": 1, "model.hidden": 8, "model.num_heads": 2, "model.num_components": 2,
        "model.dequant_steps": 1})
    method = Flow(cfg, "flowpp")
    x, _ = load_split(cfg, "val")
    state = jax.jit(method.init)(jax.random.key(0), {"x": x[:16]})
    return method, state, x[:16]


def test_variational_dequantization_bound(flowpp):
    method, state, x = flowpp
    lp = jax.jit(method.log_prob, static_argnames="num_samples")
    one = np.stack([lp(state, x, jax.random.key(i), num_samples=1) for i in range(3)])
    iw = lp(state, x, jax.random.key(9), num_samples=16)
    assert np.all(np.isfinite(one)) and one.std(0).max() > 0  # a random bound
    assert float(iw.mean()) >= float(one.mean()) - 0.05  # the K=16 bound is tighter on average
    # The bound is on the discrete scale: below log 1 and not absurdly far from uniform.
    assert np.all(one < 0)
    bpd = -one.mean() / (64 * math.log(2))
    assert 2.0 < bpd < 6.0
    # eval_step reports the same bound (same noise key) in bits/dim.
    m = method.eval_step(state, {"x": x}, jax.random.key(5))
    bound = method._bound(state.eval_params, x, jax.random.key(5))
    assert float(m["bpd"]) == pytest.approx(float(-bound.mean() / (64 * math.log(2))), rel=1e-5)


def test_sampling_temperature_and_discrete_levels(flowpp):
    method, state, x = flowpp
    sample = jax.jit(method.sample, static_argnums=2)  # eager flax + bisection is slow
    s = sample(state, jax.random.key(0), 8)
    assert s.shape == (8, 8, 8, 1)
    levels = np.asarray(s) * 16
    np.testing.assert_allclose(levels, np.round(levels), atol=1e-4)  # snapped like the data
    cold = sample(state, jax.random.key(0), 4, temperature=0.0)
    np.testing.assert_allclose(cold, np.broadcast_to(cold[:1], cold.shape))  # all decode z = 0
    # encode/decode: the centre of each pixel's bin maps back to the same levels.
    roundtrip = jax.jit(lambda st, xx: method.decode(st, method.encode(st, xx)))
    np.testing.assert_allclose(roundtrip(state, x), x, atol=1e-5)


def test_glow_interpolation_endpoints_and_invertibility():
    cfg = load_config(CONFIGS / "glow_digits.py", **{"model.num_steps": 1, "model.hidden": 8})
    glow = Flow(cfg, "glow")
    x, _ = load_split(cfg, "val")
    state = jax.jit(glow.init)(jax.random.key(0), {"x": x[:32]})
    state = state.replace(params=_perturb(state.params, jax.random.key(1), 0.1))
    z = jax.jit(glow.encode)(state, x[:4])
    assert z.shape == x[:4].shape
    np.testing.assert_allclose(jax.jit(glow.decode)(state, z), x[:4], atol=1e-4)
    path = jax.jit(glow.interpolate, static_argnames="num")(state, x[0], x[1], num=5)
    assert path.shape == (5, 8, 8, 1)
    np.testing.assert_allclose(path[0], x[0], atol=1e-4)
    np.testing.assert_allclose(path[-1], x[1], atol=1e-4)
    assert float(jnp.abs(path[2] - x[0]).max()) > 1e-2


@pytest.mark.parametrize("config,overrides,match", [
    ("flowpp_digits.py", {"data.dequantize": "uniform"}, "data.dequantize='none'"),
    ("glow_digits.py", {"data.dequantize": "none"}, "data.dequantize='uniform'"),
    ("glow_digits.py", {"model.coupling": "spline"}, "'affine' or 'additive'"),
    ("flowpp_digits.py", {"model.dequantize": "learned"}, "'uniform' or 'variational'"),
    ("realnvp_digits.py", {"model.num_scales": 5}, "num_scales"),
    ("flow_toy2d.py", {"model.dequantize": "variational"}, "nothing to dequantize"),
])
def test_bad_configs_fail_at_the_boundary(config, overrides, match):
    cfg = load_config(CONFIGS / config, **overrides)
    with pytest.raises(ConfigError, match=match):
        Flow(cfg, cfg.method)


def test_missing_model_keys_are_named():
    cfg = load_config(CONFIGS / "nice_digits.py")
    with pytest.raises(ConfigError, match="num_levels"):
        Flow(cfg, "glow")
