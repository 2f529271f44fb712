"""The normalizing-flow Methods "nice", "realnvp", "glow" and "flowpp".

Exact likelihood by the change of variables, log p(y) = log N(f(y); 0, I) +
log|det df/dy|, reported (like every likelihood in gen_jax) in nats per example
on the DISCRETE data scale:

- continuous vector data: log p(y) itself;
- images with ``data.dequantize="uniform"``: log p(y) + discrete_log_prob_offset,
  a single-sample estimate of the uniform-dequantization bound (Theis et al., 2016);
- Flow++ with ``model.dequantize="variational"`` (and ``data.dequantize="none"``,
  so the model sees the discrete levels k): the variational bound
  log P(k) >= E_q[log p(y) - log q(u|k)] + D log((hi - lo) / L), with
  y = lo + (hi - lo)(k + u) / L (Ho et al., 2019, eq. 12); ``log_prob`` with
  ``num_samples`` K > 1 gives the tighter importance-weighted bound.

The training loss is the negative of that in bits/dim.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from gen_jax.data import DataInfo, bits_per_dim, discrete_log_prob_offset
from gen_jax.errors import ConfigError
from gen_jax.flows.architectures import (
    BUILDERS,
    FlowModel,
    VariationalDequantizer,
    check_model_config,
    num_params,
)
from gen_jax.likelihood import dequantization_offset
from gen_jax.registry import register
from gen_jax.state import TrainState, make_optimizer
from gen_jax.steps import make_eval_step, make_train_step
from gen_jax.value_range import ValueRange

Array = jax.Array


def discrete_offset(info, data: ml_collections.ConfigDict, variational: bool) -> float:
    """What turns a continuous log-density into a discrete log-probability bound (nats).

    Args:
      info: the dataset's DataInfo.
      data: the ``config.data`` section.
      variational: whether the model dequantizes itself (then the data must be
        the plain discrete levels).

    Returns:
      The offset; 0.0 for continuous vector data.

    Raises:
      ConfigError: the preprocessing gives no discrete likelihood.
    """
    if info.kind == "vector":
        if variational:
            raise ConfigError(f"{info.name!r} is continuous 2-D data: it has nothing to dequantize; "
                              "set model.dequantize='uniform'")
        return 0.0
    if data.binarize != "none":
        raise ConfigError("flows model dequantized grey levels: set data.binarize='none'")
    if variational:
        if data.dequantize != "none":
            raise ConfigError("model.dequantize='variational' dequantizes inside the model: set "
                              "data.dequantize='none' so the model sees the discrete levels")
        return dequantization_offset(info, data)
    offset = discrete_log_prob_offset(info, data)
    if offset is None:
        raise ConfigError("a flow on images needs data.dequantize='uniform' (or, for flowpp, "
                          "model.dequantize='variational' with data.dequantize='none')")
    return offset


def discrete_bits_per_dim(log_density: Array, offset: float, dim: int) -> Array:
    """Negative log-likelihood in bits/dim of the discrete data from a continuous
    log-density of the preprocessed example (nats) and :func:`discrete_offset`."""
    return bits_per_dim(-(log_density + offset), dim)


class Flow:
    """A flow Method (see gen_jax.registry.Method); ``arch`` is one of architectures.ARCHS."""

    def __init__(self, config: ml_collections.ConfigDict, info: DataInfo, arch: str):
        self.config, self.arch = config, arch
        m = config.model
        check_model_config(arch, m)
        self.info = info
        if self.info.kind not in ("image", "vector"):
            raise ConfigError(f"flows model images or vectors, not {self.info.kind!r} data")
        dq = m.get("dequantize", "uniform")
        if dq not in ("uniform", "variational"):
            raise ConfigError(f"model.dequantize must be 'uniform' or 'variational', got {dq!r}")
        self.variational = dq == "variational"
        self.offset = discrete_offset(self.info, config.data, self.variational)
        self.value_range = ValueRange.from_config(config.data, self.info)
        shape = tuple(self.info.shape)
        heads = m.get("num_heads", 0) if arch == "flowpp" and len(shape) == 3 else 0
        if heads and m.hidden % heads:
            raise ConfigError(f"model.hidden={m.hidden} must be divisible by model.num_heads={heads} "
                              "(the attention splits the channels into heads)")
        flow = BUILDERS[arch](m, shape, (self.value_range.lo, self.value_range.hi))
        deq = (VariationalDequantizer(m.hidden, m.num_blocks, m.dequant_steps, m.num_components)
               if self.variational else None)
        self.model = FlowModel(flow, deq)
        self.latent_shape = (self.info.dim,) if arch == "nice" else shape
        self.tx = make_optimizer(config.optim, config.train.num_steps)

    # -- likelihood --------------------------------------------------------

    def _log_density_fn(self, x: Array, eps: Array | None):
        """fn(module) -> the per-example log-density term (nats) of ``x``: log p(y) for
        given data, log p(y) - log q(u|k) with u from noise ``eps`` when variational."""

        def fn(mod):
            if not self.variational:
                return mod.log_density(x)[0]
            k = self.value_range.levels(x)
            u, log_q = mod.dequantize(eps, self.value_range.level_to_unit(k))
            y = self.value_range.dequantized(k, u)
            return mod.log_density(y)[0] - log_q

        return fn

    @staticmethod
    def _variables(params: Any, model_state: Any) -> dict:
        """The Flax variables: trained ``params`` plus the constant collections (the
        LU permutations and signs of the 1x1 convolutions) kept in ``model_state``."""
        return {"params": params, **(model_state or {})}

    def _bound(self, params: Any, x: Array, rng: Array, model_state: Any = None) -> Array:
        """Per-example log-likelihood (bound) in nats on the discrete data scale."""
        eps = jax.random.normal(rng, x.shape) if self.variational else None
        return self.model.apply(self._variables(params, model_state),
                                method=self._log_density_fn(x, eps)) + self.offset

    def _metrics(self, log_lik: Array) -> dict:
        nll = -jnp.mean(log_lik)
        bpd = bits_per_dim(nll, self.info.dim)
        return {"loss": bpd, "nll": nll, "bpd": bpd}

    # -- the Method contract -----------------------------------------------

    def init(self, rng: Array, example_batch: dict) -> TrainState:
        """Parameters from a real batch: actnorm layers initialise on the data reaching them."""
        x = jnp.asarray(example_batch["x"])
        self.info.check_batch(x)
        r_params, r_noise = jax.random.split(rng)
        eps = jax.random.normal(r_noise, x.shape) if self.variational else None
        variables = dict(self.model.init(r_params, method=self._log_density_fn(x, eps)))
        params = variables.pop("params")
        # Non-trained collections ("constants": LU permutations and signs) stay out of
        # the optimizer's reach, so weight decay cannot change them.
        return TrainState.create(params, self.tx, self.config.train.ema_decay, model_state=variables)

    def loss_fn(self, params: Any, model_state: Any, batch: dict, rng: Array, train: bool):
        """The negative log-likelihood (bound) in nats (see gen_jax.steps for the signature);
        ``model_state`` holds the constant collections and is returned unchanged."""
        metrics = self._metrics(self._bound(params, batch["x"], rng, model_state))
        return metrics["loss"], (metrics, model_state)

    def train_step(self, state: TrainState, batch: dict, rng: Array) -> tuple[TrainState, dict]:
        return make_train_step(self.loss_fn)(state, batch, rng)

    def eval_step(self, state: TrainState, batch: dict, rng: Array) -> dict:
        return make_eval_step(self.loss_fn)(state, batch, rng)

    def sample(self, state: TrainState, rng: Array, num: int, temperature: float = 1.0) -> Array:
        """Inverts z ~ N(0, temperature^2 I) (Glow's reduced-temperature sampling).

        Returns:
          (num, ...) samples in the data's value range; for a variationally
          dequantized model, snapped to the discrete levels like the data.
        """
        z = temperature * jax.random.normal(rng, (num, *self.latent_shape))
        return self.decode(state, z)

    # -- optional extras ---------------------------------------------------

    def log_prob(self, state: TrainState, x: Array, rng: Array, *, num_samples: int = 1) -> Array:
        """log P(x) in nats per example on the discrete data scale.

        Exact for vector data; for uniformly dequantized images, the density of the
        given dequantized x plus the offset; for variational dequantization, the
        importance-weighted bound log (1/K) sum_k p(y_k) / q(u_k|x) with
        K = ``num_samples`` draws (K = 1: the variational bound), in one lax.scan.
        """
        params, consts = state.eval_params, state.model_state
        if not self.variational:
            return self._bound(params, x, rng, consts)

        def body(acc, key):
            return jnp.logaddexp(acc, self._bound(params, x, key, consts)), None

        lse, _ = jax.lax.scan(body, jnp.full((x.shape[0],), -jnp.inf), jax.random.split(rng, num_samples))
        return lse - math.log(num_samples)

    def encode(self, state: TrainState, x: Array) -> Array:
        """x -> z (the latent has the data's shape; NICE: flat). Variationally
        dequantized models encode the centre of each pixel's bin."""
        if self.variational:
            x = self.value_range.dequantized(self.value_range.levels(x), 0.5)
        return self.model.apply(self._variables(state.eval_params, state.model_state), x)[0]

    def decode(self, state: TrainState, z: Array) -> Array:
        """z -> x in the data's value range (the inverse of :meth:`encode`)."""
        y = self.model.apply(self._variables(state.eval_params, state.model_state), z, reverse=True)[0]
        if self.info.kind != "image":
            return y
        y = self.value_range.clip(y)
        if self.variational:  # back from the model's dequantized bins to the data's levels
            y = self.value_range.from_levels(self.value_range.dequantized_levels(y))
        return y

    def interpolate(self, state: TrainState, x_a: Array, x_b: Array, num: int = 8) -> Array:
        """Decodes ``num`` evenly spaced points on the line between the latents of two
        examples (Glow's attribute-free latent interpolation); (num, ...) outputs."""
        shape = tuple(self.info.shape)
        za = self.encode(state, jnp.reshape(x_a, (1, *shape)))
        zb = self.encode(state, jnp.reshape(x_b, (1, *shape)))
        t = jnp.linspace(0.0, 1.0, num).reshape(num, *([1] * len(self.latent_shape)))
        return self.decode(state, (1 - t) * za + t * zb)

    def num_params(self, state: TrainState) -> int:
        """Number of trained parameter entries of the model (flow and dequantizer)."""
        return num_params(state.params)


@register("nice")
def make_nice(config: ml_collections.ConfigDict, info: DataInfo) -> Flow:
    """NICE (Dinh et al., 2015)."""
    return Flow(config, info, "nice")


@register("realnvp")
def make_realnvp(config: ml_collections.ConfigDict, info: DataInfo) -> Flow:
    """RealNVP (Dinh et al., 2017)."""
    return Flow(config, info, "realnvp")


@register("glow")
def make_glow(config: ml_collections.ConfigDict, info: DataInfo) -> Flow:
    """Glow (Kingma & Dhariwal, 2018)."""
    return Flow(config, info, "glow")


@register("flowpp")
def make_flowpp(config: ml_collections.ConfigDict, info: DataInfo) -> Flow:
    """Flow++ (Ho et al., 2019)."""
    return Flow(config, info, "flowpp")


__all__ = ["BUILDERS", "Flow", "discrete_bits_per_dim", "discrete_offset"]
