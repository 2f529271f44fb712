"""FastFlow, DifferNet and the PaDiM baseline on frozen features (gen_jax/anomaly/feature_flow.py,
padim.py): the flow's log-likelihood against a brute-force change of variables, the
per-location log-determinant against the Jacobian's diagonal blocks, the map's geometry
against the network's receptive fields, the map's maximum on a planted patch, the
"prob" and "nll" maps by hand, the frozen extractor, the image score as the map's
maximum, FastFlow's fit (per-location moments of
the whole split) and PaDiM against NumPy, DifferNet's score over the 8 rotations /
reflections, and InceptionV3's ``capture`` option against the layers' own outputs.

The FastFlow smoke config is trained through the runtime once (module fixture); the tiny
random stand-in network (``features.network="tiny"``) keeps everything fast.
"""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gen_jax import load_config, registry, train
from gen_jax.anomaly import feature_flow as ff
from gen_jax.data import dataset_info, load_split
from gen_jax.errors import ConfigError
from gen_jax.flows.couplings import AffineCoupling
from gen_jax.state import TrainState

CONFIGS = "configs"


def _random_variables(module, seed: int, *args, scale: float = 0.3) -> dict:
    """Variables of ``module`` for inputs ``args``: NumPy Gaussian noise of the init's shapes
    (nothing to compile), so that zero-initialised output layers are non-trivial too."""
    rng = np.random.default_rng(seed)
    shapes = jax.eval_shape(module.init, jax.random.key(0), *args)
    return jax.tree.map(lambda s: scale * rng.standard_normal(s.shape).astype(np.float32), shapes)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """The FastFlow smoke run through the runtime (its fit, 3 train steps); one jitted program
    giving the map and score, the "nll" map of the same state, and the flow's output on
    the features (z, log|det|); 4 good crops."""
    cfg = load_config(f"{CONFIGS}/fastflow_brick.py:smoke")
    workdir = tmp_path_factory.mktemp("fastflow")
    state = jax.device_get(train.train_and_evaluate(cfg, workdir))
    method = registry.build(cfg, dataset_info(cfg.data))
    nll_method = registry.build(load_config(f"{CONFIGS}/fastflow_brick.py:smoke", **{"fastflow.map": "nll"}),
                                dataset_info(cfg.data))
    (layer,) = cfg.features.layers
    flow = ff.FeatureMapFlow(cfg.model.steps_per_level, cfg.model.hidden, cfg.fastflow.position_frequencies)

    @jax.jit
    def probe(state, x):
        feats = method.features(state.model_state, x)[layer]
        z, ld = flow.apply({"params": state.params[f"flow_{layer}"]}, feats)
        maps = method.anomaly_map(state, x), method.anomaly_score(state, x), nll_method.anomaly_map(state, x)
        return (*maps, z, ld)

    x = load_split(cfg, "val")[0][:4]
    return {"cfg": cfg, "method": method, "state": state, "probe": probe, "x": x, "workdir": workdir}


# -- the flow: change of variables ----------------------------------------------------


def test_flow_log_likelihood_is_the_brute_force_change_of_variables():
    """The sum of the per-location NLL map is -log N(z; 0, I) - log|det J| with J the full
    Jacobian (jax.jacfwd) of the whole flow: location norm, position condition, couplings."""
    x = jax.random.normal(jax.random.key(0), (1, 3, 3, 4))
    flow = ff.FeatureMapFlow(num_steps=2, hidden=4, frequencies=1)
    variables = _random_variables(flow, 1, x)

    def forward(v):
        z, ld = flow.apply(variables, v.reshape(x.shape))
        return z.ravel(), (z, ff.flow_nll(z, ld))

    jac, (z, nll_map) = jax.jit(jax.jacfwd(forward, has_aux=True))(x.ravel())
    sign, logdet = np.linalg.slogdet(np.asarray(jac, np.float64))
    z = np.asarray(z, np.float64)
    expected = 0.5 * np.sum(z ** 2) + 0.5 * z.size * np.log(2 * np.pi) - logdet
    assert sign != 0 and abs(logdet) > 0.5  # a non-trivial flow
    assert nll_map.shape == (1, 3, 3)
    np.testing.assert_allclose(float(nll_map.sum()), expected, rtol=1e-4, atol=1e-3)


def test_local_coupling_is_the_family_coupling_with_its_log_det_per_location():
    """Same output and total log-det as the flows family's AffineCoupling with the same
    parameters; per location, the log|det| of the Jacobian's (C x C) diagonal block."""
    x = jax.random.normal(jax.random.key(3), (1, 3, 3, 4))
    local = ff.LocalAffineCoupling(ff.KernelTrunk(4, 3), "channel", 1)
    family = AffineCoupling(ff.KernelTrunk(4, 3), "channel", 1)
    variables = _random_variables(local, 5, x)

    def forward(v):
        y, ld = local.apply(variables, v.reshape(x.shape))
        return y.ravel(), (y, ld, family.apply(variables, v.reshape(x.shape)))

    jac, (y, ld, (y_ref, ld_ref)) = jax.jit(jax.jacfwd(forward, has_aux=True))(x.ravel())
    np.testing.assert_allclose(y, y_ref, atol=1e-6)
    np.testing.assert_allclose(ld.sum((1, 2)), ld_ref, rtol=1e-5)
    jac = np.asarray(jac, np.float64).reshape(3, 3, 4, 3, 3, 4)
    blocks = np.array([[np.linalg.slogdet(jac[h, w, :, h, w, :])[1] for w in range(3)] for h in range(3)])
    assert np.abs(blocks).max() > 0.1
    np.testing.assert_allclose(ld[0], blocks, atol=1e-4)


# -- the map's geometry and location --------------------------------------------------


def test_map_geometry_follows_the_receptive_field_centres():
    """A one-hot feature map upsampled to the crop peaks at the centre of that feature's
    receptive field, found by brute force: the crop pixels its gradient reaches (through
    the resize and the network) span [lo, hi], centre (lo + hi) / 2."""
    cfg = load_config(f"{CONFIGS}/fastflow_brick.py:smoke", **{"features.layers": ("conv2",),
                                                                  "features.input_size": 24})
    ex = ff.FrozenFeatures(cfg, dataset_info(cfg.data))
    variables = ex.load_variables()
    x = jnp.asarray(np.random.default_rng(0).uniform(0.2, 0.8, (1, 16, 16, 1)), jnp.float32)
    k = (1, 3)  # off the diagonal, so a transposed map moves

    def feature_k(a):
        f = ex.raw(variables, a)["conv2"]
        return f[0, k[0], k[1]].sum(), f

    grad, feats = jax.jit(jax.grad(feature_k, has_aux=True))(x)
    assert feats.shape[1:3] == (5, 5)  # 24 -> 11 -> 5 (two valid 3x3 convs of stride 2)
    rows, cols = np.nonzero(np.abs(np.asarray(grad[0, ..., 0])) > 0)
    centre = ((rows.min() + rows.max()) / 2, (cols.min() + cols.max()) / 2)
    onehot = jnp.zeros((1, *feats.shape[1:3])).at[0, k[0], k[1]].set(1.0)
    up = np.asarray(ex.to_image({"conv2": onehot})[0])
    assert up.shape == (16, 16)
    peak = np.unravel_index(np.argmax(up), up.shape)
    assert abs(peak[0] - centre[0]) <= 1.0 and abs(peak[1] - centre[1]) <= 1.0, (peak, centre)


def _with_patch(x: np.ndarray, top: int, left: int, size: int = 4) -> np.ndarray:
    out = np.array(x)
    checker = (np.add.outer(np.arange(size), np.arange(size)) % 2).astype(np.float32)
    out[:, top:top + size, left:left + size, 0] = checker
    return out


def test_map_maximum_is_at_a_planted_patch_and_the_score_is_its_maximum(run):
    x = run["x"]
    clean = np.asarray(run["probe"](run["state"], x)[1])
    for top, left in ((1, 10), (10, 2)):  # off the diagonal, so a transposed map misses
        maps, scores = map(np.asarray, run["probe"](run["state"], _with_patch(x, top, left))[:2])
        assert maps.shape == (4, 16, 16)
        for m in maps:
            r, c = np.unravel_index(np.argmax(m), m.shape)
            assert top - 1 <= r <= top + 4 and left - 1 <= c <= left + 4, ((top, left), (r, c))
        np.testing.assert_allclose(scores, maps.reshape(4, -1).max(1), rtol=1e-6)  # the image score
        assert (scores > clean).all()


def test_the_maps_are_the_flows_gaussian_term_or_its_nll_upsampled(run):
    """"prob" (the default) is -exp(-0.5 mean_c z^2) per location, "nll" the per-location NLL
    per channel, from the flow's (z, log|det|), bilinearly placed on the crop (NumPy)."""
    cfg, ex = run["cfg"], run["method"].extractor
    prob, _, nll, z, ld = map(lambda a: np.asarray(a, np.float64), run["probe"](run["state"], run["x"]))
    (layer,) = cfg.features.layers
    first, stride = ex.geometry[layer]
    a = ff.upsample_matrix(z.shape[1], first, stride, cfg.features.input_size, cfg.data.patch_size)
    c = z.shape[-1]
    want_prob = -np.exp(-0.5 * (z ** 2).mean(-1))
    want_nll = (0.5 * (z ** 2).sum(-1) + 0.5 * c * np.log(2 * np.pi) - ld) / c
    assert cfg.fastflow.map == "prob" and np.abs(ld).max() > 0.1
    np.testing.assert_allclose(prob, a @ want_prob @ a.T, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(nll, a @ want_nll @ a.T, rtol=1e-4, atol=1e-4)


def test_the_extractor_stays_frozen_through_training(run):
    """After the run the state holds the network's variables exactly as loaded (here: the
    fixed-key stand-in), outside the trained parameters, which are the flows alone."""
    method, state = run["method"], run["state"]
    fresh = jax.device_get(method.extractor.load_variables())
    held = state.model_state["extractor"]
    assert jax.tree.structure(held) == jax.tree.structure(fresh)
    for a, b in zip(jax.tree.leaves(held), jax.tree.leaves(fresh), strict=True):
        np.testing.assert_array_equal(a, b)
    assert set(state.params) == {f"flow_{name}" for name in method.extractor.layers}
    kept = run["cfg"].features.num_channels
    assert state.model_state["channels"][method.extractor.layers[0]].shape == (kept,)
    assert int(state.step) == run["cfg"].train.num_steps


# -- the fits against NumPy ------------------------------------------------------------


def test_fastflow_fit_standardises_every_location_over_the_whole_split(run):
    """The runtime's fit set each LocationNorm to the per-location mean and std of the kept
    features over the whole training split (3 warm-up steps later: moved by < 1e-3); the
    chunked moments with a padded last chunk equal NumPy's."""
    method, cfg, state = run["method"], run["cfg"], run["state"]
    assert cfg.optim.learning_rate * cfg.train.num_steps ** 2 / cfg.optim.warmup_steps < 1e-3
    x_train = jnp.asarray(load_split(cfg, "train")[0])

    @jax.jit
    def features_and_moments(model_state, x):
        chunked = ff.location_moments(lambda a: method.features(model_state, a), x[:40], chunk=24)
        return method.features(model_state, x), chunked

    feats, chunked = features_and_moments(state.model_state, x_train)
    (name, f), = feats.items()
    f = np.asarray(f, np.float64)
    assert len(f) == cfg.data.num_train and f.std(0).mean() > 1e-2
    norm = state.params[f"flow_{name}"]["LocationNorm_0"]
    np.testing.assert_allclose(norm["bias"], -f.mean(0), atol=1e-3)
    np.testing.assert_allclose(norm["log_scale"], -np.log(f.std(0) + ff.ACTNORM_EPS), atol=1e-3)
    mean, std = chunked[name]
    np.testing.assert_allclose(mean, f[:40].mean(0), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(std, f[:40].std(0), rtol=1e-3, atol=1e-4)


def test_padim_mahalanobis_matches_numpy():
    cfg = load_config(f"{CONFIGS}/padim_brick.py:smoke", **{"padim.fit_batch_size": 24})
    method = registry.build(cfg, dataset_info(cfg.data))
    x_train = load_split(cfg, "train")[0][:40]  # 40 = 24 + 16: the fit pads its last batch
    x_test = _with_patch(load_split(cfg, "val")[0][:3], 4, 6)

    @jax.jit
    def fit_and_score(x_train, x_test):
        state = method.fit(jax.random.key(0), x_train)
        feats = method.features(state.model_state, jnp.concatenate([x_train, x_test]))
        return (method._maps(state, x_test), method.anomaly_map(state, x_test),
                method.anomaly_score(state, x_test), feats)

    maps, image_map, score, feats = fit_and_score(x_train, x_test)
    (name, f), = feats.items()
    f = np.asarray(f, np.float64)
    train_f, test_f = f[:40], f[40:]
    _, h, w, c = f.shape
    want = np.zeros((3, h, w))
    for i in range(h):
        for j in range(w):
            cov = np.cov(train_f[:, i, j].T) + cfg.padim.reg * np.eye(c)
            d = test_f[:, i, j] - train_f[:, i, j].mean(0)
            want[:, i, j] = np.sqrt(np.einsum("ni,ij,nj->n", d, np.linalg.inv(cov), d))
    np.testing.assert_allclose(np.asarray(maps[name]), want, rtol=2e-3, atol=2e-3)
    assert image_map.shape == (3, 16, 16)
    np.testing.assert_allclose(score, np.asarray(image_map).reshape(3, -1).max(1), rtol=1e-6)


# -- DifferNet ----------------------------------------------------------------------


def test_differnet_scores_the_mean_nll_over_the_eight_rotations_and_reflections():
    """The score is the mean over the 8 rotations / reflections (by hand in NumPy) of the
    flow's NLL, and that NLL is the brute-force change of variables (jax.jacfwd)."""
    cfg = load_config(f"{CONFIGS}/differnet_brick.py:smoke", **{"differnet.input_sizes": (16,),
                                                                 "features.layers": ("conv1",)})
    method = registry.build(cfg, dataset_info(cfg.data))
    x = load_split(cfg, "val")[0][:3]
    views = np.stack([np.rot90(np.swapaxes(x, 1, 2) if k >= 4 else x, k % 4, axes=(1, 2)) for k in range(8)])
    assert len({v.tobytes() for v in views}) == 8
    frozen = method.frozen_state(jax.random.key(0), jnp.asarray(x))
    dim = jax.eval_shape(method.embed, frozen, x).shape[-1]
    params = _random_variables(method.flow, 1, jnp.zeros((1, dim)), scale=0.2)["params"]
    state = TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=None, ema_params=None,
                       model_state=frozen, tx=None, ema_decay=0.0)

    @jax.jit
    def score_views_and_brute_force(state, x, views):
        nll = method._nll(state.params, state.model_state, views.reshape(-1, *x.shape[1:]))
        v = method.embed(state.model_state, x[:1])[0]

        def forward(a):
            z, ld = method.flow.apply({"params": state.params}, a[None])
            return z[0], (z, ff.flow_nll(z, ld))

        jac, (z, nll0) = jax.jacfwd(forward, has_aux=True)(v)
        return method.anomaly_score(state, x), nll.reshape(8, -1), ff.dihedral(x, 5), jac, z, nll0

    score, nll, view5, jac, z, nll0 = score_views_and_brute_force(state, jnp.asarray(x), jnp.asarray(views))
    assert np.isfinite(nll).all()
    np.testing.assert_allclose(score, np.asarray(nll).mean(0), rtol=1e-5)
    assert np.asarray(nll).std(0).min() > 1e-3  # the eight views score differently
    np.testing.assert_array_equal(view5, views[5])
    sign, logdet = np.linalg.slogdet(np.asarray(jac, np.float64))
    assert sign != 0 and abs(logdet) > 0.1
    expected = 0.5 * np.sum(np.asarray(z, np.float64) ** 2) + 0.5 * dim * np.log(2 * np.pi) - logdet
    np.testing.assert_allclose(float(nll0[0]), expected, rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(float(nll0[0]), float(nll[0, 0]), rtol=1e-5)  # view 0 is x itself


def test_config_errors_name_the_value():
    for name, key, value in (("fastflow", "features.layers", ("nope",)),
                             ("fastflow", "features.network", "vgg"), ("fastflow", "features.input_size", 4),
                             ("fastflow", "features.num_channels", -1), ("fastflow", "fastflow.map", "z"),
                             ("fastflow", "fastflow.position_frequencies", -1),
                             ("fastflow", "model.steps_per_level", 0), ("padim", "padim.reg", 0.0),
                             ("differnet", "differnet.input_sizes", (4,))):
        cfg = load_config(f"{CONFIGS}/{name}_brick.py:smoke", **{key: value})
        with pytest.raises(ConfigError, match=re.escape(f"{key}={value!r}")):
            registry.build(cfg, dataset_info(cfg.data))


# -- InceptionV3(capture=...) -------------------------------------------------------


def test_inception_capture_returns_the_layers_own_outputs():
    """The captured maps are the named layers' outputs (Flax's own record of each submodule's
    output; the unnamed pool by hand in NumPy), and the network stops after the last one.
    (The uncaptured pool3 features are checked against an independent reference in
    tests/metrics/test_inception_reference.py.)"""
    from gen_jax.metrics.inception import InceptionV3

    x = jnp.asarray(np.random.default_rng(0).uniform(0, 1, (2, 75, 75, 3)), jnp.float32)
    taps = ("Conv2d_2a_3x3", "MaxPool_3a")
    net = InceptionV3(logits=False, resize=False, capture=taps)
    ref = InceptionV3(logits=False, resize=False, capture=("Conv2d_3b_1x1",))
    shapes = jax.eval_shape(ref.init, jax.random.key(0), x)
    rng = np.random.default_rng(1)
    variables = jax.tree_util.tree_map_with_path(
        lambda path, s: (rng.uniform(0.5, 1.5, s.shape) if "var" in jax.tree_util.keystr(path)
                         else 0.2 * rng.standard_normal(s.shape)).astype(np.float32), shapes)
    assert set(jax.eval_shape(net.init, jax.random.key(0), x)["params"]) == {
        "Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3"}  # nothing after MaxPool_3a

    @jax.jit
    def both(variables, x):
        _, rec = ref.apply(variables, x, capture_intermediates=True, mutable=["intermediates"])
        return net.apply(variables, x), rec["intermediates"]

    out, rec = both(variables, x)
    assert set(out) == set(taps)
    np.testing.assert_array_equal(out["Conv2d_2a_3x3"], rec["Conv2d_2a_3x3"]["__call__"][0])
    before = np.asarray(rec["Conv2d_2b_3x3"]["__call__"][0])  # (2, 35, 35, 64) -> 3x3 max, stride 2
    pooled = np.max([before[:, i:i + 33:2, j:j + 33:2] for i in range(3) for j in range(3)], axis=0)
    np.testing.assert_array_equal(out["MaxPool_3a"], pooled)
    with pytest.raises(ValueError, match="Mixed_9z"):
        InceptionV3(capture=("Mixed_9z",)).init(jax.random.key(0), x)
