"""The GAN Method: generator and discriminator sub-states, ``k`` discriminator steps per
generator step in one compiled ``train_step``, generator EMA, and the objective chosen
by ``config.gan.objective`` (see gans/losses.py): minimax, nonsaturating, lsgan, wgan
(weight clipping; RMSProp in its configs, as in the paper), wgan_gp, hinge (with
optional spectral normalization in D). Options: one-sided label smoothing, PacGAN
packing (``model.pack`` samples per D input, Lin et al., 2018), class-conditional G
and D (``model.conditional``; label concatenation, Mirza & Osindero, 2014, or a
projection discriminator, Miyato & Koyama, 2018).

Networks: MLPs for vector data, DCGAN (Radford et al., 2016) for images.

Batches: the runtime's batch of B examples is split into ``gan.d_steps`` chunks of
B / d_steps, one fresh chunk of real data per D step; the G step then draws a batch
of the same size (with the last chunk's labels, when conditional).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
from flax import struct

from gen_jax.data import DataInfo
from gen_jax.errors import ConfigError
from gen_jax.gans import networks
from gen_jax.gans.losses import get_losses, gradient_penalty
from gen_jax.registry import register
from gen_jax.state import TrainState, make_optimizer


class GANState(struct.PyTreeNode):
    """Outer step count and one TrainState per network (each with its own optimizer
    and update count: after n outer steps, ``g.step == n`` and ``d.step == k n``)."""

    step: jax.Array
    g: TrainState
    d: TrainState


class TranslationState(GANState):
    """A translation GAN's state (pix2pix, CycleGAN): ``GANState`` plus ``inputs``, the
    fixed reference images that ``sample`` translates when the caller passes none. They
    are the first (up to NUM_REFERENCE_INPUTS) images of the batch given to ``init`` (the
    runtime's first training batch), as data images like the ``inputs`` a caller passes,
    and they are checkpointed with the networks, so the figures of a run, resumed or not,
    always translate the same images."""

    inputs: jax.Array


# Source images kept in a TranslationState: enough for a figure grid, few enough to be cheap.
NUM_REFERENCE_INPUTS = 64


def tile_to(x: jax.Array, num: int) -> jax.Array:
    """The first ``num`` rows of ``x`` repeated as often as needed (``num`` may exceed len(x))."""
    reps = -(-num // x.shape[0])
    return jnp.tile(x, (reps,) + (1,) * (x.ndim - 1))[:num]


def d_optimizer(config: ml_collections.ConfigDict, num_updates: int):
    """The discriminator's optimizer: ``config.d_optim`` when the config has it, else
    ``config.optim`` (the generator's)."""
    return make_optimizer(config.d_optim if "d_optim" in config else config.optim, num_updates)


def apply_g(net, ts: TrainState, params: Any, *args, rngs: dict | None = None) -> jax.Array:
    """A generator's output; normalization uses the batch's statistics (nothing is kept)."""
    out, _ = net.apply({"params": params, **(ts.model_state or {})}, *args, rngs=rngs,
                       mutable=["batch_stats"])
    return out


def apply_d(net, params: Any, model_state: dict, *args, update: bool = False):
    """(D output, model_state with spectral-norm vectors advanced when ``update``)."""
    mutable = ["batch_stats", "spectral"] if update else ["batch_stats"]
    out, new = net.apply({"params": params, **model_state}, *args, update=update, mutable=mutable)
    if update and "spectral" in new:
        model_state = {**model_state, "spectral": new["spectral"]}
    return out, model_state


def split_variables(variables: dict) -> tuple[Any, dict]:
    """(params, the other collections) of a freshly initialized module."""
    variables = dict(variables)
    return variables.pop("params"), variables


def clip_weights(params: Any, c: float) -> Any:
    """WGAN weight clipping (Arjovsky et al., 2017): every weight into [-c, c]."""
    return jax.tree.map(lambda w: jnp.clip(w, -c, c), params)


def pack(x: jax.Array, m: int) -> jax.Array:
    """PacGAN packing (Lin et al., 2018): m consecutive examples become one D input,
    concatenated along the last axis: (B, ..., C) -> (B / m, ..., m C)."""
    if m == 1:
        return x
    b, rest = x.shape[0], x.shape[1:]
    x = jnp.moveaxis(x.reshape(b // m, m, *rest), 1, -2)
    return x.reshape(b // m, *rest[:-1], m * rest[-1])


class GAN:
    """The GAN Method (see gen_jax.registry.Method and the module docstring)."""

    def __init__(self, config: ml_collections.ConfigDict, info: DataInfo):
        self.config = config
        m, g = config.model, config.gan
        self.info = info
        self.objective = g.objective
        self.d_loss_fn, self.g_loss_fn = get_losses(g.objective, g.label_smoothing, tuple(g.lsgan_abc))
        self.k, self.pack = int(g.d_steps), int(m.pack)
        if self.k < 1 or self.pack < 1:
            raise ConfigError(f"gan.d_steps and model.pack must be >= 1, got {self.k}, {self.pack}")
        if config.data.batch_size % (self.k * self.pack):
            raise ConfigError(f"data.batch_size={config.data.batch_size} must be a multiple of "
                              f"gan.d_steps * model.pack = {self.k * self.pack} (one chunk per D step)")
        if g.objective == "wgan_gp" and m.d_norm == "batch":
            raise ConfigError("wgan_gp penalizes per-example gradients: batch normalization in D "
                              "couples examples; use model.d_norm='layer' or 'none'")
        self.num_classes = 0
        if m.conditional:
            if not self.info.num_classes:
                raise ConfigError(f"model.conditional needs labelled data; {self.info.name!r} has none")
            if self.pack > 1:
                raise ConfigError("model.pack > 1 is not supported with model.conditional")
            self.num_classes = self.info.num_classes
        for key in ("g_norm", "d_norm"):
            if m[key] not in networks.NORMS:
                raise ConfigError(f"model.{key}={m[key]!r}; known: {', '.join(networks.NORMS)}")
        is_image = self.info.kind == "image"
        vr = tuple(config.data.value_range) if is_image else None
        if m.arch == "mlp":
            self.g_net = networks.MLPGenerator(tuple(self.info.shape), tuple(m.g_hidden), m.g_activation,
                                               self.num_classes, vr, m.g_norm)
            self.d_net = networks.MLPDiscriminator(tuple(m.d_hidden), m.d_activation, m.spectral_norm,
                                                   self.num_classes, m.projection)
        elif m.arch == "dcgan":
            if not is_image:
                raise ConfigError(f"model.arch='dcgan' needs image data; {self.info.name!r} is vector data")
            self.g_net = networks.DCGANGenerator(tuple(self.info.shape), tuple(m.g_channels), m.upsample,
                                                 m.g_norm, self.num_classes, vr)
            self.d_net = networks.DCGANDiscriminator(tuple(m.d_channels), m.d_norm, m.spectral_norm,
                                                     self.num_classes, m.projection)
        else:
            raise ConfigError(f"model.arch must be 'mlp' or 'dcgan', got {m.arch!r}")
        # The k D steps as straight-line code (True) or a loop (False): same results.
        self.unroll_d_steps = True
        self.g_tx = make_optimizer(config.optim, config.train.num_steps)
        self.d_tx = d_optimizer(config, config.train.num_steps * self.k)

    # -- pieces --------------------------------------------------------------

    def _z(self, rng: jax.Array, n: int) -> jax.Array:
        return jax.random.normal(rng, (n, self.config.model.latent_dim))

    def _labels(self, batch_y: jax.Array | None) -> jax.Array | None:
        return batch_y if self.num_classes else None

    def _d(self, params, model_state, x, y, update=False):
        return apply_d(self.d_net, params, model_state, pack(x, self.pack), y, update=update)

    def d_update(self, state: GANState, x: jax.Array, y: jax.Array | None, rng: jax.Array):
        """One discriminator update on real ``x`` against fresh generated samples.

        Returns (state with only ``d`` changed, metrics).
        """
        rz, rgp = jax.random.split(rng)
        y = self._labels(y)
        fake = jax.lax.stop_gradient(apply_g(self.g_net, state.g, state.g.params, self._z(rz, len(x)), y))
        d, gan = state.d, self.config.gan

        def loss_fn(params):
            real_out, ms = self._d(params, d.model_state, x, y, update=True)
            fake_out, _ = self._d(params, ms, fake, y)
            loss = self.d_loss_fn(real_out, fake_out)
            gp = jnp.zeros(())
            if self.objective == "wgan_gp":
                gp = gradient_penalty(lambda xx: self.d_net.apply(
                    {"params": params, **ms}, xx, y, mutable=["batch_stats"])[0],
                    pack(x, self.pack), pack(fake, self.pack), rgp)
                loss = loss + gan.gp_weight * gp
            return loss, ({"d_loss": loss, "d_real": real_out.mean(), "d_fake": fake_out.mean(),
                           "gp": gp}, ms)

        grads, (metrics, ms) = jax.grad(loss_fn, has_aux=True)(d.params)
        d = d.apply_gradients(grads, model_state=ms)
        if self.objective == "wgan":
            d = d.replace(params=clip_weights(d.params, gan.clip))
        return state.replace(d=d), metrics

    def g_update(self, state: GANState, y: jax.Array | None, rng: jax.Array, n: int):
        """One generator update on ``n`` fresh samples (labels ``y`` when conditional).

        Returns (state with only ``g`` changed, metrics).
        """
        y = self._labels(y)
        z = self._z(rng, n)
        d = state.d

        def loss_fn(params):
            fake = apply_g(self.g_net, state.g, params, z, y)
            out, _ = self._d(d.params, d.model_state, fake, y)
            return self.g_loss_fn(out)

        loss, grads = jax.value_and_grad(loss_fn)(state.g.params)
        return state.replace(g=state.g.apply_gradients(grads)), {"g_loss": loss}

    # -- the Method contract -------------------------------------------------

    def init(self, rng: jax.Array, example_batch: dict) -> GANState:
        x = jnp.asarray(example_batch["x"])
        self.info.check_batch(x)
        n = self.pack
        rg, rd = jax.random.split(rng)
        y = jnp.zeros((n,), jnp.int32) if self.num_classes else None
        g_params, g_rest = split_variables(self.g_net.init(rg, self._z(rg, n), y))
        d_params, d_rest = split_variables(self.d_net.init(rd, pack(x[:n], n), y))
        g = TrainState.create(g_params, self.g_tx, self.config.train.ema_decay, g_rest)
        d = TrainState.create(d_params, self.d_tx, 0.0, d_rest)
        return GANState(step=jnp.zeros((), jnp.int32), g=g, d=d)

    def train_step(self, state: GANState, batch: dict, rng: jax.Array):
        """``gan.d_steps`` D updates (lax.scan over chunks of the batch, unrolled unless
        ``unroll_d_steps`` is False), then one G update.

        The keys are ``split(rng, d_steps + 1)``: one per D step, the last for G.
        """
        x, y = batch["x"], batch.get("y")
        n = x.shape[0] // self.k
        xs = x.reshape(self.k, n, *x.shape[1:])
        ys = None if y is None or not self.num_classes else y.reshape(self.k, n)
        keys = jax.random.split(rng, self.k + 1)

        def body(st, inp):
            xk, yk, key = inp
            return self.d_update(st, xk, yk, key)

        # Unrolled: XLA:CPU runs conv weight gradients inside a while-loop body through a
        # naive loop emitter (~50x slower; experiments/results/conv_crossover.md), and
        # gan.d_steps is small, so compile time grows little. A Python loop, not
        # lax.scan(unroll=True): with one D step (the default) that still emits a
        # one-trip while loop, and kept the 32x32 DCGAN step at 12-15 s instead of ~1 s.
        if self.unroll_d_steps:
            per_step = []
            for i in range(self.k):
                state, m = body(state, (xs[i], None if ys is None else ys[i], keys[i]))
                per_step.append(m)
            d_metrics = jax.tree.map(lambda *v: jnp.stack(v), *per_step)
        else:
            state, d_metrics = jax.lax.scan(body, state, (xs, ys, keys[:self.k]))
        state, g_metrics = self.g_update(state, None if ys is None else ys[-1], keys[self.k], n)
        metrics = {k: v.mean() for k, v in d_metrics.items()} | g_metrics
        metrics["loss"] = metrics["d_loss"] + metrics["g_loss"]  # both finite, for the runtime's check
        return state.replace(step=state.step + 1), metrics

    def eval_step(self, state: GANState, batch: dict, rng: jax.Array) -> dict:
        """D and G losses on a validation batch against samples of the (EMA) generator."""
        x, y = batch["x"], self._labels(batch.get("y"))
        n = (x.shape[0] // self.pack) * self.pack
        x, y = x[:n], None if y is None else y[:n]
        rz, rgp = jax.random.split(rng)
        fake = apply_g(self.g_net, state.g, state.g.eval_params, self._z(rz, n), y)
        d = state.d
        real_out, _ = self._d(d.params, d.model_state, x, y)
        fake_out, _ = self._d(d.params, d.model_state, fake, y)
        metrics = {"d_loss": self.d_loss_fn(real_out, fake_out), "g_loss": self.g_loss_fn(fake_out),
                   "d_real": real_out.mean(), "d_fake": fake_out.mean()}
        if self.objective == "wgan_gp":
            metrics["gp"] = gradient_penalty(lambda xx: self.d_net.apply(
                {"params": d.params, **d.model_state}, xx, y, mutable=["batch_stats"])[0],
                pack(x, self.pack), pack(fake, self.pack), rgp)
        metrics["loss"] = metrics["d_loss"] + metrics["g_loss"]
        return metrics

    def generate(self, state: GANState, z: jax.Array, labels: jax.Array | None = None) -> jax.Array:
        """The (EMA) generator at latent codes ``z`` (N, latent_dim), with ``labels`` (N,)
        when conditional. With batch normalization in G, samples use the statistics of this
        batch, so pass a batch of reasonable size (sample() uses at least 64 codes)."""
        if self.num_classes and labels is None:
            raise ValueError("a conditional GAN needs labels")
        return apply_g(self.g_net, state.g, state.g.eval_params, z, self._labels(labels))

    def class_labels(self, num: int) -> jax.Array:
        """Labels of ``num`` samples ordered class by class: with num = C r, a grid of r
        columns has one row per class."""
        return (jnp.arange(num) * self.num_classes) // num

    def sample(self, state: GANState, rng: jax.Array, num: int, labels: jax.Array | None = None,
               **kw: Any) -> jax.Array:
        """``num`` samples of the (EMA) generator; conditional: for ``labels`` (N,), or
        class by class (see class_labels) when None."""
        n = max(num, 64) if self.config.model.g_norm == "batch" else num
        y = None
        if self.num_classes:
            y = self.class_labels(num) if labels is None else jnp.asarray(labels, jnp.int32)
            y = jnp.concatenate([y, jnp.zeros((n - num,), jnp.int32)])
        return self.generate(state, self._z(rng, n), y)[:num]


@register("gan")
def make_gan(config: ml_collections.ConfigDict, info: DataInfo) -> GAN:
    """Factory registered as "gan"."""
    return GAN(config, info)
