"""Bijectors and composed flows: inverse(forward(x)) = x and log|det J| against a
jax.jacfwd brute force; actnorm's data-dependent init; the LU 1x1 conv against
slogdet and a real convolution; the logistic-mixture CDF against scipy."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from scipy import stats

from gen_jax.flows.architectures import BUILDERS, VariationalDequantizer
from gen_jax.flows.bijectors import (
    ActNorm,
    Chain,
    ElementwiseAffine,
    InvConv1x1,
    Invert,
    Logit,
    Rescale,
    Reshape,
    Split,
    Squeeze,
)
from gen_jax.flows.couplings import (
    AdditiveCoupling,
    AffineCoupling,
    MixLogisticCoupling,
    MLPTrunk,
    make_mask,
    mix_logistic_inverse,
    mix_logistic_logit_cdf,
)

IMG, VEC = (4, 4, 2), (4,)


def _model_cfg(**kw) -> ml_collections.ConfigDict:
    # Tiny conditioners: the checks are about the bijections, and XLA's compile
    # time grows with every conv in the graph.
    base = dict(num_couplings=2, steps_per_level=1, hidden=4, num_layers=1, num_blocks=0, num_scales=2,
                num_levels=2, logit_alpha=0.05, coupling="affine", learn_top=True, split_prior=True,
                num_heads=1, num_components=2)
    return ml_collections.ConfigDict({**base, **kw})


# Composed image flows, kept small where compile time is what a bigger one would
# cost (the brute-force Jacobian doubles every conv): one RealNVP scale (the
# multi-scale split is checked by Glow's composition and the Split cases) and
# Flow++ with its per-pixel MLP conditioner instead of gated conv + attention
# (a conditioner sees only the conditioning half, so it cannot break the
# bijection; it is exercised by tests/flows/test_flows_method.py).
IMAGE_FLOW = {"realnvp": {"num_scales": 1}, "flowpp": {"num_blocks": 0}}


def _cases() -> list[tuple[str, object, tuple[int, ...], str]]:
    """(name, bijector, example shape, input kind): every layer and every composed flow."""
    m = _model_cfg()
    return [
        ("actnorm", ActNorm(), IMG, "normal"),
        ("invconv", InvConv1x1(), IMG, "normal"),
        ("invconv_vec", InvConv1x1(), VEC, "normal"),
        ("elementwise", ElementwiseAffine(), IMG, "normal"),
        ("elementwise_data_init", ElementwiseAffine(data_init=True), VEC, "normal"),
        ("rescale", Rescale(0.5, 0.25), IMG, "normal"),
        ("logit", Logit(0.05), IMG, "unit"),
        ("sigmoid", Invert(Logit(0.0)), IMG, "normal"),
        ("squeeze", Squeeze(), IMG, "normal"),
        ("unsqueeze", Squeeze(undo=True), (2, 2, 8), "normal"),
        ("reshape", Reshape(IMG, (32,)), IMG, "normal"),
        ("additive_mlp", AdditiveCoupling(MLPTrunk((8,)), "channel", 1), VEC, "normal"),
        # Single couplings use per-pixel MLP conditioners (the masking and log-det
        # are what is checked; compile time grows with every conv); the conv and
        # gated-attention conditioners are checked inside the composed flows below.
        ("affine_checker", AffineCoupling(MLPTrunk((8,)), "checkerboard", 0), IMG, "normal"),
        ("affine_channel_sigmoid", AffineCoupling(MLPTrunk((8,)), "channel", 1, "sigmoid"), IMG, "normal"),
        ("mixlogistic_checker", MixLogisticCoupling(MLPTrunk((8,)), "checkerboard", 1, 3), IMG, "normal"),
        ("mixlogistic_mlp", MixLogisticCoupling(MLPTrunk((8,)), "channel", 0, 3), VEC, "normal"),
        ("split_learned_prior", Split(Chain([ActNorm(), InvConv1x1()]), learned_prior=True), IMG, "normal"),
        ("split_plain", Split(ElementwiseAffine()), VEC, "normal"),
    ] + [(f"{arch}_image", BUILDERS[arch](_model_cfg(**IMAGE_FLOW.get(arch, {})), (4, 4, 1), (0.0, 1.0)),
          (4, 4, 1), "unit") for arch in BUILDERS
         ] + [(f"{arch}_vector", BUILDERS[arch](m, (2,), (0.0, 1.0)), (2,), "normal") for arch in BUILDERS]


CASES = _cases()


def _perturb(variables, key, scale=0.3):
    """Random parameters, so zero-initialised couplings are not the identity. Other
    collections (the LU permutations and signs, "constants") stay as initialised."""
    if "params" not in variables:  # a parameter-free layer
        return variables
    leaves, tree = jax.tree_util.tree_flatten(variables["params"])
    keys = jax.random.split(key, len(leaves))
    out = [leaf + scale * jax.random.normal(k, leaf.shape) for leaf, k in zip(leaves, keys, strict=True)]
    return {**variables, "params": jax.tree_util.tree_unflatten(tree, out)}


def _check_one(layer, shape, kind, key, scale):
    k_x, k_init, k_p = jax.random.split(key, 3)
    x = jax.random.normal(k_x, (3, *shape))
    if kind == "unit":
        x = jax.nn.sigmoid(x)  # inside (0, 1), as after dequantization
    else:
        x = 1.5 * x + 0.5  # not already standardised: actnorm's init must do work
    params = _perturb(layer.init(k_init, x, method="forward_and_log_det"), k_p, scale)
    y, ld = layer.apply(params, x, method="forward_and_log_det")
    x_back, ld_inv = layer.apply(params, y, method="inverse_and_log_det")

    def f(xi):
        return layer.apply(params, xi[None], method="forward_and_log_det")[0].reshape(-1)

    d = math.prod(shape)
    jac = jax.vmap(jax.jacfwd(f))(x).reshape(3, d, d)
    return {"inv_err": jnp.max(jnp.abs(x_back - x)), "ld": ld, "ld_inv": ld_inv,
            "jac_logdet": jnp.linalg.slogdet(jac)[1], "sign": jnp.linalg.slogdet(jac)[0]}


def _checked(name):
    """One case checked in its own compiled function: thirty small compiles take less
    time than one program holding them all, and spread over the test workers."""
    i = [c[0] for c in CASES].index(name)
    _, layer, shape, kind = CASES[i]
    key = jax.random.split(jax.random.key(0), len(CASES))[i]
    # Composed flows get smaller perturbations: a deep random flow is badly
    # conditioned, and float32 inverses then drift past 1e-4.
    scale = 0.1 if isinstance(layer, Chain) else 0.3
    return jax.device_get(jax.jit(lambda k: _check_one(layer, shape, kind, k, scale))(key))


@pytest.mark.parametrize("name", [c[0] for c in CASES])
def test_inverse_and_log_det_match_brute_force(name):
    r = _checked(name)
    assert r["inv_err"] < 1e-4, f"{name}: inverse(forward(x)) differs by {r['inv_err']}"
    assert np.all(r["sign"] != 0), f"{name}: singular Jacobian"
    np.testing.assert_allclose(r["ld"], r["jac_logdet"], atol=2e-3, rtol=1e-4, err_msg=name)
    np.testing.assert_allclose(r["ld_inv"], -r["ld"], atol=2e-3, rtol=1e-4, err_msg=name)
    if name not in ("squeeze", "unsqueeze", "reshape"):
        assert np.max(np.abs(r["ld"])) > 1e-3 or name.startswith("additive"), f"{name}: trivial log-det"


def test_variational_dequantizer_log_q_matches_jacobian():
    """log q(u|x) = log N(eps) - log|det du/deps|, and u lies in (0, 1)."""
    deq = VariationalDequantizer(hidden=4, num_blocks=1, num_steps=2, num_components=2)
    eps = jax.random.normal(jax.random.key(1), (2, 4, 4, 1))
    x01 = jax.random.uniform(jax.random.key(2), (2, 4, 4, 1))

    @jax.jit
    def run(eps, x01):
        params = _perturb(deq.init(jax.random.key(3), eps, x01), jax.random.key(4))
        u, log_q = deq.apply(params, eps, x01)
        jac = jax.vmap(jax.jacfwd(lambda e, c: deq.apply(params, e[None], c[None])[0].reshape(-1)))(eps, x01)
        return u, log_q, jac

    u, log_q, jac = run(eps, x01)
    log_n = stats.norm.logpdf(np.asarray(eps, np.float64)).reshape(2, -1).sum(1)
    want = log_n - np.linalg.slogdet(np.asarray(jac, np.float64).reshape(2, 16, 16))[1]
    np.testing.assert_allclose(log_q, want, rtol=1e-4, atol=2e-3)
    assert 0 < float(u.min()) and float(u.max()) < 1


def test_actnorm_data_dependent_init_standardises_the_init_batch():
    x = 3.0 + 2.5 * jax.random.normal(jax.random.key(0), (64, 4, 4, 3)) * jnp.array([1.0, 0.1, 4.0])
    params = ActNorm().init(jax.random.key(1), x)
    y, ld = ActNorm().apply(params, x)
    np.testing.assert_allclose(y.mean(axis=(0, 1, 2)), 0.0, atol=1e-5)
    np.testing.assert_allclose(y.std(axis=(0, 1, 2)), 1.0, atol=1e-4)
    want = 16 * np.sum(-np.log(np.asarray(x).reshape(-1, 3).std(0)))  # 16 positions
    np.testing.assert_allclose(ld, want, rtol=1e-4)


def test_lu_invconv_log_det_and_output_match_assembled_matrix():
    x = jax.random.normal(jax.random.key(0), (2, 3, 3, 5))
    params = _perturb(InvConv1x1().init(jax.random.key(1), x), jax.random.key(2))
    lu, fixed = params["params"]["lu"], params["constants"]["lu"]
    assert set(lu) == {"l", "u", "log_s"}  # the permutation and signs are not trained
    p = np.asarray(fixed["p"])
    assert sorted(p.sum(0)) == [1.0] * 5 and set(np.unique(p)) == {0.0, 1.0}  # a permutation
    w = InvConv1x1.assemble(fixed["p"], lu["l"], lu["u"], fixed["sign_s"], lu["log_s"])
    y, ld = InvConv1x1().apply(params, x)
    sign, logdet = np.linalg.slogdet(np.asarray(w, np.float64))
    assert sign != 0
    np.testing.assert_allclose(ld, 9 * logdet, rtol=1e-5)  # 3x3 positions
    np.testing.assert_allclose(float(jnp.sum(lu["log_s"])), logdet, rtol=1e-5)
    conv = jax.lax.conv_general_dilated(x, jnp.asarray(w).T[None, None], (1, 1), "VALID",
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))
    np.testing.assert_allclose(y, conv, atol=1e-5)


def test_mix_logistic_cdf_matches_scipy_and_inverts():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50,)) * 3
    logits, means, log_s = rng.normal(size=(3, 50, 4))
    u, log_du = mix_logistic_logit_cdf(*(jnp.asarray(a, jnp.float32) for a in (x, logits, means, log_s)))
    pi = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    cdf = (pi * stats.logistic.cdf(x[:, None], means, np.exp(log_s))).sum(-1)
    pdf = (pi * stats.logistic.pdf(x[:, None], means, np.exp(log_s))).sum(-1)
    np.testing.assert_allclose(u, np.log(cdf) - np.log1p(-cdf), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(log_du, np.log(pdf / (cdf * (1 - cdf))), rtol=1e-4, atol=1e-4)
    back = mix_logistic_inverse(u, *(jnp.asarray(a, jnp.float32) for a in (logits, means, log_s)))
    np.testing.assert_allclose(back, x, atol=1e-4)


def test_masks():
    cb = make_mask((2, 3, 2), "checkerboard", 0)
    np.testing.assert_array_equal(cb[..., 0], [[1, 0, 1], [0, 1, 0]])
    np.testing.assert_array_equal(cb[..., 1], cb[..., 0])
    np.testing.assert_array_equal(make_mask((4,), "channel", 1), [0, 0, 1, 1])
    assert np.all(make_mask((2, 2, 4), "channel", 0) + make_mask((2, 2, 4), "channel", 1) == 1)
