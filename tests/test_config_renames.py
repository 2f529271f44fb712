"""Renamed config keys (gen_jax.config.RENAMED_KEYS): old workdirs' config.json, old
config files and old overrides (load_config and the command line) keep working."""

from __future__ import annotations

import json
import logging
import subprocess

import pytest
from conftest import CONFIGS, PYTHON, REPO, subprocess_env

from gen_jax import load_config
from gen_jax.config import METHOD_RENAMED_KEYS, RENAMED_KEYS, config_from_json, config_to_json, upgrade_config
from gen_jax.data import dataset_info
from gen_jax.errors import ConfigError
from gen_jax.flows import Flow

# The one rename across sections: the diffusion UNet's compute dtype became the runtime's
# mixed-precision policy of every family (gen_jax/nn/precision.py).
ACROSS_SECTIONS = {"model.dtype": "runtime.precision"}


def test_the_table_names_keys_of_the_same_section():
    pairs = [*RENAMED_KEYS.items(), *((old, new) for old, (new, _) in METHOD_RENAMED_KEYS.items())]
    for old, new in pairs:
        assert old != new
        assert old.rsplit(".", 1)[0] == new.rsplit(".", 1)[0] or ACROSS_SECTIONS.get(old) == new


def test_the_unets_old_dtype_is_the_runtimes_precision(caplog, tmp_path):
    from gen_jax import registry
    from gen_jax.nn.precision import module_precision

    cfg = load_config(CONFIGS / "ddpm_digits.py:smoke")
    old = json.loads(config_to_json(cfg))
    old["model"]["dtype"] = "bfloat16"  # a DDPM workdir written before the policy
    del old["runtime"]["precision"]
    loaded = config_from_json(json.dumps(old))
    assert loaded.runtime.precision == "bfloat16" and "dtype" not in loaded.model
    assert module_precision(registry.build(loaded).net) == "bfloat16"
    # an old override, with one warning naming the new key
    with caplog.at_level(logging.WARNING, logger="gen_jax"):
        cfg = load_config(CONFIGS / "edm_digits.py:smoke", **{"model.dtype": "bfloat16"})
    assert cfg.runtime.precision == "bfloat16" and "'runtime.precision'" in caplog.text
    # an old config file sets model.dtype on top of today's defaults (which hold
    # runtime.precision="float32"): its setting is the one kept
    path = tmp_path / "old_ddpm.py"
    path.write_text(
        "import importlib.util\n"
        f"spec = importlib.util.spec_from_file_location('d', {str(CONFIGS / 'ddpm_digits.py')!r})\n"
        "d = importlib.util.module_from_spec(spec); spec.loader.exec_module(d)\n"
        "def get_config():\n"
        "    config = d.get_config('smoke')\n"
        "    config.model.dtype = 'bfloat16'\n"
        "    return config\n")
    cfg = load_config(path)
    assert cfg.runtime.precision == "bfloat16" and "dtype" not in cfg.model


def test_a_key_renamed_in_one_family_keeps_its_meaning_in_the_others(caplog):
    """The autoencoders' layer sizes ``model.hidden`` (a tuple) are ``model.hidden_sizes``;
    ``model.hidden`` stays one width (an int) in the flows and the diffusion models."""
    vae = load_config(CONFIGS / "vae_digits.py:smoke")
    old = json.loads(config_to_json(vae))
    old["model"]["hidden"] = [64, 32]  # a VAE workdir written before the rename
    del old["model"]["hidden_sizes"]
    loaded = config_from_json(json.dumps(old))
    assert loaded.model.hidden_sizes == (64, 32) and "hidden" not in loaded.model
    from gen_jax import registry

    assert registry.build(loaded).net.hidden == (64, 32)  # the family reads it
    flow = load_config(CONFIGS / "realnvp_digits.py:smoke")  # a flow's config.json: untouched
    assert config_from_json(config_to_json(flow)).model.hidden == flow.model.hidden == 8
    with caplog.at_level(logging.WARNING, logger="gen_jax"):
        cfg = load_config(CONFIGS / "ae_digits.py", **{"model.hidden": (48,)})
    assert cfg.model.hidden_sizes == (48,) and "'model.hidden_sizes'" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="gen_jax"):
        assert load_config(CONFIGS / "nice_digits.py", **{"model.hidden": 48}).model.hidden == 48
    assert not caplog.records


def test_an_old_workdirs_config_json_loads_under_the_new_key():
    cfg = load_config(CONFIGS / "glow_digits.py:smoke")
    old = json.loads(config_to_json(cfg))
    old["model"]["num_steps"] = old["model"].pop("steps_per_level") + 1  # as written before the rename
    loaded = config_from_json(json.dumps(old))
    assert loaded.model.steps_per_level == cfg.model.steps_per_level + 1
    assert "num_steps" not in loaded.model and loaded.train.num_steps == cfg.train.num_steps
    assert loaded.is_locked
    Flow(loaded, dataset_info(loaded.data), "glow")  # the family reads it
    # a current config.json round-trips unchanged
    assert config_to_json(config_from_json(config_to_json(cfg))) == config_to_json(cfg)


def test_an_old_diffusion_workdir_names_its_sampler_under_sampler_name(caplog):
    cfg = load_config(CONFIGS / "ddpm_digits.py:smoke")
    old = json.loads(config_to_json(cfg))
    old["sampler"]["method"] = "ddim"  # as written before the rename
    del old["sampler"]["name"]
    loaded = config_from_json(json.dumps(old))
    assert loaded.sampler.name == "ddim" and "method" not in loaded.sampler
    from gen_jax import registry

    registry.build(loaded)  # the family reads it
    with caplog.at_level(logging.WARNING, logger="gen_jax"):
        cfg = load_config(CONFIGS / "edm_digits.py:smoke", **{"sampler.method": "euler"})
    assert cfg.sampler.name == "euler" and "'sampler.name'" in caplog.text


def test_an_old_override_is_accepted_with_one_warning_naming_the_new_key(caplog):
    with caplog.at_level(logging.WARNING, logger="gen_jax"):
        cfg = load_config(CONFIGS / "flowpp_digits.py:smoke", **{"model.num_steps": 3, "train.num_steps": 7})
    assert (cfg.model.steps_per_level, cfg.train.num_steps) == (3, 7)
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "'model.steps_per_level'" in warnings[0], warnings
    with caplog.at_level(logging.WARNING, logger="gen_jax"):
        caplog.clear()
        load_config(CONFIGS / "flowpp_digits.py:smoke", **{"model.steps_per_level": 3})
    assert not caplog.records  # the new name: no warning
    # a family without the key: the old name is an unknown key, as any other
    with pytest.raises(ConfigError, match="unknown config key 'model.num_steps'"):
        load_config(CONFIGS / "vae_digits.py", **{"model.num_steps": 3})


def test_an_old_config_file_loads_under_the_new_key(tmp_path):
    path = tmp_path / "old_glow.py"
    path.write_text(
        "import importlib.util\n"
        "import ml_collections\n"
        f"spec = importlib.util.spec_from_file_location('g', {str(CONFIGS / 'glow_digits.py')!r})\n"
        "g = importlib.util.module_from_spec(spec); spec.loader.exec_module(g)\n"
        "def get_config():\n"
        "    d = g.get_config('smoke').to_dict()\n"
        "    d['model']['num_steps'] = d['model'].pop('steps_per_level') + 1\n"
        "    return ml_collections.ConfigDict(d)\n")
    cfg = load_config(path)
    assert cfg.model.steps_per_level == 2 and "num_steps" not in cfg.model
    assert upgrade_config(cfg) is cfg  # nothing left to rename


def test_the_command_line_accepts_an_old_override_with_one_warning(tmp_path):
    # The override must get past absl's flag parsing (which knows only the new key);
    # --num=0 then stops the run before anything is built or written.
    proc = subprocess.run([PYTHON, "-m", "gen_jax", "--config=configs/glow_digits.py:smoke",
                           "--config.model.num_steps=2", f"--workdir={tmp_path / 'w'}", "--mode=sample",
                           "--num=0"], cwd=REPO, env=subprocess_env(), capture_output=True, text=True,
                          timeout=240)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 2, proc.stderr
    assert "model.num_steps" in lines[0] and "'model.steps_per_level'" in lines[0]
    assert "--num=0" in lines[1] and "bad flag" not in proc.stderr
