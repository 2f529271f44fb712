"""JAX's persistent compilation cache, on by default for users.

A second run of the same config (or a notebook restarted) loads its compiled
train/eval/sample programs from disk instead of compiling them again. The cache
lives in ``$GEN_JAX_CACHE/xla`` (else ``$XDG_CACHE_HOME/gen_jax/xla``, else
``~/.cache/gen_jax/xla``, beside the other caches of gen_jax);
``runtime.compilation_cache=False`` in the config turns it off. A cache the user
chose wins: ``JAX_COMPILATION_CACHE_DIR`` in the environment (the test suite sets
one per session) or ``jax_compilation_cache_dir`` already set in this process is
left as it is, and so are JAX's other cache settings given in the environment.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import jax
import ml_collections
from jax.experimental.compilation_cache import compilation_cache as jax_cache

from gen_jax.errors import ConfigError

log = logging.getLogger(__name__)

# Programs that compile faster than this are not written (JAX's default is 1 s): a
# small model's train and eval steps compile in a fraction of a second on CPU,
# and the cache is what makes its second start fast.
MIN_COMPILE_SECS = 0.2


def default_dir() -> Path:
    """``$GEN_JAX_CACHE/xla``, else ``$XDG_CACHE_HOME/gen_jax/xla``, else ``~/.cache/gen_jax/xla``."""
    if os.environ.get("GEN_JAX_CACHE"):
        return Path(os.environ["GEN_JAX_CACHE"]).expanduser() / "xla"
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "gen_jax" / "xla"


def enable_compilation_cache(config: ml_collections.ConfigDict) -> Path | None:
    """Turns on JAX's persistent compilation cache unless the config says not to or the
    user already chose a cache directory (call before the first compilation).

    Args:
      config: the run's config; ``config.runtime.compilation_cache`` (default True when
        the config predates the key) switches the cache.

    Returns:
      The cache directory now in use (the user's, when they chose one), or None when
      no cache is used.

    Raises:
      ConfigError: ``runtime.compilation_cache`` is not a bool.
    """
    wanted = True
    if "runtime" in config and "compilation_cache" in config.runtime:
        wanted = config.runtime.compilation_cache
        if not isinstance(wanted, bool):
            raise ConfigError(f"runtime.compilation_cache must be True or False, got {wanted!r}")
    chosen = os.environ.get("JAX_COMPILATION_CACHE_DIR") or jax.config.jax_compilation_cache_dir
    if chosen:
        return Path(chosen)
    if not wanted:
        return None
    path = default_dir()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:  # a read-only home: run without the cache rather than fail
        log.warning("compilation cache off: cannot create %s (%s)", path, e.strerror)
        return None
    jax.config.update("jax_compilation_cache_dir", str(path))
    if "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS" not in os.environ:
        jax.config.update("jax_persistent_cache_min_compile_time_secs", MIN_COMPILE_SECS)
    # JAX decides once, at the first compilation, whether a cache is used: a process that
    # compiled something before (a notebook) re-decides at its next compilation.
    jax_cache.reset_cache()
    return path
