"""StyleGAN2: modulated/demodulated convolution against numpy (demodulated kernels of unit
fan-in norm); R1 against the Jacobian of D by forward mode; the path-length penalty against
its definition with J_w^T y from forward-mode Jacobians; DiffAugment against numpy; style
mixing's crossover by hand; truncation at psi = 0 gives the image of the tracked mean w;
and, on one tiny run of configs/stylegan2_faces.py:smoke through the runtime: the lazy terms
only on every k-th step, scaled by k, each its own optimizer update; the G EMA by its
formula; the second step's logged D and G losses recomputed by hand (reals and fakes both
augmented, documented keys, noise maps)."""

from __future__ import annotations

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import CONFIGS

from gen_jax import load_config, registry, train
from gen_jax.checkpoint import Checkpointer
from gen_jax.data import make_train_iterator
from gen_jax.errors import ConfigError
from gen_jax.gans import stylegan2 as sg
from gen_jax.gans.diffaugment import diff_augment

CONFIG = CONFIGS / "stylegan2_faces.py"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """configs/stylegan2_faces.py:smoke trained through the runtime (3 steps; both lazy terms
    every 2 steps: at steps 0 and 2; a checkpoint after each step), its states after steps
    0 (the runtime's own init: its program comes from the compilation cache), 1, 2 and 3, its
    logged rows, the first two batches and the second step's key."""
    cfg = load_config(f"{CONFIG}:smoke")
    workdir = tmp_path_factory.mktemp("stylegan2")
    final = jax.device_get(train.train_and_evaluate(cfg, workdir))
    r = train.setup(cfg, workdir)
    it = make_train_iterator(cfg, cfg.seed)
    example, second = next(it), next(it)
    ckpt = Checkpointer(workdir, keep=0, async_save=False, create=False)
    states = {s: jax.device_get(ckpt.restore(final, None, s)[0]) for s in (1, 2)}
    ckpt.close()
    states |= {0: jax.device_get(train._init_state(r, example)), 3: final}
    rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    return {"cfg": cfg, "state": final, "states": states, "method": r.method, "workdir": workdir,
            "rows": {row["step"]: row for row in rows if row["split"] == "train"},
            "val": [row for row in rows if row["split"] == "val"],
            "x0": jnp.asarray(example["x"]), "x1": jnp.asarray(second["x"]),
            "key1": jax.random.fold_in(r.keys["train"], 1)}


# -- the paper's pieces by hand ---------------------------------------------------------


def _conv_same(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """A stride-1 SAME convolution of one image (H, W, Ci) with (k, k, Ci, Co), by its sum."""
    k = w.shape[0]
    p = np.pad(x, ((k // 2, k // 2), (k // 2, k // 2), (0, 0)))
    return sum(np.einsum("hwc,co->hwo", p[i:i + x.shape[0], j:j + x.shape[1]], w[i, j])
               for i in range(k) for j in range(k))


def test_modulated_conv_by_numpy_and_demodulated_kernels_have_unit_fan_in_norm():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 4, 5, 3)).astype(np.float32)
    w = rng.normal(size=(3, 3, 3, 4)).astype(np.float32)
    s = rng.normal(size=(2, 3)).astype(np.float32)

    @jax.jit
    def f(x, w, s):
        return (sg.modulated_conv(x, w, s), sg.modulated_conv(x, w, s, demodulate=False),
                sg.modulated_weights(w, s), sg.modulated_conv(x, w, 3.0 * s))

    demod, mod, kernels, scaled = map(np.asarray, f(x, w, s))
    for n in range(2):
        wn = w * s[n][None, None, :, None]                                   # Eq. 1
        np.testing.assert_allclose(mod[n], _conv_same(x[n], wn), rtol=1e-4, atol=1e-4)
        wd = wn / np.sqrt((wn ** 2).sum((0, 1, 2)) + 1e-8)                    # Eq. 3
        np.testing.assert_allclose(demod[n], _conv_same(x[n], wd), rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(kernels[n], wd, rtol=1e-5, atol=1e-6)
    # Each sample's kernel of each output channel has unit norm over its fan-in (k, k, C_in).
    np.testing.assert_allclose(np.sqrt((kernels ** 2).sum((1, 2, 3))), 1.0, rtol=1e-5)
    np.testing.assert_allclose(scaled, demod, rtol=1e-4, atol=1e-5)  # the style's scale cancels
    assert np.abs(mod - demod).max() > 0.1
    # The skip generator's 2x upsampling: 3/4 the nearest pixel, 1/4 the next one, edges clamped.
    up = np.asarray(jax.jit(sg.upsample_bilinear2)(x))
    xp = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="edge")

    def taps(i):  # (nearest, next) rows of the edge-padded input, weights 3/4 and 1/4
        return (i // 2 + 1, i // 2 + (2 if i % 2 else 0))

    for i in range(8):
        for j in range(10):
            want = sum(wi * wj * xp[:, a, b] for wi, a in zip((0.75, 0.25), taps(i), strict=True)
                       for wj, b in zip((0.75, 0.25), taps(j), strict=True))
            np.testing.assert_allclose(up[:, i, j], want, rtol=1e-5, atol=1e-6)


def test_diff_augment_by_numpy_and_differentiable():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(3, 8, 8, 2)).astype(np.float32)
    key = jax.random.key(7)

    @jax.jit
    def f(x):
        aug = {p: diff_augment(x, key, (p,)) for p in ("color", "translation", "cutout")}
        grad = jax.grad(lambda v: jnp.sum(diff_augment(v, key, ("translation", "cutout"))))(x)
        every = diff_augment(x, key, ("color", "translation", "cutout"))
        return aug, every, grad, jax.random.uniform(key, (3, 7))

    aug, every, grad, u = jax.tree.map(np.asarray, f(x))
    v = u[:, :, None, None, None]
    b, sat, con = v[:, 0] - 0.5, 2 * v[:, 1], v[:, 2] + 0.5
    c = x + b
    c = (c - c.mean(3, keepdims=True)) * sat + c.mean(3, keepdims=True)
    c = (c - c.mean((1, 2, 3), keepdims=True)) * con + c.mean((1, 2, 3), keepdims=True)
    np.testing.assert_allclose(aug["color"], c, rtol=1e-5, atol=1e-5)
    shift = np.floor(u[:, 3:5] * 3).astype(int) - 1                        # s = round(8 / 8) = 1
    top, left = np.floor(u[:, 5] * 9).astype(int) - 2, np.floor(u[:, 6] * 9).astype(int) - 2
    mask = np.ones((3, 8, 8, 1), np.float32)
    for n in range(3):
        t = np.zeros_like(x[n])
        for i in range(8):
            for j in range(8):
                si, sj = i + shift[n, 0], j + shift[n, 1]
                if 0 <= si < 8 and 0 <= sj < 8:
                    t[i, j] = x[n, si, sj]
        np.testing.assert_allclose(aug["translation"][n], t, atol=1e-6)
        mask[n, max(top[n], 0):max(top[n] + 4, 0), max(left[n], 0):max(left[n] + 4, 0)] = 0
    np.testing.assert_allclose(aug["cutout"], x * mask, atol=1e-6)
    assert 0 < mask.mean() < 1 and (shift != 0).any()
    assert np.abs(every - aug["color"]).max() > 0.1  # the policy composes
    # d sum(cutout(translate(x))) / dx: 1 where a kept pixel was read from, else 0.
    assert set(np.unique(grad)) <= {0.0, 1.0} and 0 < grad.mean() < 1


def test_r1_penalty_against_the_forward_mode_jacobian_of_d_and_scaled_by_k(run):
    """R1 = E_j ||d sum_i D(x)_i / d x_j||^2 at the augmented reals; with minibatch stddev the
    examples of a group interact, so the column sums of the full Jacobian (jacfwd), not
    the per-example diagonal, are its gradient. The lazy term is r1_every x gamma / 2 x R1."""
    method, d = run["method"], run["state"].d
    s = run["cfg"].stylegan2
    key = jax.random.key(3)

    @jax.jit
    def f(d_params, x):
        loss, m = method.r1_loss(d_params, x, key)
        xa = diff_augment(x, key, ("color", "translation", "cutout"))
        jac = jax.jacfwd(lambda v: method.critic(d_params, v))(xa)             # (N, N, H, W, C)
        return loss, m, jac

    loss, m, jac = jax.tree.map(np.asarray, f(d.params, run["x0"]))
    n = jac.shape[0]
    grads = jac.sum(0).reshape(n, -1)
    r1 = float(np.mean(np.sum(grads.astype(np.float64) ** 2, -1)))
    assert float(m["r1"]) == pytest.approx(r1, rel=1e-4)
    assert float(loss) == pytest.approx(s.r1_every * s.r1_gamma / 2 * r1, rel=1e-4)
    assert s.r1_every > 1
    off = jac.copy()
    off[np.arange(n), np.arange(n)] = 0
    assert np.abs(off).max() > 1e-6  # groups interact: the per-example gradient is not R1's


def test_path_length_penalty_against_its_definition_with_jacobians(run):
    """pl_loss with the documented keys (split into latents, crossover, noise, y): lengths ||J_w^T y||
    (root of the mean over layers of the squared norm), J the Jacobian of each image with
    respect to its per-layer styles (jacfwd), y ~ N(0, I) / sqrt(H W); a' = a + 0.01 (mean
    length - a); penalty mean (length - a')^2; the lazy term pl_every x pl_weight x penalty."""
    method, g = run["method"], run["state"].g
    s = run["cfg"].stylegan2
    key, a, n = jax.random.key(4), 0.3, 4

    @jax.jit
    def f(g_params):
        loss, (m, new_mean) = method.pl_loss(g_params, jnp.float32(a), key, n)
        r_z, r_cut, r_noise, r_y = jax.random.split(key, 4)
        ws, _ = method.training_styles(g_params, r_z, r_cut, n)
        noise = method.noise(r_noise, n)
        y = jax.random.normal(r_y, (n, 8, 8, 1))
        jac = jax.vmap(jax.jacfwd(lambda v, e: method.synthesize(g_params, v[None], e[None])[0]))(ws, noise)
        return loss, m, new_mean, y, jac

    loss, m, new_mean, y, jac = jax.tree.map(np.asarray, f(g.params))
    jty = np.einsum("nhwc,nhwclk->nlk", y.astype(np.float64) / math.sqrt(64), jac)
    lengths = np.sqrt(np.mean(np.sum(jty ** 2, -1), -1))
    mean = a + 0.01 * (lengths.mean() - a)
    assert float(new_mean) == pytest.approx(mean, rel=1e-5)
    assert float(m["pl_length"]) == pytest.approx(lengths.mean(), rel=1e-4)
    assert float(m["pl_penalty"]) == pytest.approx(np.mean((lengths - mean) ** 2), rel=1e-3)
    assert float(loss) == pytest.approx(s.pl_every * s.pl_weight * np.mean((lengths - mean) ** 2), rel=1e-3)
    assert np.ptp(lengths) > 1e-4 and s.pl_every > 1


def test_style_mixing_switches_styles_at_the_crossover_layer(run):
    """training_styles (used for D's fakes, G's loss and the path-length batch): layers below
    the crossover take the first latent's w, the rest the second's; the crossover is drawn
    as documented (uniform in [1, num_ws) with probability 0.9, else no mixing)."""
    method, params = run["method"], run["state"].g.params
    num_ws, keys = method.num_ws, jax.random.split(jax.random.key(5), 300)

    @jax.jit
    def f(params, keys):
        def one(k):
            r_z, r_cut = jax.random.split(k)
            ws, w = method.training_styles(params, r_z, r_cut, 2)
            both = method.map(params, jax.random.normal(r_z, (4, method.config.model.latent_dim)))
            return ws, w, both, jax.random.uniform(r_cut, (2,))
        return jax.vmap(one)(keys)

    ws, w, both, u = map(np.asarray, f(params, keys))
    cut = np.where(u[:, 1] < 0.9, 1 + np.floor(u[:, 0] * (num_ws - 1)), num_ws).astype(int)
    np.testing.assert_allclose(w, both[:, :2], atol=1e-6)
    for i in range(len(keys)):
        np.testing.assert_allclose(ws[i, :, :cut[i]], np.repeat(both[i, :2, None], cut[i], 1), atol=1e-6)
        np.testing.assert_allclose(ws[i, :, cut[i]:], np.repeat(both[i, 2:, None], num_ws - cut[i], 1),
                                   atol=1e-6)
    assert 0.83 < np.mean(cut < num_ws) < 0.97
    assert set(cut) == set(range(1, num_ws + 1))
    assert np.abs(both[:, :2] - both[:, 2:]).max(-1).min() > 1e-3  # the two latents give different w


def test_truncation_at_psi_zero_gives_the_image_of_the_mean_w_and_the_mixing_grid(run):
    """generate at psi = 0, 0.5, 1 against the synthesis of w_avg, of the midpoint, of w (EMA
    weights, the same noise); the style-mixing figure (2 x 2, crossover 2, no noise): image
    (i, j) has layers 0-1 of row source i and layers 2-3 of column source j."""
    method, state = run["method"], run["state"]
    w_avg = jax.random.normal(jax.random.key(6), (method.config.model.w_dim,))
    state = state.replace(w_avg=w_avg)  # the tracked mean, here a known vector
    z = jax.random.normal(jax.random.key(7), (4, method.config.model.latent_dim))
    noise = method.noise(jax.random.key(8), 3)

    @jax.jit
    def f(state, z, noise):
        at = jax.vmap(lambda psi: method.generate(state, z[:3], psi, noise))(jnp.array([0.0, 0.5, 1.0]))
        grid = method.style_mixing_grid(state, z[:2], z[2:], 2)
        ema = state.g.ema_params
        w = method.map(ema, z)
        ws = method.broadcast(jnp.concatenate([jnp.tile(state.w_avg, (3, 1)), 0.5 * (w[:3] + state.w_avg),
                                               w[:3], w[2:], w[:2]]))
        mixed = [jnp.concatenate([ws[11 + i, :2], ws[9 + j, 2:]]) for i in range(2) for j in range(2)]
        ws = jnp.concatenate([ws, jnp.stack(mixed)])   # 9 truncated, 2 + 2 sources, 4 mixes
        noise = jnp.concatenate([jnp.tile(noise, (3, 1)), jnp.zeros((8, noise.shape[1]))])
        return at, grid, jnp.clip(method.synthesize(ema, ws, noise), -1, 1)

    at, grid, by_hand = map(np.asarray, f(state, z, noise))
    np.testing.assert_allclose(at, by_hand[:9].reshape(at.shape), atol=1e-5)  # psi 0: w_avg's image
    assert np.abs(at[2] - at[0]).max() > 1e-3
    cols, rows, mixes = by_hand[9:11], by_hand[11:13], by_hand[13:]
    want = [np.full_like(cols[0], -1.0), *cols, rows[0], *mixes[:2], rows[1], *mixes[2:]]
    np.testing.assert_allclose(grid, np.stack(want), atol=1e-5)
    assert np.abs(mixes[0] - mixes[1]).max() > 1e-3 and np.abs(mixes[0] - mixes[2]).max() > 1e-3


# -- the run ----------------------------------------------------------------------------


def test_a_tiny_run_trains_and_samples(run):
    state, workdir = run["state"], run["workdir"]
    assert int(state.step) == 3 and (workdir / "samples" / "step_000003.png").exists()
    assert [r for r in run["val"] if np.isfinite(r["loss"])] and len(run["rows"]) == 3
    assert np.abs(np.asarray(state.w_avg)).max() > 0  # tracked from G's latents
    strengths = [np.asarray(v) for p, v in jax.tree_util.tree_flatten_with_path(state.g.params)[0]
                 if p[-1].key == "noise_strength"]
    assert len(strengths) == 3 and min(abs(float(v)) for v in strengths) > 0  # noise reached G (init 0)


def test_g_ema_once_per_step_with_its_rampup(run):
    """ema_t = b_t ema_{t-1} + (1 - b_t) params_t, b_t = 0.5^(1 / min(half-life, rampup t))
    (smoke: rampup 1, so b = 0.5, 0.71, 0.79 after steps 1, 2, 3), from the initial copy."""
    st, cfg = run["states"], run["cfg"]
    assert cfg.stylegan2.ema_rampup == 1.0
    for t in (1, 2, 3):
        b = 0.5 ** (1 / t)
        assert float(sg.ema_beta(t, cfg.train.ema_decay, 1.0)) == pytest.approx(b)
        for e0, p1, e1 in zip(*(jax.tree.leaves(x) for x in (st[t - 1].g.ema_params, st[t].g.params,
                                                               st[t].g.ema_params)), strict=True):
            want = b * np.asarray(e0) + (1 - b) * np.asarray(p1)
            np.testing.assert_allclose(e1, want, rtol=1e-5, atol=1e-7)
    assert max(np.abs(np.asarray(e) - p).max() for e, p in zip(
        jax.tree.leaves(st[3].g.ema_params), jax.tree.leaves(st[3].g.params), strict=True)) > 1e-4
    half = math.log(0.5) / math.log(0.999)
    assert float(sg.ema_beta(10 ** 6, 0.999, 0.05)) == pytest.approx(0.999)
    assert float(sg.ema_beta(100, 0.999, 0.05)) == pytest.approx(0.5 ** (1 / min(half, 5.0)))


def test_lazy_regularization_only_every_k_steps_scaled_by_k_in_its_own_update(run):
    """Smoke: r1_every = pl_every = 2, so steps 0 and 2 (rows 1 and 3) regularize, step 1 does
    not; each network made 3 main updates and 2 regularization updates (Adam's count)."""
    rows, s = run["rows"], run["cfg"].stylegan2
    assert (s.r1_every, s.pl_every) == (2, 2)
    for step in (1, 3):
        r = rows[step]
        assert r["r1"] > 0 and r["pl_penalty"] > 0
        assert r["r1_loss"] == pytest.approx(2 * s.r1_gamma / 2 * r["r1"], rel=1e-5)
        assert r["pl_loss"] == pytest.approx(2 * s.pl_weight * r["pl_penalty"], rel=1e-5)
    assert rows[2]["r1"] == rows[2]["r1_loss"] == rows[2]["pl_penalty"] == rows[2]["pl_loss"] == 0
    assert rows[2]["pl_mean"] == rows[1]["pl_mean"] != rows[3]["pl_mean"]  # a moves on PL steps only

    def counts(opt_state):
        return {int(a) for a in jax.tree.leaves(opt_state) if np.asarray(a).dtype == np.int32}

    # Updates after steps 1, 2, 3 (each network: main + lazy at step 0, main, main + lazy).
    for t, n in ((1, 2), (2, 3), (3, 5)):
        st = run["states"][t]
        assert counts(st.d.opt_state) == {n} and counts(st.g.opt_state) == {n}, t
        assert int(st.d.step) == int(st.g.step) == n


def test_adam_of_each_network_is_rescaled_for_its_lazy_interval(run):
    """lr c, b1^c, b2^c with c = k / (k + 1) (smoke: k = 2 for both networks): read back from
    two Adam updates of gradients 1 then 2 (b1 = 0: the update is -lr g / sqrt(v_hat))."""
    cfg, method = run["cfg"], run["method"]
    c = 2 / 3
    lr, b2 = cfg.optim.learning_rate * c, cfg.optim.b2 ** c
    for tx in (method.d_tx, method.g_tx):
        params = {"w": jnp.zeros(1)}
        state = tx.init(params)
        first, state = tx.update({"w": jnp.ones(1)}, state, params)
        second, _ = tx.update({"w": jnp.full(1, 2.0)}, state, params)
        assert float(first["w"][0]) == pytest.approx(-lr, rel=1e-4)
        v_hat = (b2 * (1 - b2) + (1 - b2) * 4.0) / (1 - b2 ** 2)
        assert float(second["w"][0]) == pytest.approx(-lr * 2.0 / math.sqrt(v_hat), rel=1e-4)


def test_second_step_d_and_g_losses_by_hand_augmenting_reals_and_fakes(run):
    """Step 1's logged D and G losses recomputed from the states before and after it (step 1:
    no R1, so D after its update is the state after step 1; the noise strengths have moved
    from 0 in step 0). The step key splits into (D, R1, G, PL); D's and G's each into (fakes,
    augmentation); fakes by hand: the key split into (latents, crossover, noise), the raw G's
    mixed styles and noise maps. D: ONE DiffAugment draw over [reals, fakes], D on each half;
    G: its fakes augmented, scored by the updated D, non-saturating loss."""
    method, st, x = run["method"], run["states"], run["x1"]
    policy = ("color", "translation", "cutout")

    @jax.jit
    def f(g1, d1, d2, x):
        n = x.shape[0]
        r_d, _, r_g, _ = jax.random.split(run["key1"], 4)
        (rf_d, ra_d), (rf_g, ra_g) = jax.random.split(r_d), jax.random.split(r_g)

        def fakes(key):
            r_z, r_cut, r_noise = jax.random.split(key, 3)
            ws, _ = method.training_styles(g1, r_z, r_cut, n)
            return method.synthesize(g1, ws, jax.random.normal(r_noise, (n, method.noise_dim)))

        fake, g_fake = jax.vmap(fakes)(jnp.stack([rf_d, rf_g]))
        aug = diff_augment(jnp.concatenate([x, fake]), ra_d, policy)
        inputs = jnp.stack([aug[:n], aug[n:], fake, diff_augment(g_fake, ra_g, policy), g_fake])
        params = jax.tree.map(lambda a, b: jnp.stack([a, a, a, b, b]), d1, d2)  # D before / after
        return jax.vmap(method.critic)(params, inputs)

    real_out, fake_out, plain, g_out, g_plain = np.asarray(f(st[1].g.params, st[1].d.params,
                                                             st[2].d.params, x))
    row = run["rows"][2]
    assert row["d_real"] == pytest.approx(real_out.mean(), rel=1e-4, abs=1e-6)
    assert row["d_fake"] == pytest.approx(fake_out.mean(), rel=1e-4, abs=1e-6)
    bce = np.mean(np.logaddexp(0, -real_out)) + np.mean(np.logaddexp(0, fake_out))
    assert row["d_loss"] == pytest.approx(bce, rel=1e-5)
    assert row["g_loss"] == pytest.approx(np.mean(np.logaddexp(0, -g_out)), rel=1e-5)
    # Augmenting the fakes changes their scores (the checks above can tell).
    assert abs(plain.mean() - fake_out.mean()) > 1e-4 and abs(g_plain.mean() - g_out.mean()) > 1e-4


def test_config_errors_name_the_value():
    for overrides, match in (({"model.g_channels": (8, 8, 8)}, "one width per resolution"),
                             ({"stylegan2.augment": "color,flip"}, "stylegan2.augment='color,flip'"),
                             ({"stylegan2.style_mixing_prob": 1.5}, "style_mixing_prob=1.5"),
                             ({"stylegan2.r1_every": 0}, "stylegan2.r1_every=0"),
                             ({"stylegan2.mbstd_group": 3}, "divide data.batch_size"),
                             ({"data.value_range": (0.0, 1.0)}, "value_range")):
        with pytest.raises(ConfigError, match=match):
            registry.build(load_config(f"{CONFIG}:smoke", **overrides))


def test_truncation_strip_columns_are_the_images_of_truncated_w_with_shared_noise(run):
    """truncation_strip (the figure): row i, column j is the image of w_avg + psi_j (w_i - w_avg)
    with ONE noise draw for every image; checked against the model's synthesis called on w
    built by hand from the mapping output: psi = 1 is the untruncated image of the same z and
    noise, psi = 0 the image of w_avg in every row, psi = 0.3 the image of the interpolated w."""
    method, state = run["method"], run["state"]
    w_avg = jax.random.normal(jax.random.key(9), (method.config.model.w_dim,))
    state = state.replace(w_avg=w_avg)  # a known centre in place of the tracked one
    z = jax.random.normal(jax.random.key(10), (3, method.config.model.latent_dim))
    psis, noise_rng = (1.0, 0.0, 0.3), jax.random.key(11)

    @jax.jit
    def f(state, z):
        strip = method.truncation_strip(state, z, psis, noise_rng)
        ema = state.g.ema_params
        w = method.map(ema, z)                                                    # (3, w_dim)
        want_w = jnp.stack([w, jnp.tile(w_avg, (3, 1)), w_avg + 0.3 * (w - w_avg)], 1).reshape(9, -1)
        noise = jnp.tile(jax.random.normal(noise_rng, (1, method.noise_dim)), (9, 1))
        noise = jnp.concatenate([noise, jnp.zeros_like(noise)])  # and the same w without noise
        want = jnp.clip(method.synthesize(ema, method.broadcast(jnp.tile(want_w, (2, 1))), noise), -1, 1)
        return strip, want[:9], want[9:]

    strip, want, quiet = map(np.asarray, f(state, z))
    assert strip.shape == (9, *run["x0"].shape[1:])
    np.testing.assert_allclose(strip, want, atol=1e-5)
    at = strip.reshape(3, 3, *strip.shape[1:])                                   # (z, psi, ...)
    np.testing.assert_allclose(at[1:, 1], np.broadcast_to(at[0, 1], at[1:, 1].shape), atol=1e-6)
    # The check can tell: rows differ at psi = 1, psi = 0.3 is neither end, the noise shows.
    assert np.abs(at[0, 0] - at[1, 0]).max() > 1e-3
    assert min(np.abs(at[:, 2] - at[:, c]).max() for c in (0, 1)) > 1e-3
    assert np.abs(strip - quiet).max() > 1e-4
