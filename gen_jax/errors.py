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


class WorkdirError(GenJaxError, RuntimeError):
    """The workdir cannot be used: read-only, full, or held by another training process."""


class Interrupted(GenJaxError):
    """Training stopped on SIGTERM or SIGINT after saving a checkpoint; rerun to resume.

    Attributes:
      step: the step saved.
      signal_name: "SIGTERM" or "SIGINT".
    """

    def __init__(self, message: str, step: int = 0, signal_name: str = ""):
        super().__init__(message)
        self.step, self.signal_name = step, signal_name


# Exit statuses of ``python -m gen_jax`` (documented in the README).
EXIT_OK = 0
EXIT_BAD_INPUT = 2        # a bad flag, config, dataset, checkpoint or workdir: one line on stderr
EXIT_NONFINITE = 3        # training stopped on a non-finite loss or state
EXIT_INTERRUPTED = 75     # stopped by SIGTERM/SIGINT after saving (EX_TEMPFAIL): rerun to resume
