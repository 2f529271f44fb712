"""The exceptions gen_jax raises at its boundaries.

Each names what was wrong and how to fix it, so a user never has to read a
traceback from inside XLA. All derive from :class:`GenJaxError`.
"""


class GenJaxError(Exception):
    """Base class of every error gen_jax raises on purpose."""


class ConfigError(GenJaxError, ValueError):
    """A config key is unknown, has the wrong type, or values do not fit."""


class DataError(GenJaxError, ValueError):
    """A dataset is unknown, not prepared on disk, or has the wrong shape/range."""


class CheckpointError(GenJaxError, RuntimeError):
    """A checkpoint is missing, unreadable, or does not match the config."""


class NonFiniteError(GenJaxError, FloatingPointError):
    """The training loss became NaN or infinite."""
