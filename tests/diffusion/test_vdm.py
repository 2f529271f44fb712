"""VDM (Kingma et al., 2021) against independent references: the continuous-time
diffusion loss with the exact denoiser of Gaussian data (closed form, the same for any
schedule with the same endpoints), the whole bound with the exact denoiser of
17-level data (the data's true NLL), the learned schedule's monotonicity and endpoints,
antithetic times, the prior and reconstruction terms by hand, the variance-minimising
schedule gradient (against autodiff of E[L²]), ancestral sampling of the exact model
(the level distribution), a short "it learns" run on digits, and the non-leaking
augmentation option (the shift against its label, off = the old loss, never at evaluation)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from conftest import CONFIGS
from scipy import special, stats

from gen_jax import load_config, registry
from gen_jax.data import DataInfo, load_split
from gen_jax.diffusion import vdm
from gen_jax.errors import ConfigError
from gen_jax.state import TrainState

TINY = {"model.arch": "mlp", "model.hidden": 16, "model.depth": 1, "model.schedule_features": 16,
        "model.dropout": 0.0, "data.batch_size": 64, "sampler.num_steps": 100,
        "model.gamma_0": -10.0, "model.gamma_1": 6.0, "model.augment_prob": 0.0}
INFO = DataInfo("digits", "image", (8, 8, 1), 17, 10)
LEVELS = np.linspace(-1.0, 1.0, 17)
# A 17-level distribution of each pixel: a discretized Gaussian, its pixels independent.
P = special.softmax(-0.5 * (LEVELS - 0.2) ** 2 / 0.4**2)


def build(**overrides):
    cfg = load_config(CONFIGS / "vdm_digits.py", **{**TINY, **overrides})
    return registry.build(cfg, INFO)


def random_schedule(key):
    """Schedule parameters drawn at random, any signs, the sigmoid layer dominating the
    linear term (so that a signed layer would bend the schedule down)."""
    p = vdm.init_schedule(jax.random.key(0), -9.0, 7.0, 32)
    scales = {"w1": 0.3, "w2": 5.0, "b2": 5.0, "w3": 10.0}
    keys = dict(zip(scales, jax.random.split(key, len(scales)), strict=True))
    return {**p, **{k: sc * jax.random.normal(keys[k], jnp.shape(p[k])) for k, sc in scales.items()}}


def exact_discrete_eps(z, g, p=P):
    """ε̂*(z; γ) = (z - α E[x | z]) / σ for pixels i.i.d. over LEVELS with probabilities p."""
    a, s = vdm.alpha_sigma(g)
    a, s = a.reshape(-1, *(1,) * (z.ndim - 1)), s.reshape(-1, *(1,) * (z.ndim - 1))
    logw = jnp.log(jnp.asarray(p)) - 0.5 * (z[..., None] - a[..., None] * LEVELS) ** 2 / s[..., None] ** 2
    x_hat = jnp.sum(jax.nn.softmax(logw, axis=-1) * LEVELS, axis=-1)
    return (z - a * x_hat) / s


def draw_levels(n, seed):
    return np.random.default_rng(seed).choice(17, size=(n, 8, 8, 1), p=P)


def test_schedule_is_monotone_with_exact_endpoints_for_random_parameters():
    """γ(t) strictly increases on a fine grid, γ(0) = γ_0, γ(1) = γ_1, and γ'(t) > 0
    matches finite differences, for random (any-sign) parameters and the linear kind."""
    t = jnp.linspace(0.0, 1.0, 2001)
    gamma = jax.jit(lambda p: (*vdm.gamma(p, t), *vdm.endpoints(p)))
    for i in range(4):
        g, dg, g0, g1 = gamma(random_schedule(jax.random.key(i)))
        assert np.all(np.diff(np.asarray(g)) > 0) and np.all(np.asarray(dg) > 0)
        np.testing.assert_allclose([g[0], g[-1]], [g0, g1], atol=1e-4)
        np.testing.assert_allclose(np.gradient(np.asarray(g, np.float64), 1 / 2000)[1:-1],
                                   np.asarray(dg)[1:-1], rtol=2e-2, atol=1e-2)
    assert float(jnp.std(gamma(random_schedule(jax.random.key(9)))[1])) > 0.5  # not linear
    lin = vdm.init_schedule(jax.random.key(0), -9.0, 7.0, 0, kind="linear")
    np.testing.assert_allclose(vdm.gamma(lin, t)[0], -9.0 + 16.0 * t, atol=1e-5)
    np.testing.assert_allclose(vdm.gamma(lin, t)[1], 16.0, rtol=1e-6)


def test_diffusion_loss_with_exact_denoiser_is_its_closed_form(seed=0):
    """x ~ N(μ, s²): with the exact ε̂, E[½ γ'(t) (ε - ε̂)²] = ½ ∫ mmse_x(v) dv over the
    SNR v = e^{-γ} from v_1 to v_0 = ½ log((1 + v_0 s²) / (1 + v_1 s²)), whatever the
    schedule's shape between its endpoints."""
    mu, s, n = 0.3, 0.5, 50_000
    p = random_schedule(jax.random.key(10 + seed))
    k_x, k_e, k_t = jax.random.split(jax.random.key(seed), 3)
    x = mu + s * jax.random.normal(k_x, (n, 1))
    eps = jax.random.normal(k_e, (n, 1))
    t = vdm.antithetic_times(k_t, n)
    g, dg = vdm.gamma(p, t)
    a, sg = (u[:, None] for u in vdm.alpha_sigma(g))
    z = a * x + sg * eps
    x_hat = mu + a * s**2 / (a**2 * s**2 + sg**2) * (z - a * mu)
    loss = vdm.diffusion_loss(eps, (z - a * x_hat) / sg, dg)
    g0, g1 = (float(e) for e in vdm.endpoints(p))
    exact = 0.5 * np.log((1 + np.exp(-g0) * s**2) / (1 + np.exp(-g1) * s**2))
    se = float(jnp.std(loss)) / np.sqrt(n)
    assert abs(float(loss.mean()) - exact) < 4 * se + 1e-3, (float(loss.mean()), exact, se)


def test_antithetic_times_are_uniform_and_stratified(exact_method):
    """Each batch hits every stratum [j/B, (j+1)/B) once, in steps of exactly 1/B; pooled
    over keys (and for one position) the times are U[0, 1); the Method draws its times so."""
    b = 8
    t = np.asarray(jax.vmap(lambda k: vdm.antithetic_times(k, b))(jax.random.split(jax.random.key(0), 1000)))
    assert np.all((t >= 0) & (t < 1))
    np.testing.assert_array_equal(np.sort(np.floor(t * b), axis=1), np.tile(np.arange(b), (1000, 1)))
    np.testing.assert_allclose(np.mod(np.diff(t, axis=1), 1.0), 1.0 / b, atol=1e-6)
    assert stats.kstest(t.ravel(), "uniform").pvalue > 1e-3
    assert stats.kstest(t[:, 3], "uniform").pvalue > 1e-3
    x = jnp.asarray(LEVELS[draw_levels(64, 0)], jnp.float32)
    method, state = exact_method
    for i in range(3):
        tt = np.asarray(jax.jit(method.terms)(state.params, x, jax.random.key(i))["t"])
        np.testing.assert_array_equal(np.sort(np.floor(tt * 64)), np.arange(64))
    # log_prob's K draws per example are stratified too: the times seen by the network
    # (γ_t inverted on a fine grid) hit each [j/K, (j+1)/K) once per example.
    seen = []

    def spy(params, z, g, rng=None):
        jax.debug.callback(lambda g: seen.append(np.asarray(g)), g)
        return exact_discrete_eps(z, g)

    exact, method.eps_hat = method.eps_hat, spy
    try:
        jax.jit(lambda x: method.log_prob_terms(state.params, x, jax.random.key(7), 8))(x[:6])
    finally:
        method.eps_hat = exact
    grid = np.linspace(0.0, 1.0, 20001)
    g_grid = np.asarray(jax.jit(vdm.gamma)(state.params["schedule"], jnp.asarray(grid))[0])
    t_seen = np.interp(np.stack(seen, axis=1), g_grid, grid)  # (6, K)
    np.testing.assert_array_equal(np.sort(np.floor(t_seen * 8), axis=1), np.tile(np.arange(8), (6, 1)))


def test_prior_and_reconstruction_terms_by_hand():
    """The prior KL and the decoder's NLL against numpy: ½ Σ (α_1² x² + σ_1² - log σ_1² - 1)
    and -log softmax_k(-(z_0/α_0 - x_k)² / (2 e^{γ_0})) at the true level."""
    rng = np.random.default_rng(0)
    k = draw_levels(5, 1)
    x = LEVELS[k]
    eps0 = rng.normal(size=x.shape)
    g0, g1 = -3.0, 2.5  # a coarse decoder, so that every level has mass
    a1sq, s1sq = 1 / (1 + np.exp(g1)), 1 / (1 + np.exp(-g1))
    prior = 0.5 * (a1sq * x**2 + s1sq - np.log(s1sq) - 1).reshape(5, -1).sum(1)
    zs = x + np.exp(g0 / 2) * eps0
    logits = -0.5 * (zs[..., None] - LEVELS) ** 2 / np.exp(g0)
    lp = logits - special.logsumexp(logits, axis=-1, keepdims=True)
    recon = -np.take_along_axis(lp, k[..., None], -1).reshape(5, -1).sum(1)
    np.testing.assert_allclose(vdm.prior_kl(jnp.asarray(x, jnp.float32), jnp.float32(g1)), prior, rtol=1e-5)
    got = vdm.reconstruction_nll(jnp.asarray(k), jnp.asarray(eps0, jnp.float32), jnp.float32(g0),
                                 jnp.asarray(LEVELS, jnp.float32))
    np.testing.assert_allclose(got, recon, rtol=1e-4)


def test_fourier_features_have_the_level_periods():
    """sin/cos(2^n π z) for n = 3, 4 (the config's): periods of 2 and 1 level spacings (1/4, 1/8)."""
    z = jnp.asarray([[0.1], [0.1 + 0.25]], jnp.float32)
    ff = np.asarray(vdm.fourier_features(z, (3, 4)))
    w = np.pi * np.array([8.0, 16.0]) * 0.1
    np.testing.assert_allclose(ff[0], np.concatenate([np.sin(w), np.cos(w)]), atol=1e-5)
    np.testing.assert_allclose(ff[1], ff[0], atol=1e-4)
    assert vdm.fourier_features(z, ()).shape == (2, 0)


@pytest.fixture(scope="module")
def exact_method():
    """The Method with its network replaced by the exact ε̂ of i.i.d. 17-level pixels
    (its state holds the schedule alone: no network to initialise)."""
    method = build()
    sched = vdm.init_schedule(jax.random.key(0), -10.0, 6.0, 16)
    state = TrainState.create({"net": {}, "schedule": sched}, method.tx)
    method.eps_hat = lambda params, z, g, rng=None: exact_discrete_eps(z, g)
    return method, state


def test_bound_with_exact_denoiser_is_the_true_discrete_nll(exact_method):
    """With the exact ε̂ the three terms add up to -log P(x) of each discrete image
    (within Monte-Carlo error; the gap KL(q(z|x) || p(z|x)) is ~1e-2 nats here);
    log_prob and eval_step report the same bound (bits/dim through likelihood)."""
    method, state = exact_method
    k = draw_levels(128, 2)
    x = jnp.asarray(LEVELS[k], jnp.float32)
    nll = -np.log(P)[k].reshape(128, -1).sum(1)

    @jax.jit
    def run(x):
        return (method.log_prob_terms(state.params, x, jax.random.key(3), 32),
                method.eval_step(state, {"x": x}, jax.random.key(4)))

    terms, metrics = run(x)
    bound = np.asarray(sum(terms.values()))
    diff = bound - nll
    se = diff.std() / np.sqrt(len(diff))
    assert abs(diff.mean()) < 4 * se + 0.05, (diff.mean(), se)
    assert float(terms["prior"].mean()) < 0.1 and float(terms["recon"].mean()) < 0.05
    np.testing.assert_allclose(metrics["bpd"], nll.mean() / (64 * np.log(2)), rtol=0.06)  # one draw
    np.testing.assert_allclose(metrics["bpd"], metrics["prior_bpd"] + metrics["recon_bpd"]
                               + metrics["diffusion_bpd"], rtol=1e-5)
    # log_prob (-bound) of a slightly wrong denoiser, with the same draws, is lower by
    # far more than the tolerance.
    method.eps_hat = lambda params, z, g, rng=None: 0.9 * exact_discrete_eps(z, g)
    try:
        lp = jax.jit(lambda x, r: method.log_prob(state, x, r, num_samples=32))(x, jax.random.key(3))
    finally:
        method.eps_hat = lambda params, z, g, rng=None: exact_discrete_eps(z, g)
    worse = -np.asarray(lp) - bound
    assert worse.mean() > 1.0 and worse.mean() > 5 * worse.std() / np.sqrt(len(worse)), worse.mean()


def test_ancestral_sampling_of_the_exact_model_draws_the_levels(exact_method):
    """Method.sample with the exact ε̂ (T = 400 steps): each pixel's level distribution is
    P (total variation, mean, variance) and neighbouring pixels are uncorrelated."""
    method, state = exact_method
    x = np.asarray(jax.jit(lambda r: method.sample(state, r, 150, num_steps=400))(jax.random.key(5)))
    k = np.rint((x + 1) * 8).astype(int).ravel()
    np.testing.assert_allclose(x, LEVELS[k].reshape(x.shape), atol=1e-6)
    freq = np.bincount(k, minlength=17) / k.size
    assert 0.5 * np.abs(freq - P).sum() < 0.02
    mean, var = (LEVELS * P).sum(), (LEVELS**2 * P).sum() - (LEVELS * P).sum() ** 2
    # (Ancestral sampling of sharp discrete data under-disperses at small T, by 24% at
    # T = 25, 7% at T = 100 and 2% at T = 400 with this exact model.)
    assert abs(x.mean() - mean) < 0.015 and abs(x.var() / var - 1) < 0.05
    flat = x.reshape(150, -1)
    assert abs(np.corrcoef(flat[:, 10], flat[:, 11])[0, 1]) < 0.15


def test_variance_minimising_schedule_gradient():
    """model.var_min: the network and the endpoints get the bound's gradient, the
    schedule's shape that of mean(L_diff²), at the same loss value. Reference: autodiff
    of mean(bound) in (network, endpoints) plus mean(L_diff²) in the shape, each with
    the other parameters held fixed, through the plain schedule (train=False)."""
    x = jnp.asarray(LEVELS[draw_levels(64, 4)], jnp.float32)
    method = build()  # TINY has no dropout: train=False differs only in the schedule's gradient
    state = jax.jit(method.init)(jax.random.key(0), {"x": x})
    rng = jax.random.key(6)
    d = 64 * np.log(2)
    sg = jax.lax.stop_gradient

    def reference(params):
        sched = params["schedule"]
        shape = {k: v for k, v in sched.items() if k not in vdm.ENDPOINTS}
        fixed_shape = {**params, "schedule": {**sched, **sg(shape)}}
        tm = method.terms(fixed_shape, x, rng)
        bound = (tm["prior"] + tm["recon"] + tm["diffusion"]) / d
        only_shape = {"net": sg(params["net"]), "schedule": {**sg(sched), **shape}}
        diff = method.terms(only_shape, x, rng)["diffusion"] / d
        return jnp.mean(bound) + jnp.mean(diff**2) - sg(jnp.mean(diff**2)), jnp.mean(bound)

    @jax.jit
    def grads(params):
        return (jax.value_and_grad(lambda p: method.loss_fn(p, None, {"x": x}, rng, True)[0])(params),
                jax.value_and_grad(reference, has_aux=True)(params))

    (lv, gv), ((_, lr), gr) = grads(state.params)
    np.testing.assert_allclose(lv, lr, rtol=1e-6)
    for key in state.params["schedule"]:
        scale = float(np.abs(gr["schedule"][key]).max())
        assert scale > 0, key
        np.testing.assert_allclose(gv["schedule"][key], gr["schedule"][key], rtol=1e-3, atol=1e-3 * scale)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-6), gv["net"], gr["net"])


def test_vdm_learns_digits_and_checks_its_config():
    """100 steps of a small MLP on digits: the validation bound falls by over 2 bits/dim
    from the untrained network's (ε̂ = 0: ½ (γ_1 - γ_0) per dimension, 11.5 bits/dim);
    bad configs fail when built. (An MLP is far from the UNet's bound: see
    experiments/vdm_digits.py.)"""
    cfg = load_config(CONFIGS / "vdm_digits.py", **{**TINY, "optim.warmup_steps": 0, "train.ema_decay": 0.0,
                                                    "optim.learning_rate": 3e-3})
    method = registry.build(cfg, INFO)
    x = jnp.asarray(load_split(cfg, "train")[0][:1024])  # 16 batches of 64
    val = jnp.asarray(load_split(cfg, "val")[0][:128])
    state = jax.jit(method.init)(jax.random.key(0), {"x": x[:64]})

    @jax.jit
    def train_and_eval(state):
        def body(s, i):
            batch = {"x": jax.lax.dynamic_slice_in_dim(x, (i % 16) * 64, 64)}
            return method.train_step(s, batch, jax.random.fold_in(jax.random.key(1), i))[0], None
        before = method.eval_step(state, {"x": val}, jax.random.key(2))["bpd"]
        state = jax.lax.scan(body, state, jnp.arange(100))[0]
        return before, method.eval_step(state, {"x": val}, jax.random.key(2))
    before, after = train_and_eval(state)
    assert float(after["bpd"]) < float(before) - 2.0, (before, after)
    with pytest.raises(ConfigError, match="dequantize='none'"):
        registry.build(load_config(CONFIGS / "vdm_digits.py", **{"data.dequantize": "uniform"}), INFO)
    with pytest.raises(ConfigError, match="gamma_1"):
        build(**{"model.gamma_1": -20.0})
    with pytest.raises(ConfigError, match="discrete images"):
        registry.build(load_config(CONFIGS / "vdm_digits.py", **TINY),
                       DataInfo("moons", "vector", (2,), None, None))


# -- non-leaking augmentation (model.augment_prob) ---------------------------------


def _np_shift(img, dy, dx, fill):
    """numpy reference of a translation: the pixel at (i, j) moves to (i + dy, j + dx)."""
    out = np.full_like(img, fill)
    h, w = img.shape[:2]
    out[max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = img[max(-dy, 0):h - max(dy, 0),
                                                                     max(-dx, 0):w - max(dx, 0)]
    return out


def test_translate_moves_pixels_as_its_label_says():
    """SHIFTS: index 0 is none, the 8 others the one-pixel translations; a lone pixel at
    (3, 4) lands at (3 + dy, 4 + dx), the vacated border is filled, and random images
    match a numpy shift; draw_augmentations gives 0 w.p. 1 - p, else 1..8 uniformly."""
    assert vdm.SHIFTS[0] == (0, 0) and sorted(vdm.SHIFTS[1:]) == sorted(
        (dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy, dx) != (0, 0))
    n = len(vdm.SHIFTS)
    dot = np.zeros((n, 8, 8, 1), np.int32)
    dot[:, 3, 4, 0] = 5
    out = np.asarray(vdm.translate(jnp.asarray(dot), jnp.arange(n), 0))
    for i, (dy, dx) in enumerate(vdm.SHIFTS):
        np.testing.assert_array_equal(np.argwhere(out[i, ..., 0]), [[3 + dy, 4 + dx]])
    imgs = np.random.default_rng(0).integers(1, 17, size=(n, 8, 8, 1))
    out = np.asarray(vdm.translate(jnp.asarray(imgs), jnp.arange(n), 0))
    for i, (dy, dx) in enumerate(vdm.SHIFTS):
        np.testing.assert_array_equal(out[i], _np_shift(imgs[i], dy, dx, 0))
    k = np.asarray(vdm.draw_augmentations(jax.random.key(0), 20_000, 0.3))
    assert abs((k == 0).mean() - 0.7) < 0.015
    counts = np.bincount(k, minlength=n)[1:]
    assert counts.min() > 0.8 * counts.mean()
    assert np.all(np.asarray(vdm.draw_augmentations(jax.random.key(1), 500, 0.0)) == 0)
    assert np.all(np.asarray(vdm.draw_augmentations(jax.random.key(1), 500, 1.0)) > 0)


def test_augment_prob_zero_is_the_old_loss_draw_for_draw():
    """augment_prob = 0 (off; and a config.json without the key): no label
    embedding in the network (old checkpoints restore) and the training loss equals the
    bound computed by hand from the rng's four draws, as before the option existed."""
    x = jnp.asarray(LEVELS[draw_levels(64, 7)], jnp.float32)
    method = build(**{"model.dropout": 0.3})
    assert method.config.model.augment_prob == 0.0
    assert load_config(CONFIGS / "vdm_digits.py").model.augment_prob == 0.5  # the default is on
    state = jax.jit(method.init)(jax.random.key(0), {"x": x})
    assert "Embed_0" not in state.params["net"]["net"]
    rng = jax.random.key(3)

    def reference(params):
        r_t, r_eps, r_eps0, r_drop = jax.random.split(rng, 4)
        sched = params["schedule"]
        g0, g1 = vdm.endpoints(sched)
        k = jnp.asarray(np.rint((np.asarray(x) + 1) * 8), jnp.int32)
        levels = jnp.asarray(LEVELS, jnp.float32)
        recon = vdm.reconstruction_nll(k, jax.random.normal(r_eps0, x.shape), g0, levels)
        prior = vdm.prior_kl(x, g1)
        g, dg = vdm.gamma(sched, vdm.antithetic_times(r_t, 64))
        a, s = vdm.alpha_sigma(g)
        eps = jax.random.normal(r_eps, x.shape)
        z = a[:, None, None, None] * x + s[:, None, None, None] * eps
        cond = (g - (-10.0)) / (6.0 - (-10.0))
        eps_hat = method.net.apply({"params": params["net"]}, z.reshape(64, -1), cond,
                                   rngs={"dropout": r_drop}, train=True).reshape(x.shape)
        return jnp.mean(prior + recon + vdm.diffusion_loss(eps, eps_hat, dg)) / (64 * np.log(2))

    params = jax.tree.map(lambda p: p + 0.05 * jax.random.normal(jax.random.key(5), p.shape), state.params)
    got = jax.jit(lambda p: method.loss_fn(p, None, {"x": x}, rng, True)[0])(params)
    np.testing.assert_allclose(got, jax.jit(reference)(params), rtol=1e-6)
    # an old run's config.json (no augment_prob) builds the same Method
    cfg = method.config.to_dict()
    del cfg["model"]["augment_prob"]
    old = registry.build(ml_collections.ConfigDict(cfg), INFO)
    assert old.augment_prob == 0.0
    np.testing.assert_allclose(jax.jit(lambda p: old.loss_fn(p, None, {"x": x}, rng, True)[0])(params), got,
                               rtol=1e-6)
    for bad in (-0.1, 1.5, "half", True, None):
        cfg["model"]["augment_prob"] = bad
        with pytest.raises(ConfigError, match=r"model.augment_prob must be a number in \[0, 1\]"):
            registry.build(ml_collections.ConfigDict(cfg), INFO)


def test_augmentation_feeds_the_network_the_shifted_image_with_its_label():
    """augment_prob = 1 on a one-image data set x0: the network (a spy, the exact ε̂ of the
    delta at x0 shifted by its label, shifted in numpy) drives the diffusion loss to ~0 only
    if the image it is given is x0 moved as its label says; every label is a translation
    (1..8, all of them in a batch of 64); the prior term is that of the shifted image.
    Evaluation (eval_step, log_prob, sample) never augments: label 0 (none), and x0 as it is."""
    method = build(**{"model.augment_prob": 1.0})
    x0 = LEVELS[np.random.default_rng(3).integers(1, 17, size=(8, 8, 1))]
    shifted = jnp.asarray(np.stack([_np_shift(x0, dy, dx, -1.0) for dy, dx in vdm.SHIFTS]), jnp.float32)
    seen = []

    def spy(params, z, g, rng=None, aug=None):
        lab = jnp.zeros(z.shape[0], jnp.int32) if aug is None else aug
        jax.debug.callback(lambda a: seen.append(np.asarray(a)), lab)
        a, s = vdm.alpha_sigma(g)
        return (z - a[:, None, None, None] * shifted[lab]) / s[:, None, None, None]

    method.eps_hat = spy
    sched = vdm.init_schedule(jax.random.key(0), -10.0, 6.0, 16)
    state = TrainState.create({"net": {}, "schedule": sched}, method.tx)
    x = jnp.asarray(np.repeat(x0[None], 64, 0), jnp.float32)
    tm = jax.jit(lambda x: method.terms(state.params, x, jax.random.key(1), train=True))(x)
    lab = np.asarray(tm["aug"])
    np.testing.assert_array_equal(seen.pop(), lab)
    assert set(lab.tolist()) == set(range(1, len(vdm.SHIFTS)))
    assert float(jnp.abs(tm["diffusion"]).max()) < 1e-3, tm["diffusion"]
    g1 = vdm.endpoints(sched)[1]
    np.testing.assert_allclose(tm["prior"], vdm.prior_kl(shifted[lab], g1), rtol=1e-4)
    assert float(jnp.abs(tm["prior"] - vdm.prior_kl(x, g1)).max()) > 1e-4  # the images did move
    # evaluation: no augmentation, label 0
    metrics = jax.jit(method.eval_step)(state, {"x": x}, jax.random.key(2))
    assert float(metrics["diffusion_bpd"]) < 1e-5 and np.all(seen.pop() == 0)
    terms = jax.jit(lambda x: method.log_prob_terms(state.params, x, jax.random.key(3), 4))(x[:8])
    assert float(jnp.abs(terms["diffusion"]).max()) < 1e-3
    assert len(seen) == 4 and all(np.all(s == 0) for s in seen)  # one call per draw
    seen.clear()
    jax.jit(lambda r: method.sample(state, r, 4, num_steps=3))(jax.random.key(4))
    assert len(seen) == 3 and all(np.all(s == 0) for s in seen)


def test_augmented_network_reads_its_label_and_defaults_to_none():
    """With augment_prob > 0 the real network has a 9-way label embedding (+ the UNet's
    unused null row): ε̂ without a label is ε̂ with label 0, and another label changes it."""
    method = build(**{"model.augment_prob": 0.5})
    x = jnp.asarray(LEVELS[draw_levels(8, 9)], jnp.float32)
    state = jax.jit(method.init)(jax.random.key(0), {"x": x})
    assert state.params["net"]["net"]["Embed_0"]["embedding"].shape[0] == len(vdm.SHIFTS) + 1
    params = jax.tree.map(lambda p: p + 0.1 * jax.random.normal(jax.random.key(5), p.shape), state.params)
    g = jnp.linspace(-9.0, 5.0, 8)
    none = method.eps_hat(params, x, g)
    np.testing.assert_array_equal(none, method.eps_hat(params, x, g, aug=jnp.zeros(8, jnp.int32)))
    assert float(jnp.abs(none - method.eps_hat(params, x, g, aug=jnp.full(8, 3))).max()) > 1e-3
