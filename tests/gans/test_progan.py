"""ProGAN: equalized learning rate, pixel norm and minibatch stddev against numpy; the
fade-in blend in G, D and the real images at known alpha; the stage schedule; the critic
loss's terms (drift sign, real vs fake) by hand; the sampler's stage and alpha; and, through
the runtime on a 4 -> 8 run that crosses the stage boundary, alpha as a pure function of
the step (a run resumed mid-fade ends with identical parameters), one program per stage,
the optimizer reset at each phase, and the same run on 1 and 8 devices."""

from __future__ import annotations

import json
import shutil
import subprocess
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import PYTHON, REPO, subprocess_env

from gen_jax import load_config, registry, train
from gen_jax.data import dataset_info, make_train_iterator
from gen_jax.errors import ConfigError
from gen_jax.gans import progan
from gen_jax.gans.losses import gradient_penalty

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "progan_faces.py"
# 4x4 for step 0, then 8x8 fading in over steps 1-3 (alpha 0, 1/3, 2/3), stable from step 4.
TINY = {"progan.stable_steps": 1, "progan.fade_steps": 3, "train.num_steps": 5,
        "train.checkpoint_every": 0, "eval.max_batches": 1}
ALPHAS = [1.0, 0.0, 1 / 3, 2 / 3, 1.0]
CUT = 3  # the interrupted run stops here, mid-fade


def _config(**overrides):
    return load_config(f"{CONFIG}:smoke", **{**TINY, **overrides})


def _leaves(tree):
    return [np.asarray(a) for a in jax.tree.leaves(jax.device_get(tree))]


def _rows(workdir):
    return [r for r in map(json.loads, open(Path(workdir) / "metrics.jsonl")) if r["split"] == "train"]


# The runtime's loop (train._loop) without its writers: init, then each step through the
# per-stage programs on the mesh, the step's key folded from the train key.
_EIGHT_DEVICES = textwrap.dedent("""
    import json, os, sys, jax, numpy as np
    from gen_jax import data, load_config, parallel, train
    config, out, overrides = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    os.makedirs(out)
    assert jax.device_count() == 8, jax.device_count()
    overrides = {k: tuple(v) if isinstance(v, list) else v for k, v in overrides.items()}
    cfg = load_config(config + ":smoke", **overrides)
    run = train.setup(cfg, out)
    state = train._init_state(run, train._example_batch(run))
    at, it = train._Programs(run).one, data.make_train_iterator(cfg, cfg.seed)
    rows = []
    for step in range(cfg.train.num_steps):
        batch = parallel.shard_batch(next(it), run.mesh)
        state, metrics = at(step)(state, batch, jax.random.fold_in(run.keys["train"], step))
        rows.append({k: float(v) for k, v in jax.device_get(metrics).items()})
    json.dump(rows, open(out + "/rows.json", "w"))
    np.savez(out + "/state.npz", *[np.asarray(a) for a in jax.tree.leaves(jax.device_get(state))])
    print("OK")
""")


@pytest.fixture(scope="module")
def runs(tmp_path_factory, request):
    """The tiny run through the runtime (checkpoints at step CUT, mid-fade, and at the end);
    a copy of its workdir resumed from step CUT (``resume_step``: the later checkpoint is
    moved aside, as after a kill at CUT); and the same steps on 8 fake devices (a
    subprocess, running meanwhile)."""
    root = tmp_path_factory.mktemp("progan")
    eight = None  # started only when the devices test is selected
    if any(item.name == test_the_run_is_the_same_on_one_and_eight_devices.__name__
           for item in request.session.items):
        eight = subprocess.Popen([PYTHON, "-c", _EIGHT_DEVICES, str(CONFIG), str(root / "eight"),
                                  json.dumps(TINY)], cwd=REPO, env=subprocess_env(8),
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    cfg = _config(**{"train.checkpoint_every": CUT})
    full = train.train_and_evaluate(cfg, root / "full")
    shutil.copytree(root / "full", root / "resumed")
    resumed = train.train_and_evaluate(cfg, root / "resumed", resume_step=CUT)
    run = train.setup(cfg, root / "full")
    batch = next(make_train_iterator(run.config, run.config.seed))
    # The state after CUT steps for the hand computations: the last step trained is CUT - 1
    # (alpha 1/3 of the fade), the next one CUT (alpha 2/3).
    method = run.method
    yield {"root": root, "full": full, "resumed": resumed, "run": run, "method": method,
           "mid_fade": full.replace(step=jnp.full((), CUT, jnp.int32)), "x": jnp.asarray(batch["x"]),
           "eight": eight}
    if eight is not None and eight.poll() is None:  # the devices test failed before waiting
        eight.kill()
        eight.communicate()


# -- the paper's pieces against numpy ----------------------------------------------------


def test_equalized_lr_scales_n01_weights_by_he_constant_at_run_time():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 5)).astype(np.float32)
    w, b = rng.normal(size=(5, 3)).astype(np.float32), rng.normal(size=3).astype(np.float32)
    out = progan.EqualizedDense(3).apply({"params": {"kernel": w, "bias": b}}, x)
    np.testing.assert_allclose(out, x @ (w * np.sqrt(2 / 5)) + b, rtol=1e-5)
    out = progan.EqualizedDense(3, gain=1.0).apply({"params": {"kernel": w, "bias": b}}, x)
    np.testing.assert_allclose(out, x @ (w / np.sqrt(5)) + b, rtol=1e-5)
    # 3x3 SAME conv, fan_in = 3 * 3 * C_in, by an explicit sum over the padded taps.
    img = rng.normal(size=(1, 4, 5, 2)).astype(np.float32)
    k = rng.normal(size=(3, 3, 2, 4)).astype(np.float32)
    out = progan.EqualizedConv(4, 3).apply({"params": {"kernel": k, "bias": np.zeros(4, np.float32)}}, img)
    pad = np.pad(img, ((0, 0), (1, 1), (1, 1), (0, 0)))
    ref = sum(np.einsum("nhwc,co->nhwo", pad[:, i:i + 4, j:j + 5], k[i, j])
              for i in range(3) for j in range(3))
    np.testing.assert_allclose(out, ref * np.sqrt(2 / 18), rtol=1e-4, atol=1e-5)
    # The stored weights are N(0, 1): the scale is applied at run time, not at init.
    params = progan.EqualizedConv(32, 3).init(jax.random.key(0), jnp.zeros((1, 4, 4, 32)))["params"]
    assert abs(float(params["kernel"].std()) - 1.0) < 0.02 and float(jnp.abs(params["bias"]).max()) == 0


def test_pixel_norm_and_minibatch_stddev_by_numpy():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(3, 2, 2, 5)).astype(np.float32)
    np.testing.assert_allclose(progan.pixel_norm(a), a / np.sqrt((a ** 2).mean(-1, keepdims=True) + 1e-8),
                               rtol=1e-5)
    for n, group, g in ((8, 4, 4), (6, 4, 3)):
        x = rng.normal(size=(n, 3, 3, 2)).astype(np.float32)
        out = np.asarray(jax.jit(progan.minibatch_stddev, static_argnums=1)(jnp.asarray(x), group))
        assert out.shape == (n, 3, 3, 3) and progan.stddev_group(n, group) == g
        np.testing.assert_array_equal(out[..., :2], x)
        m = n // g
        for i in range(n):  # example i's group: i mod m, i.e. examples i mod m, i mod m + m, ...
            members = x[i % m::m]
            expected = np.sqrt(members.var(0) + 1e-8).mean()
            np.testing.assert_allclose(out[i, ..., 2], expected, rtol=1e-5)
    assert progan.stddev_group(5, 4) == 1


def test_fade_in_resampling_and_real_images_at_known_alpha(runs):
    assert float(progan.fade_in(jnp.float32(2.0), jnp.float32(10.0), 0.25)) == 4.0
    x = np.arange(2 * 4 * 4 * 1, dtype=np.float32).reshape(2, 4, 4, 1)
    pooled = x.reshape(2, 2, 2, 2, 2, 1).mean((2, 4))
    np.testing.assert_allclose(progan.downsample(jnp.asarray(x)), pooled)
    np.testing.assert_array_equal(progan.upsample2(jnp.asarray(pooled))[:, 1, 3], pooled[:, 0, 1])
    method, batch = runs["method"], np.asarray(runs["x"])  # 8x8 data, resolutions (4, 8)
    half = batch.reshape(-1, 4, 2, 4, 2, 1).mean((2, 4))
    blurred = half.repeat(2, 1).repeat(2, 2)
    np.testing.assert_allclose(method.real_images(runs["x"], 1, 0.25), 0.75 * blurred + 0.25 * batch,
                               atol=1e-6)
    np.testing.assert_allclose(method.real_images(runs["x"], 0, 0.25), half, atol=1e-6)


def test_fade_in_in_generator_and_critic(runs):
    method, state, x = runs["method"], runs["mid_fade"], runs["x"][:4]
    g, d = state.g.params, state.d.params

    @jax.jit
    def outputs(z, x):
        gen = [method.generator(g, z, 0, 1.0)] + [method.generator(g, z, 1, a) for a in (0.0, 0.3, 1.0)]
        crit = [method.critic(d, progan.downsample(x), 0, 1.0)]
        crit += [method.critic(d, x, 1, a) for a in (0.0, 1.0)]
        return gen, crit

    (low, g0, g3, g1), (d_low, d0, d1) = outputs(jax.random.normal(jax.random.key(0), (4, 8)), x)
    assert low.shape == (4, 4, 4, 1)
    # alpha = 0: the new block contributes nothing, the 4x4 image upsampled.
    np.testing.assert_allclose(g0, progan.upsample2(low), atol=1e-6)
    assert float(jnp.abs(g1 - progan.upsample2(low)).max()) > 1e-3
    np.testing.assert_allclose(g3, 0.7 * progan.upsample2(low) + 0.3 * g1, atol=1e-5)
    # D at alpha = 0 is the 4x4 critic of the pooled image; at alpha = 1 it is not.
    np.testing.assert_allclose(d0, d_low, rtol=1e-5, atol=1e-6)
    assert float(jnp.abs(d1 - d0).max()) > 1e-4


def test_schedule_stages_and_alpha_by_hand():
    s = progan.Schedule(3, stable=3, fade=2)  # stage 0: 0-2; stage 1: fade 3-4, 5-7; stage 2: fade 8-9, 10-
    stages = [0, 0, 0, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2]
    assert [s.stage_of(i) for i in range(14)] == stages and s.total == 13
    traced = jax.jit(jax.vmap(s.stage_index))(jnp.arange(14))
    assert traced.tolist() == stages
    alphas = [float(jax.jit(s.alpha, static_argnums=1)(jnp.int32(i), st)) for i, st in enumerate(stages)]
    assert alphas == pytest.approx([1, 1, 1, 0, 0.5, 1, 1, 1, 0, 0.5, 1, 1, 1, 1])
    starts = [i for i, st in enumerate(stages) if bool(s.phase_start(jnp.int32(i), st))]
    assert starts == [0, 3, 5, 8, 10]


def test_config_mismatches_are_one_config_error():
    for overrides, match in (({"progan.resolutions": (4, 8, 16)}, "data.image_size=16"),
                             ({"model.g_channels": (8,)}, "one per resolution"),
                             ({"progan.resolutions": (4, 16)}, "double"),
                             ({"progan.mbstd_group": 5}, "divide data.batch_size")):
        cfg = _config(**overrides)
        with pytest.raises(ConfigError, match=match):
            registry.build(cfg, dataset_info(cfg.data))


# -- the loss and the sampler ---------------------------------------------------------------


def test_critic_loss_is_wasserstein_plus_penalty_plus_positive_drift_by_hand(runs):
    # A drift weight of 1 (the config's 0.001 would hide the term in float32 rounding).
    cfg = _config(**{"progan.drift_weight": 1.0})
    method, state, x = registry.build(cfg, runs["method"].info), runs["mid_fade"], runs["x"]
    alpha = 1 / 3
    key = jax.random.key(3)

    @jax.jit
    def both(params, x, z):
        real = method.real_images(x, 1, alpha)
        fake = method.generator(state.g.params, z, 1, alpha)

        def critic(xx, p=params):
            return method.critic(p, xx, 1, alpha)

        real_out, fake_out = critic(real), critic(fake)
        # The drift term alone pulls the critic's real scores towards 0.
        step = jax.grad(lambda p: progan.drift_penalty(critic(real, p)))(params)
        moved = jax.tree.map(lambda p, dp: p - 1e-3 * dp, params, step)
        gp = gradient_penalty(critic, real, fake, key)
        hand = (real_out, fake_out, gp, jnp.mean(critic(real, moved) ** 2))
        return method.critic_loss(params, real, fake, 1, alpha, key), hand

    z = jax.random.normal(jax.random.key(2), (len(x), method.config.model.latent_dim))
    (loss, metrics), (real_out, fake_out, gp, drift_after) = both(state.d.params, x, z)
    drift = float(jnp.mean(real_out ** 2))
    expected = float(fake_out.mean() - real_out.mean()) + 10.0 * float(gp) + 1.0 * drift
    assert float(loss) == pytest.approx(expected, rel=1e-5, abs=1e-6)
    assert float(metrics["d_real"]) == pytest.approx(float(real_out.mean()), rel=1e-5, abs=1e-6)
    assert float(metrics["drift"]) == pytest.approx(drift, rel=1e-5) and drift > 0
    assert float(drift_after) < drift


def test_samples_come_from_the_last_trained_stage_and_alpha(runs):
    method, state = runs["method"], runs["mid_fade"]  # the last step trained: CUT - 1

    @jax.jit
    def both(state, key):
        early = state.replace(step=jnp.ones((), jnp.int32))  # after one step: stage 0 trained
        z = jax.random.normal(key, (3, method.config.model.latent_dim))
        ema = state.g.eval_params
        by_hand = (jnp.clip(method.generator(ema, z, 1, 1 / 3), -1, 1),
                   progan.upsample2(jnp.clip(method.generator(ema, z, 0, 1.0), -1, 1)))
        return (method.sample(state, key, 3), method.sample(early, key, 3)), by_hand

    (mid, early), (mid_hand, early_hand) = both(state, jax.random.key(5))
    np.testing.assert_allclose(mid, mid_hand, atol=1e-5)
    np.testing.assert_allclose(early, early_hand, atol=1e-5)  # 4x4 upsampled to the data's 8x8


# -- through the runtime ------------------------------------------------------------------


def test_alpha_follows_the_step_and_a_run_resumed_mid_fade_is_identical(runs):
    assert int(runs["full"].step) == 5 and int(runs["resumed"].step) == 5
    for a, b in zip(_leaves(runs["full"]), _leaves(runs["resumed"]), strict=True):
        np.testing.assert_array_equal(a, b)  # every network, EMA and optimizer state
    # The resumed run trained steps CUT.. again (its first rows of those were moved aside).
    assert len(list((runs["root"] / "resumed").glob("metrics.replaced-*.jsonl"))) == 1
    for workdir in ("full", "resumed"):
        rows = _rows(runs["root"] / workdir)
        assert [r["step"] for r in rows] == [1, 2, 3, 4, 5]
        assert [r["alpha"] for r in rows] == pytest.approx(ALPHAS)
        assert [r["resolution"] for r in rows] == [4, 8, 8, 8, 8]
        assert all(np.isfinite(r["loss"]) for r in rows)


def test_one_program_per_stage(runs):
    at = train._Programs(runs["run"]).one
    assert at(0) is not at(1) and at(1) is at(4) is at(1000)
    assert isinstance(runs["method"], registry.HasStages)


def test_optimizer_moments_are_reset_at_each_fade_and_stable_phase(runs):
    def counts(opt_state):
        return {int(a) for a in jax.tree.leaves(opt_state) if np.asarray(a).dtype == np.int32}

    # Phases start at steps 0, 1 (fade) and 4 (stable): one update since the last reset
    # (5 without resets, 4 if only fades reset them).
    assert counts(runs["full"].d.opt_state) == {1} and counts(runs["full"].g.opt_state) == {1}
    assert int(runs["full"].g.step) == 5  # the TrainState's own count is not reset


def test_the_run_is_the_same_on_one_and_eight_devices(runs):
    stdout, stderr = runs["eight"].communicate(timeout=300)
    assert runs["eight"].returncode == 0 and "OK" in stdout, stderr[-3000:]
    with np.load(runs["root"] / "eight" / "state.npz") as f:
        eight = [f[f"arr_{i}"] for i in range(len(f.files))]
    one = _leaves(runs["full"])
    assert len(one) == len(eight)
    for a, b in zip(one, eight, strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=2e-5)
    rows8 = json.loads((runs["root"] / "eight" / "rows.json").read_text())
    for r1, r8 in zip(_rows(runs["root"] / "full"), rows8, strict=True):
        for k in ("d_loss", "g_loss", "gp", "drift", "alpha"):
            assert r8[k] == pytest.approx(r1[k], rel=1e-4, abs=1e-5), (r1["step"], k)
