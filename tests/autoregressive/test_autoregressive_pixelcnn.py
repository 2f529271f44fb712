"""PixelCNN / Gated PixelCNN: causality by full Jacobians, normalization by brute-force
enumeration, NLL by hand, logistic mixture vs scipy, conditional labels, sampling, and the
sampler's frequencies against the model's own probabilities of every image."""

from __future__ import annotations

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import CONFIGS
from scipy import special, stats

from gen_jax import load_config, registry
from gen_jax.autoregressive.heads import CategoricalHead, LogisticMixtureHead, make_head
from gen_jax.autoregressive.networks import GatedPixelCNNNet, PixelCNNNet
from gen_jax.data import DataInfo, load_split
from gen_jax.errors import ConfigError
from gen_jax.nn.masked_conv import causal_mask

TINY = {"model.features": 4, "model.num_layers": 1, "model.head_features": 8,
        "model.first_kernel": 3, "data.batch_size": 8}


def test_causal_masks_by_hand():
    a = causal_mask((3, 3), 3, 6, 3, "full", "A")
    b = causal_mask((3, 3), 3, 6, 3, "full", "B")
    assert (a[0] == 1).all() and (a[1, 0] == 1).all() and (a[1, 2] == 0).all() and (a[2] == 0).all()
    # Output groups (R, R, G, G, B, B); input channels R, G, B.
    want_a = np.array([[0, 0, 1, 1, 1, 1], [0, 0, 0, 0, 1, 1], [0, 0, 0, 0, 0, 0]])
    np.testing.assert_array_equal(a[1, 1], want_a)
    np.testing.assert_array_equal(b[1, 1], want_a + np.array([[1, 1, 0, 0, 0, 0], [0, 0, 1, 1, 0, 0],
                                                             [0, 0, 0, 0, 1, 1]]))
    v = causal_mask((3, 3), 2, 2, 1, "vertical", "A")
    assert v[0].all() and not v[1:].any()
    assert causal_mask((3, 3), 2, 2, 1, "vertical", "B")[:2].all()
    h = causal_mask((1, 3), 1, 1, 1, "horizontal", "B")
    np.testing.assert_array_equal(h[0, :, 0, 0], [1, 1, 0])
    # Gates: both halves carry all colour groups.
    g = causal_mask((1, 1), 3, 6, 3, "horizontal", "B", out_splits=2)
    np.testing.assert_array_equal(g[0, 0][:, :3], g[0, 0][:, 3:])
    with pytest.raises(ConfigError, match="divisible into 3 colour groups"):
        causal_mask((3, 3), 3, 4, 3, "full", "B")


def _jacobian(net, params, x, labels=None):
    """Sum over the batch of |d(projected output at every subpixel)/d(input)|, as (D, D)
    in raster+channel order. Several inputs, so that a ReLU of the output layers that
    happens to be inactive at one input does not hide a connection."""

    @jax.jit  # one compile (eagerly, each op of the Jacobian would compile on its own)
    def jacobian(params, x, labels):
        r = jax.random.normal(jax.random.key(9), net.apply(params, x, labels).shape[-1:])
        f = lambda xi: (net.apply(params, xi[None], labels) * r).sum(-1)[0]  # noqa: E731
        return jax.vmap(jax.jacrev(f))(x)  # (N, H, W, C, H, W, C)

    jac = jacobian(params, x, labels)
    d = x[0].size
    return np.abs(np.asarray(jac)).reshape(len(x), d, d).sum(0)


@pytest.mark.parametrize("gated", [False, True])
def test_causality_and_gated_has_no_blind_spot(gated):
    """Output subpixel o depends on no input subpixel >= o; the Gated PixelCNN on every one < o."""
    h, w, c = 3, 3, 3  # 2 gated layers reach every earlier pixel of a 3x3 image
    if gated:
        net = GatedPixelCNNNet(c, 5, features=6, num_layers=2, first_kernel=3, kernel=3,
                               head_features=12, num_classes=3)
        labels = jnp.array([1])
    else:
        net = PixelCNNNet(c, 5, features=6, num_layers=1, first_kernel=3, kernel=3, head_features=6)
        labels = None
    x = jax.random.normal(jax.random.key(0), (4, h, w, c))
    params = jax.jit(net.init)(jax.random.key(1), x[:1], labels)
    jac = _jacobian(net, params, x, labels)
    upper = np.triu(np.ones_like(jac, bool))  # input index >= output index
    assert np.all(jac[upper] == 0.0)
    strictly_lower = ~upper
    if gated:
        assert np.all(jac[strictly_lower] > 0), "blind spot"
        # The class label changes every output.
        apply = jax.jit(net.apply)
        diff = apply(params, x, jnp.array([2])) - apply(params, x, labels)
        assert np.all(np.abs(np.asarray(diff)).sum((0, -1)) > 0)
    else:
        # PixelCNN's blind spot: output (1, 0) cannot see input (0, 2) (up and to the right,
        # where stacked masked 3x3 layers never reach), though it comes earlier in raster order.
        o, i = (1 * w + 0) * c, (0 * w + 2) * c
        assert jac[o, i] == 0.0 and jac[strictly_lower].sum() > 0


@pytest.mark.parametrize("gated,shape,levels", [(False, (2, 2, 1), 3), (True, (1, 2, 3), 2)])
def test_joint_probabilities_sum_to_one_by_enumeration(gated, shape, levels):
    """Summing p(x) over every possible image gives 1: causality plus a normalized head."""
    c = shape[-1]
    head = CategoricalHead(levels)
    net = (GatedPixelCNNNet(c, levels, features=6, num_layers=1, first_kernel=3, head_features=6)
           if gated else PixelCNNNet(c, levels, features=3, num_layers=1, first_kernel=3,
                                     head_features=6))
    k = jnp.asarray(list(itertools.product(range(levels), repeat=math.prod(shape)))).reshape(-1, *shape)
    x = 2.0 * k / (levels - 1) - 1.0
    params = jax.jit(net.init)(jax.random.key(2), x[:1])
    # Random init gives near-uniform outputs; scaling the parameters makes p far from uniform.
    params = jax.jit(lambda params: jax.tree.map(lambda p: 3.0 * p + 0.3, params))(params)
    lp = jax.jit(lambda p: head.log_prob(net.apply(p, x), k).reshape(len(k), -1).sum(-1))(params)
    assert float(jnp.exp(lp).sum()) == pytest.approx(1.0, abs=1e-4)
    assert float(jnp.exp(lp).max()) > 3.0 / len(k)


def test_logistic_mixture_matches_scipy_and_normalizes():
    levels, m = 17, 3
    head = LogisticMixtureHead(levels, m)
    rng = np.random.default_rng(0)
    params = rng.normal(size=(4, 3 * m)).astype(np.float32)
    params[:, 2 * m:] = rng.uniform(-4, 0, size=(4, m))  # log-scales
    lp_all = np.asarray(jax.jit(head.log_probs)(jnp.asarray(params)))  # (4, L)
    np.testing.assert_allclose(np.exp(lp_all).sum(-1), 1.0, atol=1e-5)
    pi = special.softmax(params[:, :m], -1)
    mu, s = params[:, m:2 * m], np.exp(params[:, 2 * m:])
    centres = -1 + 2 * np.arange(levels) / (levels - 1)
    upper = np.where(np.arange(levels) == levels - 1, np.inf, centres + 1 / (levels - 1))
    lower = np.where(np.arange(levels) == 0, -np.inf, centres - 1 / (levels - 1))
    cdf = lambda e: stats.logistic.cdf(e[None, :, None], mu[:, None], s[:, None])  # noqa: E731
    want = ((cdf(upper) - cdf(lower)) * pi[:, None]).sum(-1)
    np.testing.assert_allclose(np.exp(lp_all), want, rtol=2e-4, atol=1e-7)
    # Sampling is exact: empirical frequencies match the probabilities.
    draws = jax.jit(head.sample)(jax.random.key(3), jnp.broadcast_to(params[0], (20000, 3 * m)))
    freq = np.bincount(np.asarray(draws), minlength=levels) / 20000
    np.testing.assert_allclose(freq, want[0], atol=0.015)
    with pytest.raises(ConfigError, match="known: categorical, logistic_mixture"):
        make_head("softmax", 17)


@pytest.fixture(scope="module")
def digits_pixelcnn():
    cfg = load_config(CONFIGS / "pixelcnn_digits.py", **TINY)
    method = registry.build(cfg)
    x, y = load_split(cfg, "test")
    state = jax.jit(method.init)(jax.random.key(0), {"x": x[:8]})
    return method, state, x[:8]


def test_nll_equals_per_pixel_cross_entropy_by_hand(digits_pixelcnn):
    method, state, x = digits_pixelcnn
    lp = np.asarray(jax.jit(method.log_prob)(state, jnp.asarray(x), jax.random.key(0)))
    levels = np.rint(x * 16).astype(int)  # value_range (0, 1), 17 levels
    logits = np.asarray(jax.jit(method.dist_params)(state.params, jnp.asarray(levels)), np.float64)
    log_softmax = logits - special.logsumexp(logits, axis=-1, keepdims=True)
    want = np.take_along_axis(log_softmax, levels[..., None], -1).reshape(8, -1).sum(-1)
    np.testing.assert_allclose(lp, want, rtol=1e-5)
    metrics = jax.jit(method.eval_step)(state, {"x": x}, jax.random.key(0))
    assert float(metrics["loss"]) == pytest.approx(-want.mean(), rel=1e-5)
    assert float(metrics["nll_bpd"]) == pytest.approx(-want.mean() / (64 * math.log(2)), rel=1e-5)


def test_sampling_gives_valid_levels_reproducibly(digits_pixelcnn):
    method, state, _ = digits_pixelcnn
    sample = jax.jit(lambda s, r: method.sample(s, r, 6))
    a, b = sample(state, jax.random.key(5)), sample(state, jax.random.key(5))
    c = sample(state, jax.random.key(6))
    assert a.shape == (6, 8, 8, 1)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    levels = np.asarray(a) * 16
    np.testing.assert_allclose(levels, np.rint(levels), atol=1e-5)
    assert levels.min() >= 0 and levels.max() <= 16


def test_conditional_model_uses_labels_and_marginalizes_exactly():
    cfg = load_config(CONFIGS / "gated_pixelcnn_digits.py", **TINY)
    method = registry.build(cfg)
    x, y = load_split(cfg, "test")
    x, y = jnp.asarray(x[:4]), jnp.asarray(y[:4])
    state = jax.jit(method.init)(jax.random.key(0), {"x": x, "y": y})

    @jax.jit
    def both(state, x):
        per_class = jax.vmap(lambda c: method.log_prob(state, x, jax.random.key(0), labels=jnp.full(4, c)))(
            jnp.arange(10))
        return per_class, method.log_prob(state, x, jax.random.key(0))

    per_class, marginal = (np.asarray(a) for a in both(state, x))
    assert np.ptp(per_class, axis=0).min() > 0  # the label changes the likelihood
    np.testing.assert_allclose(marginal, special.logsumexp(per_class, 0) - math.log(10), rtol=1e-5)
    with pytest.raises(ConfigError, match="needs the Gated PixelCNN"):
        registry.build(load_config(CONFIGS / "pixelcnn_digits.py", **{"model.conditional": True}))
    with pytest.raises(ConfigError, match="dequantize='none'"):
        registry.build(load_config(CONFIGS / "pixelcnn_digits.py", **{"data.dequantize": "uniform"}))


def test_samples_follow_the_models_own_probabilities_by_enumeration():
    """It samples from its own model: the empirical frequencies of 20000 samples of a tiny
    PixelCNN over every 2x2 image with 3 levels match exp(log_prob) of each of the 81 images.
    The parameters are scaled from a random init so that p is far from uniform and pixels
    depend strongly on earlier ones (a sampler visiting them out of raster order fails)."""
    shape, levels, n = (2, 2, 1), 3, 20000
    cfg = load_config(CONFIGS / "pixelcnn_digits.py", **{**TINY, "train.ema_decay": 0.0})
    method = registry.build(cfg, DataInfo("tiny", "image", shape, levels, None))
    k = np.array(list(itertools.product(range(levels), repeat=math.prod(shape)))).reshape(-1, *shape)
    from_levels = jax.jit(method.from_levels)
    images = from_levels(jnp.asarray(k))
    state = jax.jit(method.init)(jax.random.key(1), {"x": images[:1]})
    state = state.replace(params=jax.jit(
        lambda params: jax.tree.map(lambda p: 3.0 * p + 0.3, params))(state.params))

    @jax.jit
    def run(state):
        return method.log_prob(state, images, jax.random.key(0)), method.sample(state, jax.random.key(3), n)

    lp, samples = run(state)
    p = np.exp(np.asarray(lp, np.float64))
    assert p.sum() == pytest.approx(1.0, abs=1e-4) and p.max() > 0.2
    drawn = np.asarray(jax.jit(method.to_levels)(samples)).reshape(n, -1)
    np.testing.assert_allclose(np.asarray(samples), np.asarray(from_levels(
        jnp.asarray(drawn.reshape(n, *shape)))), atol=1e-6)  # valid levels, in the value range
    index = drawn @ (levels ** np.arange(drawn.shape[1]))[::-1]  # row of each sample in k
    freq = np.bincount(index, minlength=len(k)) / n
    tv = 0.5 * np.abs(freq - p).sum()
    assert tv < 0.03, tv  # total variation; sampling noise alone gives ~0.005
    common = p * n >= 5  # chi-square over the images expected at least 5 times
    counts = freq[common] * n
    chi = stats.chisquare(counts, p[common] / p[common].sum() * counts.sum())
    assert chi.pvalue > 1e-3, chi
