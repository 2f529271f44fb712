"""The mixed-precision policy (``runtime.precision``, gen_jax/nn/precision.py) in every
family: each registered Method's bfloat16 train step computes its networks in bfloat16
(traced), returns float32 state, metrics and log-likelihoods, and for a handful of
families one real step stays finite and close to the float32 step."""

from __future__ import annotations

import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import CONFIGS

from gen_jax import load_config, registry
from gen_jax.checkpoint import Checkpointer
from gen_jax.config import config_to_json
from gen_jax.data import make_train_iterator
from gen_jax.errors import ConfigError
from gen_jax.nn.precision import apply_policy, is_full_precision, module_precision, with_precision

# One smoke config per registered Method (its cheapest, no tfds data). The three that
# load another trained workdir get one with random weights (``dependencies``).
CONFIG_OF = {
    "ae": "ae_digits.py", "biggan": "biggan_patches.py", "consistency": "consistency_moons.py",
    "cyclegan": "cyclegan_digits.py", "dae": "dae_digits.py", "ddpm": "ddpm_digits.py",
    "differnet": "differnet_brick.py", "draem": "draem_brick.py", "edm": "edm_moons.py",
    "fanogan": "fanogan_brick.py", "fastflow": "fastflow_brick.py",
    "feature_knn": "feature_knn_brick.py", "flow_matching": "flow_matching_moons.py",
    "flowpp": "flowpp_digits.py", "gan": "dcgan_digits.py", "ganomaly": "ganomaly_brick.py",
    "gated_pixelcnn": "gated_pixelcnn_digits.py", "gaussian": "gaussian_digits.py",
    "glow": "glow_digits.py", "gmm": "gmm_ring8.py", "ldm": "ldm_digits.py", "mae": "mae_digits.py",
    "nice": "nice_digits.py", "padim": "padim_brick.py", "pca": "pca_digits.py",
    "pix2pix": "pix2pix_digits.py", "pixelcnn": "pixelcnn_digits.py", "progan": "progan_faces.py",
    "realnvp": "realnvp_digits.py", "sae": "sae_digits.py", "score_sde": "sde_moons.py",
    "singan": "singan_brick.py", "sr3": "sr3_digits.py", "stylegan2": "stylegan2_faces.py",
    "vae": "vae_digits.py", "vdm": "vdm_digits.py", "vqvae": "vqvae_digits.py",
    "vqvae2": "vqvae2_digits.py", "vqvae_prior": "vqvae_prior_digits.py",
}
# Methods with no network the policy applies to: closed-form fits, and the Methods on
# frozen features alone (their extractor stays float32, see gen_jax/nn/precision.py).
NO_NETWORK = {"gaussian", "gmm", "pca", "padim", "feature_knn"}
# (dependant config, the override naming the workdir it loads, the config of that workdir)
DEPENDS = {"consistency": ("model.teacher_workdir", "edm_moons.py"),
           "ldm": ("model.ae_workdir", "vae_digits.py"),
           "vqvae_prior": ("model.vqvae_workdir", "vqvae_digits.py")}
# Of the matmul/conv work inside the networks under the bfloat16 policy, the share done
# in bfloat16 (measured >= 0.994: the rest are float32 by design, e.g. spectral norm's
# power iteration, VQ distances to an EMA codebook kept as float32 state).
BF16_SHARE = 0.95
MATMULS = ("dot_general", "conv_general_dilated")


@pytest.fixture(scope="module")
def workdirs(tmp_path_factory):
    """Config name -> a workdir of its smoke state with random weights (loads as trained)."""
    out = {}
    for _, base in DEPENDS.values():
        cfg = load_config(f"{CONFIGS / base}:smoke")
        shapes = jax.eval_shape(registry.build(cfg).init, jax.random.key(0),
                                next(make_train_iterator(cfg, cfg.seed)))
        rng = np.random.default_rng(0)

        def fill(s, rng=rng):
            if jnp.issubdtype(s.dtype, jnp.floating):
                return (0.3 * rng.normal(size=s.shape)).astype(s.dtype)
            return np.zeros(s.shape, s.dtype)

        state = jax.tree.map(fill, shapes)
        workdir = tmp_path_factory.mktemp(base.removesuffix(".py"))
        (workdir / "config.json").write_text(config_to_json(cfg))
        ckpt = Checkpointer(workdir, async_save=False)
        ckpt.save(0, state, make_train_iterator(cfg, cfg.seed).get_state(), cfg, force=True)
        ckpt.close()
        out[base] = str(workdir)
    return out


def _config(method: str, precision: str, workdirs: dict | None = None):
    overrides = {"runtime.precision": precision}
    if method in DEPENDS:
        key, base = DEPENDS[method]
        overrides[key] = workdirs[base]
    return load_config(f"{CONFIGS / CONFIG_OF[method]}:smoke", **overrides)


def _sub_jaxprs(eqn):
    for value in eqn.params.values():
        for v in value if isinstance(value, (list, tuple)) else (value,):
            if hasattr(v, "eqns"):
                yield v
            elif hasattr(getattr(v, "jaxpr", None), "eqns"):
                yield v.jaxpr


def _module_classes() -> set[str]:
    names, todo = set(), [nn.Module]
    while todo:
        cls = todo.pop()
        names.add(cls.__name__)
        todo.extend(cls.__subclasses__())
    return names


def _top_module(name_stack: str, classes: set[str]) -> str | None:
    """The network a traced op belongs to: the first part of its name stack naming a Flax
    module class (Flax names a top-level ``apply`` "Class" or "Class.method", inside
    transformation wrappers such as "transpose(jvp(VAENet.encode))")."""
    for part in name_stack.split("/"):
        name = re.sub(r"^(?:[\w.]+\()*([^()]*)\)*$", r"\1", part).split(".")[0]
        if name in classes:
            return name
    return None


def matmul_work(jaxpr, prefix: str = "", out=None) -> list[tuple[str, str, float]]:
    """(name stack, operand dtypes, rough FLOPs) of every matmul/conv in ``jaxpr``, nested
    programs (scan, cond, custom_vjp, pjit) included."""
    out = [] if out is None else out
    for eqn in jaxpr.eqns:
        stack = f"{prefix}/{eqn.source_info.name_stack}"
        if eqn.primitive.name in MATMULS:
            a, b = (v.aval for v in eqn.invars[:2])
            flops = np.prod(eqn.outvars[0].aval.shape) * np.sqrt(np.prod(a.shape) * np.prod(b.shape))
            out.append((stack, f"{a.dtype},{b.dtype}", float(flops)))
        for sub in _sub_jaxprs(eqn):
            matmul_work(sub, stack, out)
    return out


def network_work(work, method) -> tuple[dict[str, float], set[str]]:
    """{operand dtypes: FLOPs} of the matmuls inside ``method``'s networks under the policy,
    and the operand dtypes of those inside its float32 (frozen) networks. A network the
    policy did not reach counts as under it (so it fails the bfloat16 share)."""
    classes = _module_classes()
    frozen = {type(x).__name__ for x in _modules(method, frozen=True)}
    policy, kept = {}, set()
    for stack, dtypes, flops in work:
        top = _top_module(stack, classes)
        if top in frozen:
            kept.add(dtypes)
        elif top is not None:
            policy[dtypes] = policy.get(dtypes, 0.0) + flops
    return policy, kept


def bf16_share(work: dict[str, float]) -> float:
    total = sum(work.values())
    return work.get("bfloat16,bfloat16", 0.0) / total if total else 0.0


def _modules(method, frozen: bool | None = None) -> list[nn.Module]:
    """The Flax modules ``method`` holds (inside its sub-Methods too); ``frozen``: only
    those inside (True) or outside (False) objects marked ``full_precision``."""
    found, seen = [], set()

    def walk(obj, inside):
        if id(obj) in seen:
            return
        seen.add(id(obj))
        if isinstance(obj, nn.Module):
            if frozen is None or frozen == inside:
                found.append(obj)
        elif isinstance(obj, (list, tuple)):
            for v in obj:
                walk(v, inside)
        elif isinstance(obj, dict):
            for v in obj.values():
                walk(v, inside)
        elif (type(obj).__module__ or "").startswith("gen_jax") and hasattr(obj, "__dict__"):
            for v in vars(obj).values():
                walk(v, inside or is_full_precision(obj))

    walk(method, False)
    return found


def _floats(tree) -> set[str]:
    return {str(x.dtype) for x in jax.tree.leaves(tree)
            if hasattr(x, "dtype") and jnp.issubdtype(x.dtype, jnp.floating)}


def test_every_registered_method_is_checked_here():
    # gen_jax's own Methods (test files register stand-ins, e.g. tests/test_runtime.py)
    real = {name for name in registry.available()
            if getattr(registry._FACTORIES[name], "__module__", "").startswith("gen_jax.")}
    assert set(CONFIG_OF) == real
    for method, name in CONFIG_OF.items():
        assert load_config(f"{CONFIGS / name}:smoke", **(
            {DEPENDS[method][0]: "unused"} if method in DEPENDS else {})).method == method


@pytest.mark.parametrize("method", sorted(CONFIG_OF))
def test_the_bfloat16_step_computes_in_bfloat16_and_returns_float32(method, workdirs):
    """Traced, not run: the matmuls and convolutions of the train step's networks are
    bfloat16 (outside them: float32 losses, fixed resamplings), frozen feature networks
    float32; the new state, the metrics and log_prob float32; under float32 no module is
    touched."""
    m32 = registry.build(_config(method, "float32", workdirs))
    assert all(module_precision(m) == "float32" for m in _modules(m32))
    cfg = _config(method, "bfloat16", workdirs)
    m = registry.build(cfg)
    if not _modules(m):  # a closed-form fit: nothing to trace
        assert method in NO_NETWORK
        return
    batch = next(make_train_iterator(cfg, cfg.seed))
    key = jax.random.key(0)
    state = jax.eval_shape(m.init, key, batch)
    assert _floats(state) <= {"float32"}  # parameters are created float32
    closed = jax.make_jaxpr(m.train_step, return_shape=True)(state, batch, key)
    jaxpr, (new_state, metrics) = closed[0].jaxpr, closed[1]
    policy, kept = network_work(matmul_work(jaxpr), m)
    assert kept <= {"float32,float32"}  # frozen feature networks stay float32
    assert all(module_precision(x) == "float32" for x in _modules(m, frozen=True))
    if method in NO_NETWORK:
        assert not policy and not _modules(m, frozen=False)
    else:
        assert bf16_share(policy) >= BF16_SHARE, (method, policy)
        assert {module_precision(x) for x in _modules(m, frozen=False)} == {"bfloat16"}
    assert _floats(new_state) <= {"float32"} and _floats(metrics) == {"float32"}, (method, metrics)
    if isinstance(m, registry.HasLogProb):
        assert jax.eval_shape(lambda s, x: m.log_prob(s, x, key), state, batch["x"]).dtype == jnp.float32


def perturbed(state, key, scale: float = 0.1):
    """``state`` with noise on every parameter (so zero-initialised output layers, as the
    diffusion denoisers', no longer hide the network from the loss)."""
    leaves, treedef = jax.tree_util.tree_flatten_with_path(state)
    out = []
    for i, (path, x) in enumerate(leaves):
        names = {getattr(k, "name", getattr(k, "key", None)) for k in path}
        if "params" in names and "opt_state" not in names and jnp.issubdtype(x.dtype, jnp.floating):
            noise = jax.random.normal(jax.random.fold_in(key, i), x.shape, x.dtype)
            x = x + scale * (jnp.std(x) + 0.1) * noise
        out.append(x)
    return jax.tree_util.tree_unflatten(treedef, out)


# A real bfloat16 step against the float32 step from the same state, batch and key.
# bfloat16 keeps 8 significant bits (unit roundoff 2^-9 ~ 2e-3): a batch-mean loss of a
# network of a few layers, each rounding its output, lands within a few roundoffs; 2e-2
# (10 roundoffs) holds every family with room (measured at most 7.5e-3 over 43 smoke
# configs) while a step computing something else (a wrong cast, a lost input) misses.
REL_TOL = 2e-2


@pytest.mark.parametrize("method", ["vae", "gan", "ddpm", "glow", "pixelcnn"])
def test_a_bfloat16_step_is_finite_close_to_float32_and_keeps_float32_state(method):
    c32, c16 = _config(method, "float32"), _config(method, "bfloat16")
    m32, m16 = registry.build(c32), registry.build(c16)
    batch = next(make_train_iterator(c32, c32.seed))
    key = jax.random.key(1)
    state = perturbed(jax.jit(m32.init)(key, batch), jax.random.key(2))
    new32, met32 = jax.jit(m32.train_step)(state, batch, key)
    new16, met16 = jax.jit(m16.train_step)(state, batch, key)
    l32, l16 = float(met32["loss"]), float(met16["loss"])
    assert np.isfinite(l16) and abs(l16 - l32) <= REL_TOL * abs(l32), (l32, l16)
    assert _floats(new16) == {"float32"} and _floats(met16) == {"float32"}
    assert all(np.isfinite(x).all() for x in jax.tree.leaves(new16) if jnp.issubdtype(x.dtype, jnp.floating))
    # the update moved the parameters, as float32 does
    moved = jax.tree.map(lambda a, b: float(jnp.abs(a - b).max()), new16, state)
    assert max(x for x in jax.tree.leaves(moved)) > 0


def test_a_bad_precision_fails_in_one_line_naming_the_valid_ones():
    with pytest.raises(ConfigError, match=r"runtime.precision='fp16' .*valid: float32, bfloat16$"):
        load_config(CONFIGS / "vae_digits.py", **{"runtime.precision": "fp16"})
    cfg = load_config(f"{CONFIGS / 'vae_digits.py'}:smoke").unlock()
    cfg.runtime.precision = "half"  # past load_config: registry.build checks it too
    with pytest.raises(ConfigError, match="runtime.precision='half'"):
        registry.build(cfg)


class _Norms(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool = True):
        h = nn.Dense(8)(x)
        h = nn.BatchNorm(use_running_average=not train, momentum=0.9)(h)
        h = nn.LayerNorm()(h)
        h = nn.GroupNorm(num_groups=2)(h[:, None, None, :])
        return h.reshape(h.shape[0], -1)


class _State(nn.Module):
    @nn.compact
    def __call__(self, x):
        kept = self.variable("batch_stats", "kept", lambda: jnp.full((3,), 1.0 + 2.0 ** -12))
        return nn.Dense(2)(x), kept.value


def test_only_parameters_are_cast_other_state_is_read_as_stored():
    """1 + 2^-12 is not a bfloat16: a collection other than "params" cast on the way in
    (batch statistics, spectral-norm vectors, EMA codebooks) would come back rounded."""
    net = _State()
    x = jnp.ones((4, 5))
    variables = net.init(jax.random.key(0), x)
    (y, kept), _ = with_precision(net, "bfloat16").apply(variables, x, mutable=["batch_stats"])
    assert y.dtype == kept.dtype == jnp.float32
    np.testing.assert_array_equal(kept, np.full((3,), 1.0 + 2.0 ** -12, np.float32))


def test_norm_statistics_are_float32_and_the_wrapped_module_is_its_own_class():
    net = _Norms()
    x = 3.0 + jax.random.normal(jax.random.key(0), (16, 5))
    variables = net.init(jax.random.key(1), x)  # init is untouched: float32
    bf = with_precision(net, "bfloat16")
    assert isinstance(bf, _Norms) and with_precision(bf, "float32") == net
    assert _floats(bf.init(jax.random.key(1), x)) == {"float32"}
    out32, new32 = net.apply(variables, x, mutable=["batch_stats"])
    out16, new16 = bf.apply(variables, x, mutable=["batch_stats"])
    assert out16.dtype == jnp.float32 and _floats(new16) == {"float32"}
    np.testing.assert_allclose(out16, out32, atol=0.1)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-2, atol=2e-3), new16, new32)
    # Flax's norms reduce a bfloat16 input in float32 (force_float32_reductions)
    jaxpr = jax.make_jaxpr(lambda v, x: bf.apply(v, x, mutable=["batch_stats"]))(variables, x).jaxpr
    reductions = [str(e.invars[0].aval.dtype) for e in jaxpr.eqns if e.primitive.name == "reduce_sum"]
    assert reductions and set(reductions) == {"float32"}
    assert {dtypes for _, dtypes, _ in matmul_work(jaxpr)} == {"bfloat16,bfloat16"}


def test_the_policy_reaches_modules_inside_sub_methods_and_spares_frozen_features():
    fanogan = registry.build(load_config(f"{CONFIGS / 'fanogan_brick.py'}:smoke",
                                         **{"runtime.precision": "bfloat16"}))
    assert module_precision(fanogan.gan.g_net) == module_precision(fanogan.encoder) == "bfloat16"
    fastflow = registry.build(load_config(f"{CONFIGS / 'fastflow_brick.py'}:smoke",
                                          **{"runtime.precision": "bfloat16"}))
    assert module_precision(fastflow.flow) == "bfloat16"
    assert module_precision(fastflow.extractor.net) == "float32"
    # back under float32, every module is its own class again (one switch: a sub-model
    # loaded from a bfloat16 workdir runs as the run that loads it says)
    apply_policy(fanogan, "float32")
    assert type(fanogan.gan.g_net).__dict__.get("_precision_base") is None
