"""Consistency distillation ("consistency", gen_jax/diffusion/consistency.py) against
independent references: the boundary condition f(x, ε) = x exactly; the target network
as the EMA of the online one (numpy by hand over every training step); the teacher
frozen yet used; and on 2-D Gaussian data, whose EDM denoiser is exact in closed form,
the distilled one-step map against the closed-form ODE endpoint and the teacher's own
Heun chain, and multistep sampling (with the exact consistency function in place of the
network) against its closed-form moments.

One module fixture (``gauss``) distils the closed-form teacher into a small MLP in one
compiled scan. The config's smoke variant is trained by tests/test_configs.py (its
teacher workdir made there); here its Method is built from a teacher in memory.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import CONFIGS

from gen_jax import load_config, registry
from gen_jax.config import config_to_json
from gen_jax.data import DataInfo
from gen_jax.diffusion import consistency as cm
from gen_jax.errors import ConfigError

CONFIG = CONFIGS / "consistency_moons.py"

GAUSS = DataInfo("gauss", "vector", (2,), None, None)
MU = np.array([0.8, -0.5], np.float32)
STD = np.array([0.5, 0.3], np.float32)
T_MAX, EPS = 80.0, 0.002
GAUSS_STEPS = 400


def gauss_denoise(params, x, sigma):
    """The exact EDM denoiser of N(μ, diag s²) data noised as x = y + σ n:
    D(x; σ) = μ + s² / (s² + σ²) (x - μ)."""
    s2 = params["var"]
    return params["mu"] + s2 / (s2 + sigma[:, None] ** 2) * (x - params["mu"])


def ode_endpoint(x_t, t, t_end=EPS):
    """The probability-flow ODE's map for N(μ, diag s²) data: x_σ = μ + √(s² + σ²) u with u
    constant along a trajectory, so x_ε = μ + √((s² + ε²) / (s² + t²)) (x_t - μ)."""
    return MU + np.sqrt((STD**2 + t_end**2) / (STD**2 + t**2)) * (x_t - MU)


def heun_chain(x, grid):
    """EDM's Heun steps down the grid t_N -> t_1 with the exact denoiser, in float64 numpy."""
    d_fn = lambda x, s: MU + STD**2 / (STD**2 + s**2) * (x - MU)  # noqa: E731
    for a, b in zip(grid[:0:-1], grid[-2::-1], strict=True):
        d = (x - d_fn(x, a)) / a
        x_e = x + (b - a) * d
        x = x + (b - a) * 0.5 * (d + (x_e - d_fn(x_e, b)) / b)
    return x


@pytest.fixture(scope="module")
def smoke_method():
    """The smoke config's Method with a teacher in memory: ``configs/edm_moons.py:smoke``'s
    network with random (numpy) weights."""
    edm = registry.build(load_config(f"{CONFIGS / 'edm_moons.py'}:smoke"))
    shapes = jax.eval_shape(edm.init, jax.random.key(0), {"x": jnp.zeros((4, 2))}).params
    rng = np.random.default_rng(7)
    params = jax.tree.map(lambda s: (0.3 * rng.normal(size=s.shape)).astype(s.dtype), shapes)
    cfg = load_config(f"{CONFIG}:smoke")
    return cm.ConsistencyDistillation(cfg, edm.info, teacher=cm.FrozenTeacher(edm, params))


@pytest.fixture(scope="module")
def gauss():
    """The closed-form teacher of N(MU, diag STD²) distilled into a small MLP (GAUSS_STEPS
    steps in one scan): the online and target parameters after every step, the one-step
    map of 2000 x_T, f at t = ε and t = 1, and the loss with the teacher as it is and moved."""
    edm = registry.build(load_config(CONFIGS / "edm_moons.py", **{"model.hidden": 32, "model.depth": 1}),
                         GAUSS)
    cfg = load_config(CONFIG, **{"model.init_from_teacher": False, "optim.learning_rate": 5e-3,
                                 "model.target_decay": 0.9, "data.batch_size": 128,
                                 "train.ema_decay": 0.0, "train.num_steps": GAUSS_STEPS})
    teacher = cm.FrozenTeacher(edm, {"mu": jnp.asarray(MU), "var": jnp.asarray(STD**2)}, gauss_denoise)
    method = cm.ConsistencyDistillation(cfg, GAUSS, teacher)
    x_t = T_MAX * np.asarray(jax.random.normal(jax.random.key(9), (2000, 2)))
    x = 3.0 * np.random.default_rng(0).normal(size=(64, 2)).astype(np.float32)

    @jax.jit
    def distil(key):
        state = method.init(jax.random.key(0), {"x": jnp.zeros((128, 2))})

        def flat(tree):
            return jnp.concatenate([jnp.ravel(a) for a in jax.tree.leaves(tree)])

        def body(st, k):
            k_x, k_step = jax.random.split(k)
            st = method.train_step(st, {"x": MU + STD * jax.random.normal(k_x, (128, 2))}, k_step)[0]
            return st, (flat(st.params), flat(st.model_state["target"]))

        start = (flat(state.params), flat(state.model_state["target"]))
        state, trace = jax.lax.scan(body, state, jax.random.split(key, GAUSS_STEPS))
        # One network call for f(x_T, T), f(x, ε) and f(x, 1); one loss trace for the
        # teacher as it is and moved (vmapped): fewer programs to compile.
        n, m = len(x_t), len(x)
        t = jnp.concatenate([jnp.full((n,), T_MAX), jnp.full((m,), EPS), jnp.full((m,), 1.0)])
        f = method.consistency_fn(state.params, jnp.concatenate([x_t, x, x]), t)
        ms = state.model_state
        batch = {"x": MU + STD * x / 3}

        def loss(mu):
            ms_mu = {**ms, "teacher": {**ms["teacher"], "mu": mu}}
            return method.loss_fn(state.params, ms_mu, batch, jax.random.key(5), False)[0]

        losses = jax.vmap(loss)(jnp.stack([ms["teacher"]["mu"], ms["teacher"]["mu"] + 0.2]))
        return {"one": f[:n], "at_eps": f[n:n + m], "at_one": f[n + m:],
                "teacher": ms["teacher"], "start": start, "online": trace[0], "target": trace[1],
                "loss": losses[0], "loss_moved_teacher": losses[1]}

    out = jax.device_get(distil(jax.random.key(1)))
    return {"method": method, "x_t": x_t, "x": x, **out, "one": np.asarray(out["one"], np.float64)}


def test_boundary_condition_holds_exactly(gauss):
    """f(x, ε) = x bit for bit with a trained network (c_skip(ε) = 1, c_out(ε) = 0), not
    at t = 1; the scalings against the paper's formulas in numpy at other t."""
    np.testing.assert_array_equal(gauss["at_eps"], gauss["x"])
    assert np.abs(gauss["at_one"] - gauss["x"]).max() > 0.1
    t = np.array([EPS, 0.01, 1.0, 80.0])
    c_skip, c_out = (np.asarray(a) for a in cm.boundary_scalings(jnp.asarray(t), EPS, 1.0))
    np.testing.assert_allclose(c_skip, 1.0 / ((t - EPS) ** 2 + 1.0), rtol=1e-6)
    np.testing.assert_allclose(c_out, (t - EPS) / np.sqrt(1.0 + t**2), rtol=1e-6)


def test_target_is_the_ema_of_the_online_network(gauss):
    """θ⁻ starts as θ and follows θ⁻_k = μ θ⁻_{k-1} + (1 - μ) θ_k over every step, θ_k the
    updated online parameters (numpy by hand, float64), lagging behind them."""
    mu = gauss["method"].config.model.target_decay
    online, target = np.asarray(gauss["online"], np.float64), np.asarray(gauss["target"], np.float64)
    start_online, start_target = (np.asarray(a, np.float64) for a in gauss["start"])
    np.testing.assert_array_equal(start_target, start_online)
    prev = np.concatenate([start_target[None], target[:-1]])
    np.testing.assert_allclose(target, mu * prev + (1 - mu) * online, rtol=1e-5, atol=1e-6)
    assert np.abs(online[0] - start_online).max() > 1e-4  # the online network moves ...
    assert np.abs(target[-1] - online[-1]).max() > 1e-4  # ... and the target lags it


def test_teacher_is_frozen_and_is_the_one_used(gauss):
    """The teacher's parameters come out of GAUSS_STEPS updates unchanged, and the loss
    depends on them (a student distilling itself, or its target, would not)."""
    np.testing.assert_array_equal(gauss["teacher"]["mu"], MU)
    np.testing.assert_array_equal(gauss["teacher"]["var"], STD**2)
    assert abs(gauss["loss_moved_teacher"] - gauss["loss"]) > 0.1 * gauss["loss"]


def test_init_copies_the_teacher_network_into_student_and_target(smoke_method):
    """With model.init_from_teacher (the config's default), θ = θ⁻ = the teacher's weights
    at step 0, in separate buffers; the teacher rides in the state beside them."""
    method = smoke_method
    state = method.init(jax.random.key(0), {"x": jnp.zeros((4, 2))})
    teacher = jax.tree.leaves(method.teacher.params)
    for tree in (state.params, state.model_state["target"], state.model_state["teacher"]):
        for a, b in zip(jax.tree.leaves(tree), teacher, strict=True):
            np.testing.assert_array_equal(a, b)
    assert state.model_state["target"] is not state.params


def test_one_step_is_the_teachers_ode_endpoint_on_gaussian_data(gauss):
    """One call f(x_T, T) lands where the teacher's ODE takes x_T: within 0.06 RMS of the
    closed-form endpoint (data std 0.3-0.5) and 0.04 of the teacher's Heun chain on the
    same grid (what distillation copies; measured 0.043 and 0.027); the teacher's own
    one step (D(x_T; T), about the mean) is about 0.57 away."""
    x_t, one = gauss["x_t"], gauss["one"]
    rms = lambda a, b: float(np.sqrt(np.mean(np.sum((a - b) ** 2, axis=1))))  # noqa: E731
    exact = ode_endpoint(x_t, T_MAX)
    chain = heun_chain(x_t.astype(np.float64), gauss["method"].grid)
    one_step_teacher = MU + STD**2 / (STD**2 + T_MAX**2) * (x_t - MU)
    assert rms(chain, exact) < 0.04  # the grid (N = 18) is fine enough to be the ODE
    assert rms(one, exact) < 0.06 and rms(one, chain) < 0.04, (rms(one, exact), rms(one, chain))
    assert rms(one_step_teacher, exact) > 0.3


class ExactConsistency(cm.ConsistencyDistillation):
    """The Method with the exact consistency function of N(MU, diag STD²) data in place of
    the network: f(x, t) = μ + √((s² + ε²) / (s² + t²)) (x - μ) (see :func:`ode_endpoint`)."""

    def consistency_fn(self, params, x, t, rng=None):
        return MU + jnp.sqrt((STD**2 + EPS**2) / (STD**2 + t[:, None] ** 2)) * (x - MU)


def test_multistep_sampling_draws_the_noise_of_algorithm_1(gauss):
    """With the exact f, k-step sampling (x = f(T z, T); x = f(x + √(τ² - ε²) z', τ)) has
    mean μ - r_τ r_T μ and spread r_τ √(r_T² T² + τ² - ε²) per dimension (r_t = √((s² + ε²)
    / (s² + t²))): checked on 20000 samples for one, two and three steps. Reusing z for z'
    or dropping the noise changes the spread by a quarter or more."""
    m = gauss["method"]
    exact = ExactConsistency(m.config, m.info, teacher=m.teacher)
    r = lambda t: np.sqrt((STD**2 + EPS**2) / (STD**2 + t**2))  # noqa: E731
    draw = jax.jit(lambda k: (exact.sample(None, k, 20000, num_steps=1, params=()),
                              exact.sample(None, k, 20000, num_steps=2, sigmas=(0.5,), params=()),
                              exact.sample(None, k, 20000, num_steps=3, sigmas=(2.0, 0.3), params=())))
    for x, taus in zip(draw(jax.random.key(4)), ([], [0.5], [2.0, 0.3]), strict=True):
        mean, var = MU * (1 - r(T_MAX)), (r(T_MAX) * T_MAX) ** 2
        for tau in taus:
            mean, var = MU + r(tau) * (mean - MU), r(tau) ** 2 * (var + tau**2 - EPS**2)
        x = np.asarray(x, np.float64)
        np.testing.assert_allclose(x.mean(0), mean, atol=0.015)
        np.testing.assert_allclose(x.std(0), np.sqrt(var), rtol=0.03)


def test_sample_sigmas_and_config_errors(smoke_method, tmp_path):
    method = smoke_method
    np.testing.assert_allclose(method.sample_sigmas(1), [80.0])
    mid = ((80.0 ** (1 / 7) + EPS ** (1 / 7)) / 2) ** 7  # the 3-point ρ-schedule's middle
    np.testing.assert_allclose(method.sample_sigmas(2), [80.0, mid])
    np.testing.assert_allclose(method.sample_sigmas(3, (5.0, 0.5)), [80.0, 5.0, 0.5])
    grid = cm.time_grid(4, EPS, 80.0, 7.0)
    assert grid[0] == pytest.approx(EPS) and grid[-1] == pytest.approx(80.0) and np.all(np.diff(grid) > 0)
    a, b = np.array([[0.3, -1.0], [2.0, 0.5]], np.float32), np.array([[0.0, 0.0], [1.0, 1.5]], np.float32)
    sq = np.sum((a - b) ** 2, axis=1)
    np.testing.assert_allclose(method.distance(a, b), sq / 2, rtol=1e-6)  # l2: per dimension
    huber_cfg = load_config(f"{CONFIG}:smoke", **{"model.loss": "pseudo_huber"})
    huber = cm.ConsistencyDistillation(huber_cfg, method.info, teacher=method.teacher)
    c = 0.00054 * np.sqrt(2)  # Song & Dhariwal (2023): c = 0.00054 √d
    np.testing.assert_allclose(huber.distance(a, b), np.sqrt(sq + c**2) - c, rtol=1e-6)
    for bad, match in [({"sampler.sigmas": (0.5, 5.0), "sampler.num_steps": 3}, "decreasing values"),
                       ({"sampler.sigmas": (1.0,), "sampler.num_steps": 3}, "num_steps - 1 = 2"),
                       ({"model.num_scales": 1}, "num_scales=1"),
                       ({"model.target_decay": 1.0}, r"target_decay=1.0 must be in \[0, 1\)"),
                       ({"model.teacher_solver": "rk4"}, "valid: heun, euler")]:
        with pytest.raises(ConfigError, match=match) as e:
            cm.ConsistencyDistillation(load_config(f"{CONFIG}:smoke", **bad), method.info,
                                       teacher=method.teacher)
        assert "\n" not in str(e.value)
    other = tmp_path / "vae"  # a workdir of another method (its config is all that is read)
    other.mkdir()
    (other / "config.json").write_text(config_to_json(load_config(CONFIGS / "vae_digits.py")))
    no_ckpt = tmp_path / "edm"  # an EDM workdir without a checkpoint
    no_ckpt.mkdir()
    (no_ckpt / "config.json").write_text(config_to_json(load_config(f"{CONFIGS / 'edm_moons.py'}:smoke")))
    for workdir, match in [("", "teacher_workdir is empty"),
                           (str(tmp_path / "none"), "not a trained gen_jax workdir"),
                           (str(other), "holds a 'vae' run; .* needs an 'edm' teacher"),
                           (str(no_ckpt), "no checkpoint in .*: train .* first")]:
        with pytest.raises(ConfigError, match=match) as e:
            registry.build(load_config(f"{CONFIG}:smoke", **{"model.teacher_workdir": workdir}))
        assert "\n" not in str(e.value)
