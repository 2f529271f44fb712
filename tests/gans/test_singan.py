"""SinGAN: the custom convolution's gradients, the pyramid's wiring, the noise-amplitude
rule, the critic's sign, learning the reconstruction, exact continuation across a scale
boundary, samples at other aspect ratios, and SIFID."""

from __future__ import annotations

from pathlib import Path

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg
from flax import linen as nn

from gen_jax import load_config, parallel, registry, train
from gen_jax.data import dataset_info, make_train_iterator
from gen_jax.gans import singan
from gen_jax.metrics import inception
from gen_jax.metrics.inception import BasicConv, InceptionV3

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "singan_brick.py"
STEPS_PER_SCALE = 40


def _config():
    return load_config(f"{CONFIG}:smoke", **{"model.conv": "wdot", "singan.steps_per_scale": STEPS_PER_SCALE,
                                             "train.num_steps": 2 * STEPS_PER_SCALE})


def _build():
    cfg = _config()
    method = registry.build(cfg, dataset_info(cfg.data))
    return method, next(make_train_iterator(cfg, cfg.seed))


@pytest.fixture(scope="module")
def trained():
    """A tiny 2-scale SinGAN (24 px brick, 16 px coarsest) and its states: fresh, after the
    whole coarsest scale, and after the first step of scale 1."""
    method, batch = _build()
    # compiled as the runtime compiles it (its XLA options: runtime.cpu_conv_fusion)
    step = jax.jit(method.train_step,
                   compiler_options=parallel.compiler_options(_config()))
    state = jax.jit(method.init)(jax.random.key(0), batch)
    states = {0: state}
    for i in range(STEPS_PER_SCALE + 1):
        state, _ = step(state, batch, jax.random.fold_in(jax.random.key(1), i))
        states[i + 1] = state
    return method, step, batch, states


def test_conv_valid_and_its_first_and_second_gradients_equal_lax():
    k1, k2 = jax.random.split(jax.random.key(0))
    x = jax.random.normal(k1, (2, 9, 7, 3))
    w = jax.random.normal(k2, (3, 3, 3, 4))

    def lax_conv(x, w):
        return jax.lax.conv_general_dilated(x, w, (1, 1), "VALID", dimension_numbers=singan._NHWC)

    def penalty(conv):  # a gradient penalty: differentiates the input gradient w.r.t. the kernel
        def f(w, x):
            gx = jax.grad(lambda xx: jnp.sum(jnp.tanh(conv(xx, w)) ** 2))(x)
            return jnp.sum(gx ** 2) + jnp.sum(conv(x, w) ** 3)
        return jax.jit(jax.grad(f, argnums=(0, 1)))(w, x)

    np.testing.assert_allclose(singan.conv_valid(x, w), lax_conv(x, w), rtol=1e-5, atol=1e-5)
    for ours, ref in zip(penalty(singan.conv_valid), penalty(lax_conv), strict=True):
        np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-4)


def test_pyramid_shapes_and_stretching():
    shapes = singan.pyramid_shapes(43, 64, 4, 20)
    assert shapes[-1] == (43, 64) and min(shapes[0]) == 20
    pairs = zip(shapes[:-1], shapes[1:], strict=True)
    assert all(a[0] < b[0] and a[1] < b[1] for a, b in pairs)  # coarse to fine
    wide = singan.pyramid_shapes(43, 64, 4, 20, scale_h=2.0)
    assert [s[0] for s in wide] == [s[0] for s in shapes]
    assert [s[1] for s in wide] == [round(2 * 64 * (20 / 43) ** ((3 - n) / 3)) for n in range(4)]


def test_coarsest_scale_learns_to_reconstruct_with_its_fixed_noise(trained):
    method, step, batch, states = trained
    real0 = singan.resize(batch["x"][:1], method.shapes[0])

    @jax.jit
    def rec0(state):
        g0 = state.g[0].params
        return method.g_net.apply({"params": g0}, state.noise_amp[0] * state.z_rec, jnp.zeros_like(real0))

    before = float(jnp.sqrt(jnp.mean((rec0(states[1]) - real0) ** 2)))
    after = float(jnp.sqrt(jnp.mean((rec0(states[STEPS_PER_SCALE]) - real0) ** 2)))
    assert after < 0.5 * before and after < 0.2, (before, after)
    # The step's reconstruction term is this path (fixed noise z*_0, not a fresh draw): with one
    # G update per step it is reported at the step's starting weights.
    _, metrics = step(states[10], batch, jax.random.key(4))
    by_hand = float(jnp.mean((rec0(states[10]) - real0) ** 2))
    assert float(metrics["rec_mse"]) == pytest.approx(by_hand, rel=1e-4)
    # ...and that path is the Method's reconstruction (upsampled: scale 1 is untrained there).
    full = jax.jit(method.reconstruction)(states[STEPS_PER_SCALE])
    np.testing.assert_allclose(full, singan.resize(rec0(states[STEPS_PER_SCALE]), method.shapes[1]),
                               atol=1e-5)


def test_noise_amplitude_follows_the_rmse_rule(trained):
    method, step, batch, states = trained
    s = STEPS_PER_SCALE
    assert float(states[1].noise_amp[0]) == 1.0 and float(states[1].noise_amp[1]) == 0.0
    amp1 = float(states[s + 1].noise_amp[1])  # set by the first step of scale 1
    # By hand: G_0 on the fixed noise, upsampled bicubically to scale 1, against the real image there.
    g0 = states[s].g[0].params
    h0, h1 = method.shapes[0], method.shapes[1]

    @jax.jit  # one compile (eagerly, each op would compile on its own)
    def rmse(g0, z_rec, x):
        rec = method.g_net.apply({"params": g0}, z_rec, jnp.zeros((1, *h0, 1)))
        up = jax.image.resize(rec, (1, *h1, 1), "bicubic")
        real1 = jax.image.resize(x[:1], (1, *h1, 1), "bicubic", antialias=True)
        return jnp.sqrt(jnp.mean((real1 - up) ** 2))

    expected = method.config.singan.noise_amp * float(rmse(g0, states[s].z_rec, batch["x"]))
    assert amp1 == pytest.approx(expected, rel=1e-4) and amp1 > 0
    # Set once: later steps of the scale keep it.
    later, _ = step(states[s + 1], batch, jax.random.key(9))
    assert float(later.noise_amp[1]) == amp1
    # Scale 1 starts exactly at step s (not before), frozen scale 0 stays as it was, and scale 1
    # starts from scale 0's trained weights: one Adam step (at most ~lr per weight) away.
    assert float(states[s].noise_amp[1]) == 0.0
    lr = method.config.optim.learning_rate
    for net in ("g", "d"):
        init = jax.tree.leaves(getattr(states[0], net)[1].params)
        trained0 = jax.tree.leaves(getattr(states[s], net)[0].params)
        started = jax.tree.leaves(getattr(states[s + 1], net)[1].params)
        for a, b in zip(jax.tree.leaves(getattr(states[s + 1], net)[0].params), trained0, strict=True):
            np.testing.assert_array_equal(a, b)  # frozen once its scale is done
        for a, b in zip(init, jax.tree.leaves(getattr(states[s], net)[1].params), strict=True):
            np.testing.assert_array_equal(a, b)  # untouched while scale 0 trains
        assert max(float(jnp.abs(a - b).max()) for a, b in zip(started, trained0, strict=True)) < 1.01 * lr
        assert max(float(jnp.abs(a - b).max()) for a, b in zip(trained0, init, strict=True)) > 3 * lr


def test_samples_are_upsampled_from_the_scale_below_at_any_aspect_ratio(trained):
    method, _, _, states = trained
    state = states[STEPS_PER_SCALE + 1]
    h, w, c = method.info.shape
    for sv, sh in ((1.0, 2.0), (0.75, 1.5)):
        shapes = singan.pyramid_shapes(h, w, 2, method.config.singan.min_size, sv, sh)

        @jax.jit
        def both(state, key):
            x = method.sample(state, key, 2, scale_v=sv, scale_h=sh)  # noqa: B023
            # By hand from the noise maps the sampler draws (the same keys).
            zs = method._random_zs(key, 2, 2, shapes)  # noqa: B023
            p, amp = [ts.params for ts in state.g], state.noise_amp
            x0 = method.g_net.apply({"params": p[0]}, amp[0] * zs[0], jnp.zeros((2, *shapes[0], c)))  # noqa: B023
            prev = jax.image.resize(x0, (2, *shapes[1], c), "bicubic")  # noqa: B023
            return x, method.g_net.apply({"params": p[1]}, amp[1] * zs[1] + prev, prev)

        x, x1 = both(state, jax.random.key(3))
        assert x.shape == (2, *shapes[1], c)
        np.testing.assert_allclose(x, jnp.clip(x1, -1, 1), atol=1e-5)
    amp = state.noise_amp
    assert float(amp[1]) > 0


def test_a_critic_step_raises_real_minus_fake(trained):
    method, step, batch, states = trained
    state = states[5]
    real0 = singan.resize(batch["x"][:1], method.shapes[0])
    fake = jax.jit(lambda st, r: method.sample(st, r, 1))(state, jax.random.key(7))
    fake0 = singan.resize(fake, method.shapes[0])

    @jax.jit
    def critic(params):
        return method.d_net.apply({"params": params}, jnp.concatenate([real0, fake0]))

    def gap(st):
        out = critic(st.d[0].params)
        return float(out[0].mean() - out[1].mean())

    after, metrics = step(state, batch, jax.random.key(11))
    assert gap(after) > gap(state)
    assert float(metrics["d_real"]) > float(metrics["d_fake"])  # five steps in, D tells them apart


def test_the_runtime_continues_exactly_across_the_scale_boundary_one_program_per_scale(trained, tmp_path):
    """Everything a run needs is in the state: the runtime of a restarted process (a new
    Method) resumed from step STEPS_PER_SCALE - 1 ends, two steps later, in scale 1 exactly
    where the all-scale ``train_step`` did, compiling one program per scale
    (registry.HasStages) in place of the lax.switch over all of them."""
    method, step, batch, states = trained
    s = STEPS_PER_SCALE
    run = train.setup(_config(), tmp_path)
    assert isinstance(run.method, registry.HasStages) and run.method is not method
    at = train._Programs(run).one
    assert at(0) is at(s - 1) and at(s) is at(2 * s - 1) and at(s) is not at(s - 1)
    restored = jax.tree.map(lambda a: jnp.asarray(np.asarray(a)) if isinstance(a, jax.Array) and
                            not jax.dtypes.issubdtype(a.dtype, jax.dtypes.prng_key) else a, states[s - 1])
    for i in (s - 1, s):
        restored, metrics = at(i)(restored, batch, jax.random.fold_in(jax.random.key(1), i))
        assert bool(metrics["finite"])
    # the same numbers; a per-scale program rounds a few float32 values differently
    chex.assert_trees_all_close(restored, states[s + 1], rtol=1e-5, atol=1e-8)
    assert int(restored.step) == s + 1 and float(restored.noise_amp[1]) > 0


class _Block0ByHand(nn.Module):
    """The official SIFID's block 0 (tamarott/SinGAN SIFID/inception.py: Conv2d_1a, 2a, 2b of
    torchvision's layout, no resize, [0, 1] -> [-1, 1]) and, with ``pool``, pytorch-fid's
    block 0 (then MaxPool2d(3, stride=2), no padding)."""

    pool: bool

    @nn.compact
    def __call__(self, x):
        x = 2.0 * x - 1.0
        x = BasicConv(32, (3, 3), (2, 2), name="Conv2d_1a_3x3")(x)
        x = BasicConv(32, (3, 3), name="Conv2d_2a_3x3")(x)
        x = BasicConv(64, (3, 3), padding=((1, 1), (1, 1)), name="Conv2d_2b_3x3")(x)
        return nn.max_pool(x, (3, 3), (2, 2), padding="VALID") if self.pool else x


def _frechet_by_hand(a, b):
    ma, mb, ca, cb = a.mean(0), b.mean(0), np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    return float(((ma - mb) ** 2).sum() + np.trace(ca + cb - 2 * scipy.linalg.sqrtm(ca @ cb).real))


@pytest.mark.filterwarnings("ignore::scipy.linalg.LinAlgWarning")  # dead random ReLUs: singular covariances
def test_sifid_features_are_block0_by_hand_and_sifid_is_zero_only_on_the_image_itself(monkeypatch):
    """Random weights and batch statistics (no installed weights needed), gray 27x30 images."""
    block0 = InceptionV3(resize=False, capture=("MaxPool_3a",))
    variables = jax.jit(block0.init)(jax.random.key(0), jnp.zeros((1, 27, 30, 3)))
    rng = np.random.default_rng(0)  # running statistics other than 0 and 1
    variables["batch_stats"] = jax.tree.map(lambda v: v + rng.uniform(-0.3, 0.3, v.shape).astype(np.float32),
                                            variables["batch_stats"])
    gray = rng.random((3, 27, 30, 1)).astype(np.float32)
    real, rgb = gray[0], np.repeat(gray, 3, -1)
    for tap, pool, hw in (("Conv2d_2b_3x3", False, (11, 12)), ("MaxPool_3a", True, (5, 5))):
        want = np.asarray(jax.jit(_Block0ByHand(pool).apply)(variables, rgb))
        assert want.shape[1:] == (*hw, 64)
        np.testing.assert_allclose(singan.sifid_features(variables, gray, tap), want.reshape(3, -1, 64),
                                   rtol=1e-5, atol=1e-5)
    # the default is the official (unpooled) block 0; Frechet over positions, (n - 1) covariances
    fakes = np.stack([real, np.roll(real, (5, 7), (0, 1)), gray[1]])
    values = singan.sifid_per_image(variables, real, fakes)
    by_hand = jax.jit(_Block0ByHand(False).apply)(variables, np.repeat(fakes, 3, -1))
    by_hand = np.asarray(by_hand, np.float64).reshape(3, -1, 64)
    np.testing.assert_allclose(values[1:], [_frechet_by_hand(by_hand[0], f) for f in by_hand[1:]], rtol=1e-4)
    assert abs(values[0]) < 1e-6 and values[1] > 1e-3 and values[2] > 1e-3
    monkeypatch.setattr(inception, "load_weights", lambda path: (variables, f"random {path}"))
    assert singan.sifid(real[None], fakes, "w") == (pytest.approx(values.mean(), rel=1e-9), "random w")


def test_sifid_says_why_when_unavailable(tmp_path):
    none, why = singan.sifid(np.zeros((16, 16, 3)), np.zeros((1, 16, 16, 3)),
                             inception_path=str(tmp_path / "missing.npz"))
    assert none is None and "does not exist" in why
