"""The shape-dispatched convolution layers equal flax's: values, gradients, parameter trees.

gen_jax.nn.Conv / ConvTranspose compute small-map convolutions as patches + one dot
(im2col) and the rest with lax.conv_general_dilated; whichever path a shape takes,
outputs and gradients must equal flax.linen's layers and parameters must be the same
tree (names, shapes, initial values), so checkpoints are unchanged.
"""

from __future__ import annotations

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import CONFIGS

from gen_jax import load_config, registry
from gen_jax.nn.conv import Conv, ConvEncoder, ConvTranspose, choose_impl, conv_general_dilated

TOL = {"atol": 1e-5, "rtol": 1e-5}

# (map size, kernel, stride, padding, kernel dilation, path "auto" takes)
CASES = [
    (1, 3, 1, "SAME", 1, "im2col"),                 # one tap sees the input
    (2, 3, 1, "SAME", 1, "im2col"),
    (4, 4, 2, "SAME", 1, "im2col"),                 # DCGAN discriminator's last layers
    (5, 3, 2, "VALID", 1, "im2col"),
    (2, 3, 2, ((1, 0), (2, 1)), 1, "im2col"),       # explicit, asymmetric
    (4, 3, 1, "SAME", 2, "im2col"),                 # dilated window 5x5 on a 4x4 map
    (3, (1, 3), 1, "SAME", 1, "lax"),               # a row kernel on a 3x3 map
    (8, 3, 1, "SAME", 1, "lax"),
    (8, 4, 2, "SAME", 1, "lax"),
    (6, 3, 2, ((2, 1), (0, 2)), 1, "lax"),
]


def _uses_lax_conv(fn, *args) -> bool:
    return "conv_general_dilated" in str(jax.make_jaxpr(fn)(*args))


def _values_and_grads(modules, variables, x):
    """(output, (param grads, input grads)) of each module, in one compiled call."""

    def loss(params, x, module):
        y = module.apply({"params": params}, x)
        return jnp.sum(y * jnp.cos(jnp.arange(y.size, dtype=y.dtype).reshape(y.shape))), y

    def all_of_them(params, x):
        return [jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)(params, x, m)[::-1]
                for m in modules]

    return [(y, grads) for grads, (_, y) in jax.jit(all_of_them)(variables["params"], x)]


IMPLS = ("auto", "im2col", "lax_wdot")


@pytest.mark.parametrize("size,kernel,stride,padding,dilation,path", CASES)
def test_conv_equals_flax_conv_on_every_path(size, kernel, stride, padding, dilation, path):
    ks = (kernel, kernel) if isinstance(kernel, int) else kernel
    x = jax.random.normal(jax.random.key(1), (2, size, size + 1, 3))
    kw = {"strides": stride, "padding": padding, "kernel_dilation": dilation}
    ref = nn.Conv(5, ks, **kw)
    variables = jax.jit(ref.init)(jax.random.key(0), x)
    ours = {impl: Conv(5, ks, **kw, impl=impl) for impl in IMPLS}
    chex.assert_trees_all_equal(jax.jit(ours["auto"].init)(jax.random.key(0), x), variables)
    # "auto" computes exactly as the path it takes (checked on the jaxpr), so the forced
    # formulations are the ones compared with flax.
    took_lax = _uses_lax_conv(lambda v, x: ours["auto"].apply(v, x), variables, x)
    assert took_lax == (path == "lax")
    assert not _uses_lax_conv(lambda v, x: ours["im2col"].apply(v, x), variables, x)
    (want_y, want_grads), *results = _values_and_grads(
        [ref, ours["im2col"], ours["lax_wdot"]], variables, x)
    for y, grads in results:
        chex.assert_trees_all_close(y, want_y, **TOL)
        chex.assert_trees_all_close(grads, want_grads, **TOL)


def test_lax_wdot_differentiates_the_kernel_with_a_dot_and_nests():
    """The hybrid's weight gradient is a dot (no conv), its input gradient a conv; second
    derivatives (WGAN-GP) and forward mode (flows' brute-force log-dets) match lax."""
    x = jax.random.normal(jax.random.key(1), (2, 5, 5, 3))
    w = jax.random.normal(jax.random.key(2), (3, 3, 3, 4))

    def f(impl):
        return lambda x, w: jnp.sum(jnp.sin(conv_general_dilated(
            x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"), impl=impl)))

    wgrad = str(jax.make_jaxpr(jax.grad(f("lax_wdot"), 1))(x, w))
    assert wgrad.count("conv_general_dilated") == 1 and "dot_general" in wgrad  # the forward
    assert "dot_general" not in str(jax.make_jaxpr(jax.grad(f("lax_wdot"), 0))(x, w))

    def derivatives(impl):
        gp = jax.grad(lambda w: jnp.sum(jax.grad(f(impl))(x, w) ** 2))(w)
        return gp, jax.jacfwd(f(impl), 1)(x, w), jax.grad(f(impl), (0, 1))(x, w)

    got, want = jax.jit(lambda: (derivatives("lax_wdot"), derivatives("lax")))()
    chex.assert_trees_all_close(got, want, **TOL)


@pytest.mark.parametrize("size,kernel,stride,padding,transpose_kernel", [
    (2, 4, 2, "SAME", False), (3, 3, 2, "VALID", True), (2, 3, 1, ((1, 2), (0, 1)), False)])
def test_conv_transpose_equals_flax(size, kernel, stride, padding, transpose_kernel):
    x = jax.random.normal(jax.random.key(1), (2, size, size, 3))
    kw = {"strides": (stride, stride), "padding": padding, "transpose_kernel": transpose_kernel}
    ref = nn.ConvTranspose(4, (kernel, kernel), **kw)
    variables = jax.jit(ref.init)(jax.random.key(0), x)
    ours = [ConvTranspose(4, (kernel, kernel), **kw, impl=impl) for impl in IMPLS[1:]]
    chex.assert_trees_all_equal(jax.jit(ours[0].init)(jax.random.key(0), x), variables)
    (want_y, want_grads), *results = _values_and_grads([ref, *ours], variables, x)
    for y, grads in results:
        chex.assert_trees_all_close(y, want_y, **TOL)
        chex.assert_trees_all_close(grads, want_grads, **TOL)


def test_family_parameter_trees_are_unchanged():
    """A family network built on the new layers has flax's tree: same names, same values."""

    class FlaxEncoder(nn.Module):  # ConvEncoder as it was, on flax.linen.Conv
        @nn.compact
        def __call__(self, x):
            h = nn.silu(nn.Conv(4, (3, 3))(x))
            for c in (4, 8):
                h = nn.silu(nn.Conv(c, (3, 3), strides=(2, 2))(h))
            h = nn.silu(nn.Dense(16)(h.reshape(h.shape[0], -1)))
            return nn.Dense(6)(h)

    x = jax.random.normal(jax.random.key(1), (2, 8, 8, 1))
    ours, ref = ConvEncoder((4, 8), 16, 6), FlaxEncoder()
    v_ours, v_ref = jax.jit(lambda k: (ours.init(k, x), ref.init(k, x)))(jax.random.key(0))
    chex.assert_trees_all_equal(v_ours, v_ref)
    assert sorted(v_ours["params"]) == ["Conv_0", "Conv_1", "Conv_2", "Dense_0", "Dense_1"]
    chex.assert_trees_all_close(*jax.jit(lambda v: (ours.apply(v, x), ref.apply(v, x)))(v_ref),
                                **TOL)


def test_unsupported_options_fall_back_or_say_why():
    x = jax.random.normal(jax.random.key(1), (2, 2, 2, 4))
    w = jax.random.normal(jax.random.key(2), (3, 3, 2, 6))
    dn = ("NHWC", "HWIO", "NHWC")
    want = jax.lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=dn,
                                        feature_group_count=2)
    got = conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=dn, feature_group_count=2)
    np.testing.assert_allclose(got, want, **TOL)
    with pytest.raises(ValueError, match="im2col.*feature_group_count"):
        conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=dn, feature_group_count=2,
                             impl="im2col")
    with pytest.raises(ValueError, match="unknown conv impl"):
        Conv(3, (3, 3), impl="fast").init(jax.random.key(0), x)
    with pytest.raises(ValueError, match="CIRCULAR"):
        ConvTranspose(3, (3, 3), padding="CIRCULAR").init(jax.random.key(0), x)


def test_rule_by_shape():
    assert choose_impl((2, 2), (3, 3), 64) == "im2col"
    assert choose_impl((4, 8), (5, 3), 8) == "im2col"
    assert choose_impl((4, 4), (3, 3), 512) == "lax"
    assert choose_impl((4, 4), (4, 4), 8) == "lax"
    assert choose_impl((32, 32), (3, 3), 128) == "lax_wdot"


@pytest.mark.parametrize("d_steps", [1, 2])
def test_gan_unrolled_d_steps_equal_the_scanned_ones(d_steps):
    """gan.train_step unrolls its k D steps (conv weight gradients in a loop body are slow
    on XLA:CPU); as a loop it gives the same state and metrics. One D step (the default)
    included: lax.scan(unroll=True) of length 1 still emits a while loop."""
    config = load_config(CONFIGS / "gan_toy2d.py", **{
        "model.g_hidden": (8,), "model.d_hidden": (8,), "gan.d_steps": d_steps, "data.batch_size": 8})
    method = registry.build(config)
    batch = {"x": jax.random.normal(jax.random.key(3), (8, 2))}
    state = jax.jit(method.init)(jax.random.key(0), batch)
    out, loops = {}, {}
    for unroll in (True, False):
        method.unroll_d_steps = unroll
        lowered = jax.jit(method.train_step).lower(state, batch, jax.random.key(1))
        loops[unroll] = lowered.as_text().count("stablehlo.while")
        out[unroll] = lowered.compile()(state, batch, jax.random.key(1))
    assert loops[False] == loops[True] + 1  # the D-step loop, and only it, is gone
    chex.assert_trees_all_close(out[True], out[False], atol=1e-6, rtol=1e-6)


# -- XLA:CPU's YNNPACK fusion per run (runtime.cpu_conv_fusion) ---------------------------


def _ynn_ops(compiled) -> int:
    return compiled.as_text().lower().count("ynn")


def test_conv_fusion_setting_and_the_runtime_compiles_with_it(tmp_path):
    import tensorflow_datasets as tfds

    from gen_jax import parallel, train
    from gen_jax.data import make_train_iterator
    from gen_jax.errors import ConfigError

    off = {"xla_cpu_experimental_ynn_fusion_type": ""}
    assert parallel.compiler_options(load_config(CONFIGS / "vae_digits.py")) == off  # the default
    on = load_config(CONFIGS / "vae_digits.py", **{"runtime.cpu_conv_fusion": "on"})
    assert parallel.compiler_options(on) is None  # XLA's defaults
    with pytest.raises(ConfigError, match=r"runtime.cpu_conv_fusion must be one of .*'off'.* got 'of'"):
        load_config(CONFIGS / "vae_digits.py", **{"runtime.cpu_conv_fusion": "of"})
    # The option reaches XLA: XLA fuses a 28x28 convolution into YNNPACK, not with the option.
    x, w = jnp.ones((4, 28, 28, 8)), jnp.ones((3, 3, 8, 8))

    def conv(w):
        return conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                    impl="lax").sum()

    assert _ynn_ops(jax.jit(conv).lower(w).compile()) > 0
    assert _ynn_ops(jax.jit(conv, compiler_options=off).lower(w).compile()) == 0
    # The runtime's train step (vae_mnist:smoke, 28x28 mock data) takes the Run's options.
    with tfds.testing.mock_data(num_examples=64):
        cfg = load_config(f"{CONFIGS / 'vae_mnist.py'}:smoke")
        run = train.setup(cfg, tmp_path)
        batch = next(make_train_iterator(cfg, cfg.seed))
    assert run.options == off
    state = train._init_state(run, batch)
    step = train._Programs(run).one(0)
    compiled = step.lower(state, parallel.shard_batch(batch, run.mesh), run.keys["train"]).compile()
    assert _ynn_ops(compiled) == 0
