"""The Method contract and the name -> Method registry.

Every model family is reached through one protocol, so the runtime (train loop,
checkpointing, sharding, CLI, evaluation) is written once. See DESIGN.md.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable, Protocol, runtime_checkable

import jax
import ml_collections

from gen_jax.config import precision_choice
from gen_jax.errors import ConfigError
from gen_jax.nn.precision import apply_policy

# Family packages whose import registers their Methods. A new family adds itself here.
_FAMILY_MODULES = ("gen_jax.autoencoders", "gen_jax.classical", "gen_jax.autoregressive",
                   "gen_jax.gans", "gen_jax.flows", "gen_jax.diffusion", "gen_jax.anomaly")

_FACTORIES: dict[str, Callable[[ml_collections.ConfigDict, Any], "Method"]] = {}


@runtime_checkable
class Method(Protocol):
    """What every family provides. All four functions are pure: the runtime jits them.

    Optional capabilities are the typed protocols below (:class:`HasLogProb`,
    :class:`HasReconstruct`, :class:`HasLatent`, :class:`HasAnomalyScore`, and
    :class:`Fits` for closed-form fits), checked with ``isinstance``.
    """

    config: ml_collections.ConfigDict

    def init(self, rng: jax.Array, example_batch: dict) -> Any:
        """Returns a fresh TrainState for this batch structure."""

    def train_step(self, state: Any, batch: dict, rng: jax.Array) -> tuple[Any, dict]:
        """One outer iteration: (new state, scalar metrics incl. 'loss')."""

    def eval_step(self, state: Any, batch: dict, rng: jax.Array) -> dict:
        """Scalar metrics on one batch (averaged over its examples)."""

    def sample(self, state: Any, rng: jax.Array, num: int, **kw: Any) -> jax.Array:
        """``num`` samples in the data's value range (NHWC images or (N, D) vectors)."""


# -- optional capabilities: small typed protocols, checked with isinstance ----------


@runtime_checkable
class HasLogProb(Protocol):
    """``log_prob(state, x, rng, *, num_samples=1)``: log-likelihood in nats per example
    on the data's discrete scale, exact or a lower bound (``num_samples`` importance
    samples where the family's bound takes them; ignored where it is exact)."""

    def log_prob(self, state: Any, x: jax.Array, rng: jax.Array, *, num_samples: int = 1) -> jax.Array:
        ...


@runtime_checkable
class HasReconstruct(Protocol):
    """``reconstruct(state, x, rng)``: the model's reconstruction of ``x``, same shape."""

    def reconstruct(self, state: Any, x: jax.Array, rng: jax.Array) -> jax.Array:
        ...


@runtime_checkable
class Translates(Protocol):
    """Image-to-image Methods (pix2pix, CycleGAN): ``sample(state, rng, num, inputs=x)``
    translates the task inputs of data images ``x`` (N, H, W, C), tiled to ``num``; without
    ``inputs``, the few reference images kept in the state (for figures). Evaluation passes
    the validation images, so that its samples are as varied as the data."""

    def translate(self, state: Any, *args: Any, **kwargs: Any) -> jax.Array:
        ...

    def sample(self, state: Any, rng: jax.Array, num: int, inputs: jax.Array | None = None,
               **kwargs: Any) -> jax.Array:
        ...


@runtime_checkable
class HasLatent(Protocol):
    """``encode(state, x, rng) -> z`` and ``decode(state, z) -> x``: one convention for
    VAE / AE / VQ-VAE / flows / PCA (a VAE encodes to a draw of q(z|x) given a key)."""

    def encode(self, state: Any, x: jax.Array, rng: jax.Array) -> Any:
        ...

    def decode(self, state: Any, z: Any) -> jax.Array:
        ...


@runtime_checkable
class HasAnomalyScore(Protocol):
    """``anomaly_score(state, x, rng)``: one score per example, higher = more anomalous."""

    def anomaly_score(self, state: Any, x: jax.Array, rng: jax.Array) -> jax.Array:
        ...


@runtime_checkable
class HasAnomalyMap(Protocol):
    """``anomaly_map(state, x, rng)``: per-pixel scores (N, H, W) of NHWC images ``x``,
    higher = more anomalous (localization; :class:`HasAnomalyScore` is the image score)."""

    def anomaly_map(self, state: Any, x: jax.Array, rng: jax.Array) -> jax.Array:
        ...


@runtime_checkable
class HasStages(Protocol):
    """Training in stages, each with a program of its own (SinGAN's scales; ProGAN's
    resolutions): ``stage_of(step)`` is the stage of outer step ``step`` (a host int),
    and ``stage_train_step(stage)`` that stage's pure train step (same signature and
    result as ``train_step``). The runtime compiles one program per stage, when the
    stage is first reached, instead of one program holding every stage; ``train_step``
    stays the all-stage form (the stage taken from ``state.step``) for other callers.
    """

    def stage_of(self, step: int) -> int:
        ...

    def stage_train_step(self, stage: int) -> Callable[[Any, dict, jax.Array], tuple[Any, dict]]:
        ...


@runtime_checkable
class Fits(Protocol):
    """``fit(rng, x_train) -> state``: a state made from the whole training split, in
    place of ``init``: a model fitted once (closed form or EM; its train steps then leave
    it unchanged), or a data-dependent initialisation that the train steps go on from
    (latent diffusion's latent scale factor, from the training split's latents).

    The Method stays data-free: for a fresh run the runtime loads the training split
    (``gen_jax.data.load_split(config, "train")``, the iterator's preprocessing, shaped
    (N, *info.shape)) and calls ``fit`` in place of ``init``. ``fit`` is pure and
    traceable, so restoring a checkpoint needs only its shapes:
    ``jax.eval_shape(fit, rng, ShapeDtypeStruct(x_train))``, no data and no refit.
    """

    def fit(self, rng: jax.Array, x_train: jax.Array) -> Any:
        ...


def register(name: str) -> Callable:
    """Decorator registering ``factory(config, info) -> Method`` under ``name``."""

    def wrap(factory: Callable) -> Callable:
        if name in _FACTORIES and _FACTORIES[name] is not factory:
            raise ValueError(f"method {name!r} is registered twice")
        _FACTORIES[name] = factory
        return factory

    return wrap


def _import_families() -> None:
    for module in _FAMILY_MODULES:
        importlib.import_module(module)


def available() -> list[str]:
    """Names of all registered Methods."""
    _import_families()
    return sorted(_FACTORIES)


def build(config: ml_collections.ConfigDict, info: Any = None) -> Method:
    """Returns the Method named by ``config.method``, built from ``config``, its networks
    under the mixed-precision policy ``runtime.precision`` (gen_jax/nn/precision.py).

    Args:
      config: the experiment config.
      info: the :class:`~gen_jax.data.DataInfo` of ``config.data``, as the runtime
        computed it; None = computed here (a notebook convenience: it opens the
        dataset's training split once).

    Raises:
      ConfigError: unknown method name (the message lists the known ones), a bad
        ``runtime.precision``, or a family's own check of its config failed.
    """
    _import_families()
    name = config.method
    if name not in _FACTORIES:
        raise ConfigError(f"unknown method {name!r}; known methods: {', '.join(sorted(_FACTORIES))}")
    if info is None:
        from gen_jax.data import dataset_info  # the runtime passes it; data imports no family

        info = dataset_info(config.data)
    precision = precision_choice(config)
    try:
        method = _FACTORIES[name](config, info)
    except (AttributeError, KeyError) as e:
        missing = _missing_config_key(e)
        if missing is None:
            raise
        raise ConfigError(f"method {name!r} reads the config key {missing!r}, which this config "
                          "lacks (most often a model.* key): start from a config file of this "
                          "method (configs/*.py) or add the key") from None
    # One mixed-precision policy for every family (gen_jax/nn/precision.py): the modules
    # the Method holds compute in runtime.precision's dtype.
    return apply_policy(method, precision)


def _missing_config_key(e: BaseException) -> str | None:
    """The key a ConfigDict lookup failed on, if ``e`` is such a failure."""
    inner = e.args[0] if isinstance(e, AttributeError) and e.args else e
    if isinstance(inner, KeyError) and inner.args and isinstance(inner.args[0], str):
        return inner.args[0].strip("'\"")
    return None
