"""Every config in configs/ loads and trains a few steps; the tfds path under mock data."""

from __future__ import annotations

import importlib.util
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
SMOKE = {"train.num_steps": 3, "train.log_every": 1, "train.eval_every": 0,
         "train.checkpoint_every": 0, "data.batch_size": 16, "data.eval_batch_size": 64,
         "train.num_grid_samples": 4, "eval.max_batches": 1, "eval.log_prob_samples": 4}


def test_there_are_configs():
    assert "vae_digits.py" in ALL_CONFIGS and "vae_mnist.py" in ALL_CONFIGS


def smoke_overrides(name: str, tmp_path) -> dict:
    """SMOKE plus the config file's own optional ``TEST_OVERRIDES``.

    A config whose model is large (a CIFAR-10 UNet, say) shrinks it there, so the
    smoke run checks that the config is consistent without paying for its size.
    ``TEST_OVERRIDES`` is a dict, or a function of a scratch directory returning
    one (a config that needs another trained workdir, like a prior over VQ-VAE
    codes, prepares a tiny one there).
    """
    spec = importlib.util.spec_from_file_location(f"_cfg_{name[:-3]}", CONFIGS / name)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    extra = getattr(module, "TEST_OVERRIDES", {})
    if callable(extra):
        scratch = tmp_path / "prepare"
        scratch.mkdir()
        extra = extra(scratch)
    return {**SMOKE, **extra}


@pytest.mark.parametrize("name", ALL_CONFIGS)
def test_config_loads_and_trains_three_steps(name, tmp_path):
    cfg = load_config(CONFIGS / name, **smoke_overrides(name, tmp_path))
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
