"""Every config in configs/ loads and trains a few steps; the tfds path under mock data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tensorflow_datasets as tfds
from conftest import CONFIGS

from gen_jax import load_config, train
from gen_jax.config import config_from_json, config_to_json
from gen_jax.data import get_source, load_split
from gen_jax.data.tfds_source import TfdsSource
from gen_jax.errors import ConfigError, DataError

ALL_CONFIGS = sorted(p.name for p in CONFIGS.glob("*.py") if p.name != "default.py")


def test_there_are_configs():
    assert "vae_digits.py" in ALL_CONFIGS and "vae_mnist.py" in ALL_CONFIGS


def smoke_config(name: str, tmp_path):
    """The config's ``smoke`` variant (``configs/<name>:smoke``: a few steps, a tiny model).

    A config that needs another trained workdir (the prior over VQ-VAE codes, latent
    diffusion's autoencoder) gets one trained here from that config's own smoke variant,
    unchanged: the programs are those of its own smoke test (the compilation cache's).
    """
    overrides = {}
    for dependant, key, base in DEPENDANTS:
        if name == dependant:
            overrides[key] = str(_smoke_workdir(base, tmp_path / base.removesuffix(".py")))
    if name == "consistency_moons.py":  # a teacher workdir: the EDM smoke model, random weights
        overrides["model.teacher_workdir"] = str(_random_workdir("edm_moons.py", tmp_path / "edm"))
    return load_config(f"{CONFIGS / name}:smoke", **overrides)


# Configs whose smoke run loads another config's trained smoke workdir: (dependant, the
# override naming that workdir, the config it loads). Each pair runs on one worker (an
# xdist group, base first), so the base's own smoke test leaves the workdir the dependant
# loads; trained again only when the dependant runs alone (e.g. selected with -k).
DEPENDANTS = [("vqvae_prior_digits.py", "model.vqvae_workdir", "vqvae_digits.py"),
              ("ldm_digits.py", "model.ae_workdir", "vae_digits.py")]
_SMOKE_WORKDIRS: dict[str, Path] = {}  # config name -> its finished smoke run, this worker


def _smoke_workdir(name: str, workdir: Path) -> Path:
    """Config ``name``'s smoke run, trained into ``workdir`` unless this worker has one."""
    if name not in _SMOKE_WORKDIRS:
        train.train_and_evaluate(load_config(f"{CONFIGS / name}:smoke"), workdir)
        _SMOKE_WORKDIRS[name] = workdir
    return _SMOKE_WORKDIRS[name]


def _random_workdir(name: str, workdir):
    """A workdir holding config ``name``'s smoke state with random weights at step 0 (a
    loadable trained model for a dependant's smoke test, without compiling its training)."""
    import jax

    from gen_jax import registry
    from gen_jax.checkpoint import Checkpointer
    from gen_jax.data import make_train_iterator

    cfg = load_config(f"{CONFIGS / name}:smoke")
    it = make_train_iterator(cfg, cfg.seed)
    shapes = jax.eval_shape(registry.build(cfg).init, jax.random.key(0), next(it))
    rng = np.random.default_rng(7)
    state = jax.tree.map(lambda s: (0.3 * rng.normal(size=s.shape)).astype(s.dtype)
                         if np.issubdtype(s.dtype, np.floating) else np.zeros(s.shape, s.dtype), shapes)
    workdir.mkdir()
    (workdir / "config.json").write_text(config_to_json(cfg))
    ckpt = Checkpointer(workdir, async_save=False)
    ckpt.save(0, state, it.get_state(), cfg, force=True)
    ckpt.close()
    return workdir


def test_every_config_has_a_smoke_variant_and_no_sys_path_edits():
    for name in ALL_CONFIGS:
        text = (CONFIGS / name).read_text()
        assert "def get_config(arg=None)" in text and "sys.path" not in text, name
        assert load_config(f"{CONFIGS / name}:smoke").train.num_steps == 3, name
    with pytest.raises(ConfigError, match=r"unknown config variant option 'smok'.*valid: smoke"):
        load_config(f"{CONFIGS / 'vae_digits.py'}:smok")


# Configs that differ from another config of their Method only in data, sizes or an
# option the tracer reaches: they are traced (train.dry_run: every program the run
# compiles, on abstract values) instead of trained, since a smoke run's cost is
# compiling (about 5 s each; the suite has a time budget). Every Method still trains
# through at least one config, and every kind of data through one: 8x8 digits, tfds
# 28x28 and 32x32 RGB under mock data, 2-D points, the bundled images (checked below).
TRACED = {"cgan_digits.py", "dcgan_cifar10.py", "dcgan_mnist.py", "gan_toy2d.py",
          "cyclegan_horse2zebra.py", "ddpm_cfg_digits.py", "edm_moons.py", "flow_matching_moons.py",
          "flow_toy2d.py", "flowpp_cifar10.py", "gated_pixelcnn_mnist.py", "glow_mnist.py",
          "gmm_ring8.py", "pixelcnn_cifar10.py", "vae_mnist.py", "vae_moons.py",
          "progan_faces.py", "biggan_patches.py", "sr3_digits.py", "stylegan2_faces.py",
          "fastflow_brick.py"}
# Traced here because their family's tests train their smoke variant through the runtime.
TRAINED_BY = {"progan_faces.py": "tests/gans/test_progan.py",
              "biggan_patches.py": "tests/gans/test_biggan.py",
              "sr3_digits.py": "tests/diffusion/test_sr3.py",
              "stylegan2_faces.py": "tests/gans/test_stylegan2.py",
              "fastflow_brick.py": "tests/anomaly/test_feature_flow.py"}
TRAINED = [name for name in ALL_CONFIGS if name not in TRACED]


def test_every_method_and_kind_of_data_trains_through_some_config():
    def key(name):
        cfg = load_config(f"{CONFIGS / name}:smoke")
        return cfg.method, cfg.data.name

    assert TRACED <= set(ALL_CONFIGS)
    for name, path in TRAINED_BY.items():
        text = (CONFIGS.parent / path).read_text()
        assert name in text and ":smoke" in text and "train.train_and_evaluate(" in text, path
    trained = {key(name) for name in [*TRAINED, *TRAINED_BY]}
    assert {m for m, _ in map(key, TRACED)} <= {m for m, _ in trained}
    assert {"digits", "tfds:mnist", "tfds:cifar10", "moons", "faces100", "image:brick",
            "defects:brick"} <= {d for _, d in trained}


def _round_trips(cfg):
    """A config survives the JSON round trip the workdir uses."""
    return json.loads(config_to_json(config_from_json(config_to_json(cfg)))) == json.loads(
        config_to_json(cfg))


@pytest.mark.parametrize("name", sorted(TRACED))
def test_config_traces_every_program(name, tmp_path):
    from gen_jax.data import dataset_info

    cfg = smoke_config(name, tmp_path)
    assert _round_trips(cfg)
    with tfds.testing.mock_data(num_examples=64):
        shapes = train.dry_run(cfg)
        info = dataset_info(cfg.data)
    steps = [v for k, v in shapes.items() if k.split("/")[0] == "train_step"]  # one per stage
    assert steps and all(s["loss"].shape == () and s["finite"].dtype == bool for s in steps)
    # (CycleGAN's translations come at its model's resolution: the data pooled 16x)
    want = (16, 16, 3) if name == "cyclegan_horse2zebra.py" else tuple(info.shape)
    assert shapes["sample"].shape == (cfg.train.num_grid_samples, *want)
    assert not (tmp_path / "run").exists()


# The anomaly configs' one-class digits variants (experiments/one_class_digits.py with
# data.classes=(k,); experiments/results/anomaly_gan/ and anomaly_digits/): every program
# traces on one class of 8x8 digits: the feature methods whose tracing is quick with the
# frozen Inception the table used (":digits"), the others with tiny networks (":digits,smoke";
# about 10 s in all).
ONE_CLASS_DIGITS = ([f"{name}_brick.py:digits,smoke"
                     for name in ("ganomaly", "fanogan", "draem", "differnet")]
                    + [f"{name}_brick.py:digits" for name in ("padim", "feature_knn", "fastflow")])


@pytest.mark.parametrize("variant", ONE_CLASS_DIGITS)
def test_one_class_digits_variants_trace_on_one_digit_class(variant):
    cfg = load_config(f"{CONFIGS}/{variant}", **{"data.classes": (3,)})
    shapes = train.dry_run(cfg)
    _, y = load_split(cfg, "train")
    assert cfg.data.name == "digits" and set(np.unique(y)) == {3}
    assert shapes["sample"].shape == (cfg.train.num_grid_samples, 8, 8, 1)
    if not variant.endswith("smoke"):  # the protocol's 600 steps; the closed-form fits take one
        assert cfg.train.num_steps == (1 if cfg.method in ("padim", "feature_knn") else 600)
        assert cfg.features.input_size == 75  # the frozen Inception's smallest input


def _trained_params():
    """TRAINED, each dependant and its base in one xdist group, the base first."""
    group = {n: f"smoke:{base}" for dep, _, base in DEPENDANTS for n in (dep, base)}
    first = {base for _, _, base in DEPENDANTS}
    order = sorted(TRAINED, key=lambda n: n not in first)  # stable: bases first
    return [pytest.param(n, marks=pytest.mark.xdist_group(group[n])) if n in group else n
            for n in order]


@pytest.mark.parametrize("name", _trained_params())
def test_config_loads_and_trains_three_steps(name, tmp_path):
    cfg = smoke_config(name, tmp_path)
    assert _round_trips(cfg)
    if cfg.data.name.startswith("tfds:"):
        with tfds.testing.mock_data(num_examples=64):
            state = train.train_and_evaluate(cfg, tmp_path / "run")
    else:
        state = train.train_and_evaluate(cfg, tmp_path / "run")
    assert int(state.step) == 3
    records = [json.loads(line) for line in open(tmp_path / "run" / "metrics.jsonl")]
    assert [r["step"] for r in records if r["split"] == "train"] == [1, 2, 3]
    assert all(np.isfinite(r["loss"]) for r in records)
    assert list((tmp_path / "run" / "samples").glob("step_000003.png"))
    if name in {base for _, _, base in DEPENDANTS}:  # a checked run: a dependant may load it
        _SMOKE_WORKDIRS.setdefault(name, tmp_path / "run")


def test_tfds_source_reads_mock_mnist_as_256_level_images():
    cfg = load_config(CONFIGS / "vae_mnist.py")
    with tfds.testing.mock_data(num_examples=50):
        train_src, val_src = get_source(cfg.data, "train"), get_source(cfg.data, "val")
        assert isinstance(get_source(cfg.data, "test"), TfdsSource)
        assert (len(train_src), len(val_src)) == (45, 5)  # val = last 10% of train
        info = train_src.info
        assert (info.shape, info.num_levels, info.num_classes) == ((28, 28, 1), 256, 10)
        x_raw, y = train_src.get(np.arange(4))
        assert x_raw.dtype == np.uint8 and y.dtype == np.int32
        x, _ = load_split(cfg, "test")
        assert x.shape == (50, 28, 28, 1) and 0 <= x.min() and x.max() < 1  # dequantized
        np.testing.assert_array_equal(np.floor(x[:4] * 256), get_source(cfg.data, "test").get(
            np.arange(4))[0])
        sub = load_config(CONFIGS / "vae_mnist.py", **{"data.classes": (3,)})
        _, y3 = load_split(sub, "test")
        assert set(np.unique(y3)) <= {3}


def test_tfds_dataset_not_on_disk_says_how_to_prepare_it(tmp_path):
    cfg = load_config(CONFIGS / "vae_mnist.py", **{"data.data_dir": str(tmp_path)})
    with pytest.raises(DataError, match=r"tfds build mnist --file_format=array_record"):
        get_source(cfg.data, "train")
    bad = load_config(CONFIGS / "vae_mnist.py", **{"data.name": "tfds:not_a_dataset_xyz"})
    with pytest.raises(DataError, match="no dataset named"):
        get_source(bad.data, "train")


def test_load_config_overrides_and_errors():
    cfg = load_config(CONFIGS / "vae_digits.py", **{"train.num_steps": 10, "model.channels": [4, 8]})
    assert cfg.train.num_steps == 10 and cfg.model.channels == (4, 8)
    with pytest.raises(ConfigError, match="valid keys in model: activation, arch"):
        load_config(CONFIGS / "vae_digits.py", **{"model.latentdim": 3})
    with pytest.raises(ConfigError, match="wrong type for config key 'train.num_steps'"):
        load_config(CONFIGS / "vae_digits.py", **{"train.num_steps": "many"})
    with pytest.raises(ConfigError, match="value_range"):
        load_config(CONFIGS / "vae_digits.py", **{"data.value_range": (1.0, 0.0)})
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(CONFIGS / "nope.py")
    with pytest.raises(ConfigError, match="nonfinite"):
        load_config(CONFIGS / "vae_digits.py", **{"train.nonfinite": "ignore"})


def test_public_api_is_reachable_from_a_plain_import():
    import gen_jax

    assert callable(gen_jax.registry.build) and callable(gen_jax.train.train_and_evaluate)
    assert callable(gen_jax.train.restore) and callable(gen_jax.data.load_split)
    assert callable(gen_jax.load_config) and "vae" in gen_jax.registry.available()


def test_a_config_missing_a_family_key_is_one_config_error():
    import ml_collections

    from gen_jax import registry

    d = load_config(CONFIGS / "vae_digits.py").to_dict()
    del d["model"]["beta"]
    with pytest.raises(ConfigError, match="method 'vae' reads the config key 'beta', which this"):
        registry.build(ml_collections.ConfigDict(d))


def test_smoke_shrinks_a_config_in_place():
    from gen_jax.defaults import SMOKE, get_config, smoke

    cfg = smoke(get_config(), **{"train.num_steps": 5})
    assert cfg.train.num_steps == 5 and cfg.data.batch_size == SMOKE["data.batch_size"]
