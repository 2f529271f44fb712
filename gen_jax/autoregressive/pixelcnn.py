"""PixelCNN and Gated PixelCNN Methods: exact likelihoods of discrete images.

Registered as "pixelcnn" and "gated_pixelcnn". The models see the data's
integer levels (``data.dequantize='none'``; the levels are recovered from the
scaled batch with the value range and ``DataInfo.num_levels``, or 2 levels for
binarized data), so ``log_prob`` is the exact log-probability of the discrete
image in nats and bits/dim compare directly with every other family.

p(x) = prod_{i, j} prod_c p(x_{i,j,c} | x_{<(i,j)}, x_{i,j,<c})   (raster, then R -> G -> B)

Sampling runs the network once per subpixel inside one ``lax.fori_loop``
(:func:`autoregressive_sample`), batched over the examples.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections

from gen_jax.autoregressive.heads import make_head
from gen_jax.autoregressive.networks import ARCHS
from gen_jax.data import DataInfo
from gen_jax.errors import ConfigError
from gen_jax.likelihood import bits_per_dim
from gen_jax.registry import register
from gen_jax.state import TrainState, make_optimizer
from gen_jax.steps import make_eval_step, make_train_step
from gen_jax.value_range import ValueRange


def autoregressive_sample(params_fn: Callable[[jax.Array], jax.Array], head: Any,
                          shape: tuple[int, int, int, int], rng: jax.Array) -> jax.Array:
    """Draws integer levels one subpixel at a time, in raster then channel order.

    Args:
      params_fn: levels (N, H, W, C) int32 -> distribution parameters
        (N, H, W, C, P); causal, so the parameters at a subpixel only depend on
        the levels already drawn.
      head: the output distribution (``sample(rng, params) -> levels``).
      shape: (N, H, W, C).
      rng: key; subpixel p uses ``fold_in(rng, p)``.

    Returns:
      (N, H, W, C) int32 levels.
    """
    n, h, w, c = shape

    def body(p, canvas):
        i, j, ch = p // (w * c), (p // c) % w, p % c
        out = params_fn(canvas)
        here = jax.lax.dynamic_slice(out, (0, i, j, ch, 0), (n, 1, 1, 1, out.shape[-1]))
        draw = head.sample(jax.random.fold_in(rng, p), here)
        return jax.lax.dynamic_update_slice(canvas, draw, (0, i, j, ch))

    return jax.lax.fori_loop(0, h * w * c, body, jnp.zeros(shape, jnp.int32))


def build_net(arch: str, model: ml_collections.ConfigDict, num_channels: int, num_params: int,
              num_classes: int):
    """The network named ``arch`` ("pixelcnn" or "gated") from ``config.model``."""
    if arch not in ARCHS:
        raise ConfigError(f"unknown architecture {arch!r}; known: {', '.join(ARCHS)}")
    kw = dict(num_channels=num_channels, num_params=num_params, features=model.features,
              num_layers=model.num_layers, first_kernel=model.first_kernel, kernel=model.kernel,
              head_features=model.head_features)
    if arch == "gated":
        kw["num_classes"] = num_classes
    elif num_classes:
        raise ConfigError("model.conditional=True needs the Gated PixelCNN (method 'gated_pixelcnn')")
    return ARCHS[arch](**kw)


class PixelCNN:
    """The (Gated) PixelCNN Method over discrete images (see gen_jax.registry.Method).

    ``config.model``: features, num_layers, first_kernel, kernel, head_features,
    head ("categorical" | "logistic_mixture"), num_mixtures, conditional.
    """

    def __init__(self, config: ml_collections.ConfigDict, info: DataInfo, arch: str):
        self.config = config
        m, d = config.model, config.data
        self.info = info
        if self.info.kind != "image":
            raise ConfigError(f"{config.method} models images; {self.info.name!r} is vector data")
        if d.dequantize != "none":
            raise ConfigError(f"{config.method} is a discrete model: set data.dequantize='none' "
                              f"(got {d.dequantize!r}); its log_prob is then exact")
        self.value_range = ValueRange.from_config(d, self.info)  # 2 levels when binarized
        self.num_levels = self.value_range.num_levels
        self.net_grid = ValueRange(-1.0, 1.0, self.num_levels)  # the levels as the network sees them
        self.head = make_head(m.head, self.num_levels, m.num_mixtures)
        self.num_classes = 0
        if m.conditional:
            if not self.info.num_classes:
                raise ConfigError(f"model.conditional=True but {self.info.name!r} has no labels")
            self.num_classes = self.info.num_classes
        self.net = build_net(arch, m, self.info.shape[-1], self.head.num_params, self.num_classes)
        self.tx = make_optimizer(config.optim, config.train.num_steps)

    # -- discrete levels <-> network inputs ------------------------------------

    def to_levels(self, x: jax.Array) -> jax.Array:
        """Scaled images -> integer levels 0..L-1 (the nearest)."""
        return self.value_range.levels(x).astype(jnp.int32)

    def from_levels(self, k: jax.Array) -> jax.Array:
        """Integer levels -> images in the data's value range, as the data pipeline scales them."""
        return self.value_range.from_levels(k)

    def net_input(self, k: jax.Array) -> jax.Array:
        """Levels centred to [-1, 1], the network's input."""
        return self.net_grid.from_levels(k)

    def _labels(self, batch_or_labels: Any, n: int) -> jax.Array | None:
        if not self.num_classes:
            return None
        y = batch_or_labels.get("y") if isinstance(batch_or_labels, dict) else batch_or_labels
        if y is None:
            raise ValueError("the class-conditional model needs labels (batch['y'])")
        return jnp.broadcast_to(jnp.asarray(y, jnp.int32), (n,))

    def dist_params(self, params: Any, k: jax.Array, labels: jax.Array | None = None) -> jax.Array:
        """Distribution parameters (N, H, W, C, P) for levels ``k`` (N, H, W, C)."""
        return self.net.apply({"params": params}, self.net_input(k), labels)

    def _log_prob_levels(self, params: Any, k: jax.Array, labels: jax.Array | None) -> jax.Array:
        lp = self.head.log_prob(self.dist_params(params, k, labels), k)
        return lp.reshape(k.shape[0], -1).sum(-1)

    # -- the Method contract ---------------------------------------------------

    def init(self, rng: jax.Array, example_batch: dict) -> TrainState:
        x = jnp.asarray(example_batch["x"])
        self.info.check_batch(x)
        k = self.to_levels(x)
        params = self.net.init(rng, self.net_input(k), self._labels(example_batch, len(x)))["params"]
        return TrainState.create(params, self.tx, self.config.train.ema_decay)

    def loss_fn(self, params: Any, model_state: Any, batch: dict, rng: jax.Array, train: bool):
        """The mean NLL of the batch's levels, nats per image (see gen_jax.steps for the
        signature); exact, so ``rng`` and ``train`` are unused."""
        k = self.to_levels(batch["x"])
        nll = -self._log_prob_levels(params, k, self._labels(batch, k.shape[0])).mean()
        return nll, ({"loss": nll, "nll_bpd": bits_per_dim(nll, self.info.dim)}, model_state)

    def train_step(self, state: TrainState, batch: dict, rng: jax.Array):
        return make_train_step(self.loss_fn)(state, batch, rng)

    def eval_step(self, state: TrainState, batch: dict, rng: jax.Array) -> dict:
        return make_eval_step(self.loss_fn)(state, batch, rng)

    def log_prob(self, state: TrainState, x: jax.Array, rng: jax.Array, *, num_samples: int = 1,
                 labels: jax.Array | None = None) -> jax.Array:
        """Exact log p(x) in nats per example on the discrete data scale
        (gen_jax.registry.HasLogProb). Exact, so ``rng`` and ``num_samples`` are unused.

        A conditional model given ``labels`` returns log p(x | y). Without labels
        it returns the exact marginal of the model with a uniform class prior,
        log (1/C) sum_y p(x | y), one network pass per class (``lax.map``, so
        memory does not grow with the number of classes).
        """
        k = self.to_levels(x)
        params = state.eval_params
        if not self.num_classes or labels is not None:
            return self._log_prob_levels(params, k, self._labels(labels, k.shape[0]))
        per_class = jax.lax.map(
            lambda y: self._log_prob_levels(params, k, jnp.full((k.shape[0],), y, jnp.int32)),
            jnp.arange(self.num_classes))
        return jax.nn.logsumexp(per_class, axis=0) - math.log(self.num_classes)

    def sample(self, state: TrainState, rng: jax.Array, num: int,
               labels: jax.Array | None = None) -> jax.Array:
        """``num`` images drawn pixel by pixel, in the data's value range.

        Args:
          labels: (num,) or scalar class labels of a conditional model; None
            cycles through the classes (0, 1, ..., C-1, 0, ...). Ignored by an
            unconditional model.
        """
        if self.num_classes and labels is None:
            labels = jnp.arange(num) % self.num_classes
        y = self._labels(labels, num)
        params = state.eval_params
        k = autoregressive_sample(lambda canvas: self.dist_params(params, canvas, y), self.head,
                                  (num, *self.info.shape), rng)
        return self.from_levels(k)


@register("pixelcnn")
def make_pixelcnn(config: ml_collections.ConfigDict, info: DataInfo) -> PixelCNN:
    """Factory registered as "pixelcnn" (masked convolutions, van den Oord et al., 2016)."""
    return PixelCNN(config, info, "pixelcnn")


@register("gated_pixelcnn")
def make_gated_pixelcnn(config: ml_collections.ConfigDict, info: DataInfo) -> PixelCNN:
    """Factory registered as "gated_pixelcnn" (vertical/horizontal stacks, optional class bias)."""
    return PixelCNN(config, info, "gated")
