"""The classical models as runtime Methods: "gaussian", "gmm" and "pca".

These models have no gradient training. They are :class:`~gen_jax.registry.Fits`
Methods: ``fit(rng, x_train)`` fits them to the whole training split in closed
form (Gaussian, PCA) or by EM (GMM), and the fitted parameters never change
afterwards. The Methods read no data: building one needs only the config and the
``DataInfo``; for a fresh run the runtime loads the training split once
(``load_split(config, "train")``, the iterator's preprocessing) and calls the
jitted ``fit`` with it; a restore traces ``fit`` on the split's shape only.
``init(rng, batch)`` (the Method contract) fits to the batch it is given.
``train_step`` only advances the step counter and reports the negative
log-likelihood of its batch, so ``train.num_steps`` steps are one pass of
training-set metrics (set it to about one epoch).

Likelihoods follow the project's convention: images must be uniformly
dequantized, and ``log_prob`` adds ``discrete_log_prob_offset`` to the density
of the continuous data, so it is a bound on the log-probability of the discrete
image in nats; metrics report it as ``nll`` (nats) and ``nll_bpd`` (bits/dim).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
from flax import struct

from gen_jax.classical.gaussian import COVARIANCE_TYPES, fit_gaussian, gaussian_log_prob, gaussian_sample
from gen_jax.classical.gmm import fit_gmm, gmm_log_prob, gmm_sample
from gen_jax.classical.pca import (
    PCA_METHODS,
    fit_pca,
    pca_project,
    pca_reconstruct,
    ppca_log_prob,
    ppca_sample,
)
from gen_jax.data import DataInfo, discrete_log_prob_offset
from gen_jax.errors import ConfigError
from gen_jax.likelihood import bits_per_dim
from gen_jax.registry import register
from gen_jax.value_range import ValueRange


class ClassicalState(struct.PyTreeNode):
    """The runtime's state for a fitted model: a step counter and the fitted parameters."""

    step: jax.Array
    params: Any


class _FittedModel:
    """Shared plumbing; subclasses define ``_fit``, ``_log_density`` and ``_draw``."""

    # The config.model keys a subclass reads.
    model_keys: tuple[str, ...] = ()

    def __init__(self, config: ml_collections.ConfigDict, info: DataInfo):
        self.config = config
        name = config.method
        missing = [k for k in self.model_keys if k not in config.model]
        if missing:
            raise ConfigError(f"method {name!r} needs config.model keys {list(self.model_keys)}; "
                              f"missing: {missing}")
        self.info = info
        offset = discrete_log_prob_offset(self.info, config.data)
        if offset is None:
            raise ConfigError(f"method {name!r} is a continuous density: on images set "
                              "data.dequantize='uniform' (and no binarization) so its likelihood "
                              "bounds that of the discrete data")
        self.offset = offset
        self.value_range = ValueRange.from_config(config.data, info)
        self.check(config.model)

    # -- what a model defines ------------------------------------------------

    def check(self, model: ml_collections.ConfigDict) -> None:
        """Raises ConfigError for model settings this data cannot support (no data read)."""

    def check_num_points(self, n: int) -> None:
        """Raises ConfigError for model settings ``n`` training points cannot support."""

    def _fit(self, rng: jax.Array, x: jax.Array) -> Any:
        raise NotImplementedError

    def _log_density(self, params: Any, x: jax.Array) -> jax.Array:
        raise NotImplementedError

    def _draw(self, params: Any, rng: jax.Array, num: int, **kw: Any) -> jax.Array:
        raise NotImplementedError

    # -- the Method contract -------------------------------------------------

    def fit(self, rng: jax.Array, x_train: jax.Array) -> ClassicalState:
        """The fresh state: the model fitted (closed form or EM) to ``x_train``, the
        whole training split (N, *info.shape) as the runtime hands it over. Pure and
        traceable (the runtime jits it, and ``eval_shape``s it to restore)."""
        self.info.check_batch(x_train)
        self.check_num_points(x_train.shape[0])
        x = jnp.reshape(x_train, (x_train.shape[0], -1))
        return ClassicalState(step=jnp.zeros((), jnp.int32), params=self._fit(rng, x))

    def init(self, rng: jax.Array, example_batch: dict) -> ClassicalState:
        """Fits the model to ``example_batch["x"]``. The runtime never calls this: it
        calls :meth:`fit` with the whole training split."""
        return self.fit(rng, example_batch["x"])

    def _metrics(self, params: Any, x: jax.Array) -> dict:
        nll = -jnp.mean(self._log_density(params, x.reshape(x.shape[0], -1)) + self.offset)
        return {"loss": nll, "nll": nll, "nll_bpd": bits_per_dim(nll, self.info.dim)}

    def train_step(self, state: ClassicalState, batch: dict, rng: jax.Array):
        """Parameters are fixed after ``init``: reports the batch's NLL and counts the step."""
        return state.replace(step=state.step + 1), self._metrics(state.params, batch["x"])

    def eval_step(self, state: ClassicalState, batch: dict, rng: jax.Array) -> dict:
        return self._metrics(state.params, batch["x"])

    def log_prob(self, state: ClassicalState, x: jax.Array, rng: jax.Array | None = None, *,
                 num_samples: int = 1) -> jax.Array:
        """Exact log-density plus the dequantization offset: nats per example on the
        data's discrete scale (a lower bound there for dequantized images). ``rng`` and
        ``num_samples`` are unused (the density is exact)."""
        return self._log_density(state.params, x.reshape(x.shape[0], -1)) + self.offset

    def sample(self, state: ClassicalState, rng: jax.Array, num: int, **kw: Any) -> jax.Array:
        """``num`` draws, shaped like the data; images are clipped to the value range."""
        x = self._draw(state.params, rng, num, **kw).reshape(num, *self.info.shape)
        return self._clip(x)

    def _clip(self, x: jax.Array) -> jax.Array:
        return self.value_range.clip(x) if self.info.kind == "image" else x


def _check_choice(value: Any, choices: tuple, key: str) -> None:
    if value not in choices:
        raise ConfigError(f"{key} must be one of {choices}, got {value!r}")


class Gaussian(_FittedModel):
    """One Gaussian fitted by maximum likelihood."""

    model_keys = ("covariance_type", "reg_covar")

    def check(self, model):
        _check_choice(model.covariance_type, COVARIANCE_TYPES, "model.covariance_type")

    def _fit(self, rng, x):
        m = self.config.model
        return fit_gaussian(x, m.covariance_type, float(m.reg_covar))

    def _log_density(self, params, x):
        return gaussian_log_prob(params, x)

    def _draw(self, params, rng, num):
        return gaussian_sample(params, rng, num)


class GMM(_FittedModel):
    """Gaussian mixture fitted by EM with k-means++ restarts (see classical/gmm.py)."""

    model_keys = ("num_components", "covariance_type", "max_iters", "tol", "num_restarts",
                  "reg_covar")

    def check(self, model):
        _check_choice(model.covariance_type, COVARIANCE_TYPES, "model.covariance_type")
        if model.num_components < 1:
            raise ConfigError(f"model.num_components must be >= 1, got {model.num_components}")
        if model.max_iters < 1 or model.num_restarts < 1:
            raise ConfigError("model.max_iters and model.num_restarts must be >= 1")

    def check_num_points(self, n):
        k = self.config.model.num_components
        if not 1 <= k <= n:
            raise ConfigError(f"model.num_components must be in [1, {n}] (training points), got {k}")

    def _fit(self, rng, x):
        m = self.config.model
        return fit_gmm(x, m.num_components, rng, m.covariance_type, max_iters=m.max_iters,
                       tol=float(m.tol), num_restarts=m.num_restarts, reg_covar=float(m.reg_covar))

    def _log_density(self, params, x):
        return gmm_log_prob(params, x)

    def _draw(self, params, rng, num):
        return gmm_sample(params, rng, num)


class PCA(_FittedModel):
    """PCA with probabilistic PCA (Tipping & Bishop, 1999) as its density.

    ``sample(..., noise=None)``: images show the mean of p(x | z) (no isotropic
    noise, the convention for image grids); vector data get full draws.
    """

    model_keys = ("num_components", "method")

    def check(self, model):
        _check_choice(model.method, PCA_METHODS, "model.method")
        d = self.info.dim
        if not 1 <= model.num_components <= d - 1:
            raise ConfigError(f"model.num_components must be in [1, {d - 1}] (fewer than the {d} "
                              "dimensions, so the PPCA noise variance is positive), got "
                              f"{model.num_components}")

    def check_num_points(self, n):
        if not self.config.model.num_components <= n - 1:
            raise ConfigError(f"model.num_components must be in [1, {n - 1}] (fewer than the {n} "
                              f"training points), got {self.config.model.num_components}")

    def _fit(self, rng, x):
        return fit_pca(x, self.config.model.num_components, self.config.model.method)

    def _log_density(self, params, x):
        return ppca_log_prob(params, x)

    def _draw(self, params, rng, num, noise: bool | None = None):
        return ppca_sample(params, rng, num, self.info.kind != "image" if noise is None else noise)

    def encode(self, state: ClassicalState, x: jax.Array) -> jax.Array:
        """Principal-component coefficients (N, M)."""
        return pca_project(state.params, x.reshape(x.shape[0], -1))

    def decode(self, state: ClassicalState, z: jax.Array) -> jax.Array:
        """Data-space points from coefficients, shaped like the data."""
        return self._clip(pca_reconstruct(state.params, z).reshape(z.shape[0], *self.info.shape))

    def reconstruct(self, state: ClassicalState, x: jax.Array, rng: jax.Array | None = None) -> jax.Array:
        """Projection onto the principal subspace, back in data space."""
        return self.decode(state, self.encode(state, x))


@register("gaussian")
def make_gaussian(config: ml_collections.ConfigDict, info: DataInfo) -> Gaussian:
    """Factory registered as "gaussian"."""
    return Gaussian(config, info)


@register("gmm")
def make_gmm(config: ml_collections.ConfigDict, info: DataInfo) -> GMM:
    """Factory registered as "gmm"."""
    return GMM(config, info)


@register("pca")
def make_pca(config: ml_collections.ConfigDict, info: DataInfo) -> PCA:
    """Factory registered as "pca"."""
    return PCA(config, info)
