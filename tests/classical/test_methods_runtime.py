"""The classical Methods through the runtime: building one reads no data, the runtime
loads the training split and calls ``fit`` (the Fits protocol), and a restore (resume,
``load_trained``) rebuilds the state from shapes, without the split or a refit."""

from __future__ import annotations

import chex
import jax
import numpy as np
import pytest
from conftest import CONFIGS

import gen_jax.data as data_lib
import gen_jax.data.sources as sources_lib
from gen_jax import checkpoint as ckpt_lib
from gen_jax import load_config, registry
from gen_jax.classical import fit_gaussian, fit_gmm, fit_pca
from gen_jax.classical.methods import ClassicalState
from gen_jax.errors import ConfigError
from gen_jax.train import train_and_evaluate

# (config, overrides) small enough to train in seconds.
_CASES = {
    "gaussian_digits": {},
    "gmm_digits": {"model.num_components": 3, "model.num_restarts": 2, "model.max_iters": 20},
    "pca_digits": {"model.num_components": 10},
    # Batches of 4 < K = 8 points: only the whole split can make (or shape) the state.
    "gmm_ring8": {"data.num_train": 2000, "data.num_eval": 500, "model.num_restarts": 2,
                  "data.batch_size": 4},
}
_FAST = {"train.num_steps": 2, "train.log_every": 1, "train.eval_every": 0,
         "train.checkpoint_every": 1, "train.num_grid_samples": 4, "data.batch_size": 16,
         "data.eval_batch_size": 64}


def _config(name: str, **extra):
    return load_config(CONFIGS / f"{name}.py", **{**_FAST, **_CASES[name], **extra})


def _no_data(monkeypatch):
    """Every way to open a split now raises."""
    def refuse(*args, **kwargs):
        raise AssertionError("a dataset was opened")

    monkeypatch.setattr(data_lib, "get_source", refuse)
    monkeypatch.setattr(sources_lib, "get_source", refuse)
    monkeypatch.setattr(data_lib, "load_split", refuse)


def _reference_fit(config, x_train, key):
    """The model fitted directly with the functional API."""
    x, m = x_train.reshape(len(x_train), -1), config.model
    if config.method == "gaussian":
        return fit_gaussian(x, m.covariance_type, float(m.reg_covar))
    if config.method == "pca":
        return fit_pca(x, m.num_components, m.method)
    return fit_gmm(x, m.num_components, key, m.covariance_type, max_iters=m.max_iters,
                   tol=float(m.tol), num_restarts=m.num_restarts, reg_covar=float(m.reg_covar))


@pytest.mark.parametrize("name", list(_CASES))
def test_building_a_classical_method_reads_no_data(name, monkeypatch):
    config = _config(name)
    info = data_lib.dataset_info(config.data)
    _no_data(monkeypatch)
    method = registry.build(config, info)
    assert isinstance(method, registry.Fits) and isinstance(method, registry.Method)


@pytest.mark.parametrize("name", list(_CASES))
def test_train_split_spec_is_the_loaded_split_shape(name):
    config = _config(name)
    x, _ = data_lib.load_split(config, "train")
    spec = ckpt_lib.train_split_spec(config, ckpt_lib.example_batch(config))
    assert (spec.shape, spec.dtype) == (x.shape, x.dtype)


@pytest.mark.parametrize("name", ["pca_digits", "gmm_ring8"])
def test_runtime_fits_the_train_split_and_restores_without_refitting(name, tmp_path, monkeypatch):
    config = _config(name)
    state = train_and_evaluate(config, tmp_path)
    x_train, _ = data_lib.load_split(config, "train")
    init_key = jax.random.split(jax.random.key(config.seed), 7)[0]  # train.setup's "init" purpose
    assert isinstance(state, ClassicalState) and int(state.step) == 2
    chex.assert_trees_all_close(state.params, _reference_fit(config, x_train, init_key),
                                rtol=1e-5, atol=1e-6)

    # Resuming and loading a trained workdir restore the fitted state from shapes:
    # no training split is loaded and nothing is fitted again.
    load_split = data_lib.load_split

    def no_train_split(config, split):
        assert split != "train", "the training split was loaded to restore"
        return load_split(config, split)  # the figures' reference points

    monkeypatch.setattr(data_lib, "load_split", no_train_split)
    resumed = train_and_evaluate(_config(name, **{"train.num_steps": 3}), tmp_path)
    assert int(resumed.step) == 3
    chex.assert_trees_all_equal(resumed.params, state.params)
    method, loaded, _ = ckpt_lib.load_trained(tmp_path)
    assert isinstance(method, registry.Fits) and int(loaded.step) == 3
    chex.assert_trees_all_equal(loaded.params, state.params)


def test_fit_checks_the_number_of_points_and_init_fits_its_batch():
    config = _config("gmm_digits", **{"model.num_components": 50})
    method = registry.build(config)  # 50 components: fine until there are fewer points
    x_train, _ = data_lib.load_split(config, "train")
    with pytest.raises(ConfigError, match=r"num_components must be in \[1, 40\]"):
        method.fit(jax.random.key(0), x_train[:40])
    with pytest.raises(ConfigError, match="num_components"):  # so is a restore's abstract state
        jax.eval_shape(method.fit, jax.random.key(0), jax.ShapeDtypeStruct((40, 8, 8, 1), np.float32))
    pca = registry.build(_config("pca_digits"))
    with pytest.raises(ConfigError, match=r"num_components must be in \[1, 7\]"):
        pca.fit(jax.random.key(0), x_train[:8])
    batch = x_train[:100]
    chex.assert_trees_all_close(pca.init(jax.random.key(0), {"x": batch}).params,
                                fit_pca(batch.reshape(100, -1), 10), rtol=1e-5, atol=1e-6)


def test_bench_of_an_untrained_workdir_fits_the_train_split(tmp_path):
    from gen_jax.evaluate import benchmark

    result = benchmark(_config("gmm_ring8"), tmp_path, repeats=2)  # K = 8 > a batch of 4
    assert result["method"] == "gmm" and result["train_step_ms"] > 0
