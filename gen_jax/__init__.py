"""gen_jax: train, sample and evaluate classic generative models in JAX/Flax.

Public API (stable): ``gen_jax.load_config``, ``gen_jax.registry.build``,
``gen_jax.train.train_and_evaluate``, ``gen_jax.train.restore``,
``gen_jax.data.load_split``.
"""

from gen_jax.config import load_config
from gen_jax.errors import CheckpointError, ConfigError, DataError, GenJaxError, NonFiniteError

__version__ = "0.1.0"
__all__ = ["CheckpointError", "ConfigError", "DataError", "GenJaxError", "NonFiniteError",
           "load_config"]
