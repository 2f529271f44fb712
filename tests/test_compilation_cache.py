"""The persistent compilation cache: on by default in the user's cache directory, off by
config, a directory the user chose wins; a program loaded from it computes the same."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from jax.experimental.compilation_cache import compilation_cache as jax_cache

from gen_jax.compilation_cache import enable_compilation_cache
from gen_jax.defaults import get_config
from gen_jax.errors import ConfigError


@pytest.fixture
def no_cache_chosen(monkeypatch, tmp_path):
    """No cache directory chosen (the test session's is restored afterwards)."""
    before = jax.config.jax_compilation_cache_dir
    monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR", raising=False)
    monkeypatch.setenv("GEN_JAX_CACHE", str(tmp_path / "cache"))
    jax.config.update("jax_compilation_cache_dir", None)
    jax_cache.reset_cache()
    yield tmp_path / "cache" / "xla"
    jax.config.update("jax_compilation_cache_dir", before)
    jax_cache.reset_cache()


def test_on_by_default_in_the_user_cache_and_a_loaded_program_computes_the_same(no_cache_chosen):
    assert enable_compilation_cache(get_config()) == no_cache_chosen
    assert jax.config.jax_compilation_cache_dir == str(no_cache_chosen)

    def f(x):
        return jnp.tanh(x @ x.T).sum(0) * 3.0

    x = jnp.asarray(np.random.default_rng(0).standard_normal((8, 5)), jnp.float32)
    want = jax.jit(f)(x)  # compiled, written to the cache
    assert any(no_cache_chosen.iterdir())
    jax.clear_caches()
    got = jax.jit(f)(x)  # read back from disk
    np.testing.assert_array_equal(got, want)


def test_off_by_config_and_the_users_choice_wins(no_cache_chosen, monkeypatch, tmp_path):
    config = get_config()
    config.runtime.compilation_cache = False
    assert enable_compilation_cache(config) is None
    assert jax.config.jax_compilation_cache_dir is None
    with pytest.raises(ConfigError, match="runtime.compilation_cache"):
        enable_compilation_cache(ml_collections.ConfigDict({"runtime": {"compilation_cache": "yes"}}))
    monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", str(tmp_path / "mine"))
    assert enable_compilation_cache(get_config()) == tmp_path / "mine"
    assert jax.config.jax_compilation_cache_dir is None  # left to JAX, which reads the variable
