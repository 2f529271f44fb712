"""gen_jax: train, sample and evaluate classic generative models in JAX/Flax.

Public API (stable): ``gen_jax.load_config``, ``gen_jax.registry.build``,
``gen_jax.train.train_and_evaluate``, ``gen_jax.train.restore``,
``gen_jax.data.load_split``.
"""

import importlib

from gen_jax.config import load_config
from gen_jax.errors import CheckpointError, ConfigError, DataError, GenJaxError, NonFiniteError

__version__ = "0.1.0"
__all__ = ["CheckpointError", "ConfigError", "DataError", "GenJaxError", "NonFiniteError",
           "load_config"]

# Submodules reachable as attributes after a plain `import gen_jax`
# (gen_jax.registry.build, gen_jax.train.restore, ...), imported on first use.
_SUBMODULES = ("checkpoint", "config", "data", "evaluate", "metrics", "nn", "parallel", "registry",
               "state", "train", "viz")


def __getattr__(name: str):
    if name in _SUBMODULES:
        return importlib.import_module(f"gen_jax.{name}")
    raise AttributeError(f"module 'gen_jax' has no attribute {name!r}")
