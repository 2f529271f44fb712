"""Every config in configs/ loads and trains a few steps; the tfds path under mock data."""

from __future__ import annotations

import json

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

    A config that needs another trained workdir (the prior over VQ-VAE codes) gets
    one trained here from that config's own smoke variant.
    """
    overrides = {}
    if name == "vqvae_prior_digits.py":
        vq = tmp_path / "vqvae"
        train.train_and_evaluate(load_config(f"{CONFIGS / 'vqvae_digits.py'}:smoke",
                                             **{"train.num_steps": 2}), vq)
        overrides["model.vqvae_workdir"] = str(vq)
    return load_config(f"{CONFIGS / name}:smoke", **overrides)


def test_every_config_has_a_smoke_variant_and_no_sys_path_edits():
    for name in ALL_CONFIGS:
        text = (CONFIGS / name).read_text()
        assert "def get_config(arg=None)" in text and "sys.path" not in text, name
        assert load_config(f"{CONFIGS / name}:smoke").train.num_steps == 3, name
    with pytest.raises(ConfigError, match=r"unknown config variant option 'smok'.*valid: smoke"):
        load_config(f"{CONFIGS / 'vae_digits.py'}:smok")


@pytest.mark.parametrize("name", ALL_CONFIGS)
def test_config_loads_and_trains_three_steps(name, tmp_path):
    cfg = smoke_config(name, tmp_path)
    # A config survives the JSON round trip the workdir uses.
    assert json.loads(config_to_json(config_from_json(config_to_json(cfg)))) == json.loads(
        config_to_json(cfg))
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
