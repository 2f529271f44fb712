"""GAN objectives, the WGAN-GP penalty and spectral normalization against hand computation."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gen_jax.errors import ConfigError
from gen_jax.gans.losses import OBJECTIVES, get_losses, gradient_penalty
from gen_jax.nn.spectral_norm import SNConv, SNDense, power_iteration

REAL = np.array([0.5, -1.0, 2.0, 0.1])
FAKE = np.array([-0.3, 1.2, 0.0, -2.5])


def _sig(a):
    return 1.0 / (1.0 + np.exp(-a))


def _hand(objective):
    """(d_loss, g_loss) written out from the papers' formulas, with D = sigmoid(logit)."""
    r, f = REAL, FAKE
    bce_d = -np.mean(np.log(_sig(r))) - np.mean(np.log(1 - _sig(f)))
    return {
        "minimax": (bce_d, np.mean(np.log(1 - _sig(f)))),
        "nonsaturating": (bce_d, -np.mean(np.log(_sig(f)))),
        "lsgan": (0.5 * np.mean((r - 1) ** 2) + 0.5 * np.mean((f + 1) ** 2), 0.5 * np.mean(f**2)),
        "wgan": (np.mean(f) - np.mean(r), -np.mean(f)),
        "wgan_gp": (np.mean(f) - np.mean(r), -np.mean(f)),
        "hinge": (np.mean(np.maximum(0, 1 - r)) + np.mean(np.maximum(0, 1 + f)), -np.mean(f)),
    }[objective]


@pytest.mark.parametrize("objective", OBJECTIVES)
def test_losses_match_hand_computation(objective):
    d_loss, g_loss = get_losses(objective, lsgan_abc=(-1.0, 1.0, 0.0))
    want_d, want_g = _hand(objective)
    assert float(d_loss(jnp.asarray(REAL), jnp.asarray(FAKE))) == pytest.approx(want_d, rel=1e-5)
    assert float(g_loss(jnp.asarray(FAKE))) == pytest.approx(want_g, rel=1e-5)


def test_one_sided_label_smoothing_and_weights():
    d_loss, _ = get_losses("nonsaturating", label_smoothing=0.1)
    r, f = REAL, FAKE
    want = (-np.mean(0.9 * np.log(_sig(r)) + 0.1 * np.log(1 - _sig(r)))
            - np.mean(np.log(1 - _sig(f))))  # fake targets stay exactly 0
    assert float(d_loss(jnp.asarray(r), jnp.asarray(f))) == pytest.approx(want, rel=1e-5)
    # Per-example weights select examples (used by CycleGAN's domain masks).
    w = jnp.array([1.0, 0.0, 1.0, 0.0])
    want_w = (-np.mean(0.9 * np.log(_sig(r[::2])) + 0.1 * np.log(1 - _sig(r[::2])))
              - np.mean(np.log(1 - _sig(f[::2]))))
    assert float(d_loss(jnp.asarray(r), jnp.asarray(f), w, w)) == pytest.approx(want_w, rel=1e-5)


def test_bad_objective_options_raise_config_error():
    with pytest.raises(ConfigError, match="known: minimax, nonsaturating, lsgan, wgan, wgan_gp, hinge"):
        get_losses("fgan")
    with pytest.raises(ConfigError, match="label smoothing"):
        get_losses("wgan", label_smoothing=0.1)


def test_gradient_penalty_zero_for_unit_slope_linear_critic_and_positive_otherwise():
    rng = np.random.default_rng(0)
    real = jnp.asarray(rng.normal(size=(16, 3)), jnp.float32)
    fake = jnp.asarray(rng.normal(size=(16, 3)), jnp.float32)
    w = rng.normal(size=3)
    w = jnp.asarray(w / np.linalg.norm(w), jnp.float32)
    key = jax.random.key(3)

    @jax.jit
    def penalties():
        return (gradient_penalty(lambda x: x @ w + 0.7, real, fake, key),
                gradient_penalty(lambda x: x @ (2 * w), real, fake, key),
                gradient_penalty(lambda x: 0.5 * jnp.sum(x**2, -1), real, fake, key))

    unit, slope2, quadratic = (float(p) for p in penalties())
    assert unit == pytest.approx(0.0, abs=1e-6)
    # Slope 2: every gradient norm is 2, so the penalty is (2 - 1)^2 = 1.
    assert slope2 == pytest.approx(1.0, rel=1e-5)
    # D(x) = |x|^2 / 2 has gradient x_hat: the penalty is mean((|x_hat| - 1)^2) on the
    # interpolates x_hat = eps real + (1 - eps) fake, eps drawn from the same key.
    eps = np.asarray(jax.random.uniform(key, (16, 1)))
    x_hat = eps * np.asarray(real) + (1 - eps) * np.asarray(fake)
    want = np.mean((np.linalg.norm(x_hat, axis=1) - 1) ** 2)
    assert quadratic == pytest.approx(want, rel=1e-4) and quadratic > 0.01


def test_power_iteration_and_spectral_norm_layers_match_svd():
    rng = np.random.default_rng(1)
    mats = [jnp.asarray(rng.normal(size=shape), jnp.float32) for shape in [(6, 4), (3 * 3 * 2, 5)]]
    u0s = [jnp.asarray(rng.normal(size=m.shape[1]), jnp.float32) for m in mats]
    layers = [(SNDense(5), jnp.ones((2, 7))), (SNConv(4, (3, 3), (2, 2)), jnp.ones((2, 4, 4, 3)))]

    @jax.jit
    def run():
        iters = [(power_iteration(m, u, 1)[0], power_iteration(m, u, 200)[0])
                 for m, u in zip(mats, u0s, strict=True)]
        layer_out = []
        for layer, inp in layers:
            variables = layer.init(jax.random.key(0), inp)

            def step(v, _, layer=layer, inp=inp):
                _, new = layer.apply(v, inp, update=True, mutable=["spectral"])
                return {**v, **new}, None

            variables, _ = jax.lax.scan(step, variables, None, length=100)
            _, same = layer.apply(variables, inp, update=False, mutable=["spectral"])
            layer_out.append((variables, same["spectral"]["u"]))
        return iters, layer_out

    iters, layer_out = run()
    for m, (sigma1, sigma) in zip(mats, iters, strict=True):
        top = float(jnp.linalg.svd(m, compute_uv=False)[0])
        assert float(sigma) == pytest.approx(top, rel=1e-4)
        assert float(sigma1) <= top + 1e-4  # a Rayleigh-type estimate never exceeds it
    for variables, u_after in layer_out:
        kernel = np.asarray(variables["params"]["kernel"])
        mat = kernel.reshape(-1, kernel.shape[-1])
        u = variables["spectral"]["u"]
        # After 100 training calls the stored vector gives the top singular value ...
        sigma = float(power_iteration(jnp.asarray(mat), u, 0)[0])
        assert sigma == pytest.approx(float(jnp.linalg.svd(jnp.asarray(mat), compute_uv=False)[0]), rel=1e-4)
        # ... and a call without update leaves it where it was.
        np.testing.assert_array_equal(u_after, u)
