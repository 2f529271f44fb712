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
from gen_jax.data import DataInfo, dataset_info, load_split
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
    leaves, tree = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(key, len(leaves))
    return jax.tree_util.tree_unflatten(tree, [
        leaf + scale * jax.random.normal(k, leaf.shape) for leaf, k in zip(leaves, keys, strict=True)])


def _flow(cfg, arch=None):
    return Flow(cfg, dataset_info(cfg.data), arch or cfg.method)


def test_2d_density_integrates_to_one_at_init_and_after_training():
    cfg = load_config(CONFIGS / "flow_toy2d.py", **{
        "model.num_couplings": 4, "model.hidden": 32, "data.num_train": 2048,
        "optim.schedule": "constant", "optim.warmup_steps": 0, "optim.learning_rate": 3e-3})
    flow = _flow(cfg, "realnvp")
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
        "model.steps_per_level": 1, "model.hidden": 8, "model.num_heads": 2, "model.num_components": 2,
        "model.dequant_steps": 1})
    method = _flow(cfg, "flowpp")
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
    # The K = 1 bound is log p(y) - log q(u|k) + D log(1/L), y = (k + u) / L, u = u(eps; k)
    # with eps the draw log_prob makes: log p from the flow's log-density and log q from
    # the dequantizer (their log-dets are checked against jax.jacfwd in test_flows_bijectors).
    # eval_step reports the same bound in bits/dim (its noise: the key itself).

    @jax.jit
    def reference(state, eps):
        variables = {"params": state.params, **state.model_state}
        u, log_q = method.model.apply(variables, eps, x, method=lambda m, e, c: m.dequantize(e, c))
        log_p = method.model.apply(variables, (x * 16 + u) / 17, method=lambda m, y: m.log_density(y))[0]
        return log_p - log_q + 64 * math.log(1 / 17), log_q

    keys = jnp.stack([jax.random.split(jax.random.key(0), 1)[0], jax.random.key(5)])
    bounds, log_q = jax.vmap(lambda k: reference(state, jax.random.normal(k, x.shape)))(keys)
    assert float(jnp.abs(log_q).min()) > 1.0  # so the sign of log q shows
    np.testing.assert_allclose(one[0], bounds[0], rtol=1e-5, atol=1e-3)
    m = jax.jit(method.eval_step)(state, {"x": x}, jax.random.key(5))
    assert float(m["bpd"]) == pytest.approx(float(-bounds[1].mean() / (64 * math.log(2))), rel=1e-5)


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
    cfg = load_config(CONFIGS / "glow_digits.py", **{"model.steps_per_level": 1, "model.hidden": 8})
    glow = _flow(cfg, "glow")
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
        _flow(cfg)


def test_missing_model_keys_are_named():
    cfg = load_config(CONFIGS / "nice_digits.py")
    with pytest.raises(ConfigError, match="num_levels"):
        _flow(cfg, "glow")


def _brute_force_log_lik(method, state, x):
    """log N(f(x); 0, I) + log|det df/dx| + offset with the Jacobian of the map the
    Method actually applies (``encode``), by jax.jacfwd: independent of the log-dets
    the layers report."""
    d = int(np.prod(x.shape[1:]))

    def f(xi):
        return method.encode(state, xi.reshape(1, *x.shape[1:])).reshape(-1)

    z = jax.vmap(f)(x.reshape(len(x), d))
    jac = jax.vmap(jax.jacfwd(f))(x.reshape(len(x), d))
    log_n = -0.5 * jnp.sum(z**2 + math.log(2 * math.pi), -1)
    return log_n + jnp.linalg.slogdet(jac)[1] + method.offset


def test_glow_trained_with_weight_decay_keeps_an_exact_likelihood():
    """AdamW's decoupled weight decay acts on every trained leaf: the LU permutation
    and signs of the 1x1 convolutions must not be among them (a shrunk P made the
    reported log-likelihood exceed the true one by nats per example)."""
    cfg = load_config(CONFIGS / "glow_digits.py", **{
        "model.steps_per_level": 1, "model.hidden": 8, "optim.name": "adamw", "optim.weight_decay": 10.0,
        "optim.learning_rate": 1e-2, "optim.schedule": "constant", "optim.warmup_steps": 0})
    glow = _flow(cfg)
    x, _ = load_split(cfg, "train")
    x = jnp.asarray(x[:32])
    state = jax.jit(glow.init)(jax.random.key(0), {"x": x})
    paths = jax.tree_util.tree_leaves_with_path(state.params)
    keys = {getattr(k, "key", None) for path, _ in paths for k in path}
    assert not keys & {"p", "sign_s"}  # the LU permutations and signs are not trained

    @jax.jit
    def run(state):
        step = lambda i, s: glow.train_step(s, {"x": x}, jax.random.key(i))[0]  # noqa: E731
        state = jax.lax.fori_loop(0, 8, step, state)
        return glow.log_prob(state, x[:3], jax.random.key(0)), _brute_force_log_lik(glow, state, x[:3])

    got, want = run(state)
    assert np.all(np.isfinite(want))
    np.testing.assert_allclose(got, want, atol=0.05)

