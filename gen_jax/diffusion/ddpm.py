"""The "ddpm" Method: DDPM (Ho et al., 2020), improved DDPM (Nichol & Dhariwal, 2021:
cosine schedule, learned variances, hybrid loss, importance-sampled timesteps) and
classifier-free guidance (Ho & Salimans, 2021).

Config (``model``): ``arch`` ("unet" | "mlp"), network sizes, ``schedule``,
``num_timesteps``, ``pred`` ("eps" | "x0" | "v"), ``variance`` ("beta" |
"beta_tilde" | "learned"), ``loss`` ("simple" | "hybrid" | "vlb"), ``vlb_weight``
(λ of the hybrid loss), ``timestep_sampler`` ("uniform" | "importance"),
``num_classes`` (0 = unconditional) and ``cfg_dropout`` (label dropout rate).
Section ``sampler``: ``method``, ``num_steps``, ``eta``, ``order``, ``spacing``,
``guidance``, ``clip_x0``; :meth:`DDPM.sample` uses them unless overridden.

Likelihood: :meth:`DDPM.log_prob` is -VLB (all T terms and the prior) in nats
per example. Images use a discretized-Gaussian decoder over the data's own bins
(digits: 17 levels, half-width 1/16 in (-1, 1)), so it bounds the discrete
data's log-likelihood directly; vector data use a Gaussian density decoder.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from gen_jax.data import DataInfo, bits_per_dim
from gen_jax.diffusion import losses, process, samplers
from gen_jax.diffusion.schedules import get_schedule
from gen_jax.diffusion.unet import DDPMUNet, MLPDenoiser
from gen_jax.errors import ConfigError
from gen_jax.registry import register
from gen_jax.state import TrainState, make_optimizer
from gen_jax.steps import make_eval_step, make_train_step
from gen_jax.value_range import ValueRange

LOSSES = ("simple", "hybrid", "vlb")
TIMESTEP_SAMPLERS = ("uniform", "importance")


def _check(value: str, valid: tuple[str, ...], key: str) -> None:
    if value not in valid:
        raise ConfigError(f"{key} must be one of {', '.join(valid)}; got {value!r}")


def build_network(config: ml_collections.ConfigDict, info: Any, out_mult: int = 1,
                  time_scale: float = 1.0) -> Any:
    """The UNet (images) or MLP (vectors, or flattened images) of ``config.model``,
    ``out_mult`` outputs per input channel."""
    m = config.model
    _check(m.arch, ("unet", "mlp"), "model.arch")
    ncls = int(m.get("num_classes", 0))
    if m.arch == "unet":
        if info.kind != "image":
            raise ConfigError(f"model.arch='unet' needs image data; {info.name!r} is vector data")
        return DDPMUNet(ch=m.ch, ch_mult=tuple(m.ch_mult), num_res_blocks=m.num_res_blocks,
                        attn_resolutions=tuple(m.attn_resolutions), dropout=m.dropout,
                        out_ch=out_mult * info.shape[-1], num_classes=ncls, groups=m.groups,
                        time_scale=time_scale)
    return MLPDenoiser(hidden=m.hidden, depth=m.depth, out_dim=out_mult * info.dim,
                       num_classes=ncls, dropout=m.dropout, time_scale=time_scale)



def init_network_state(net: Any, config: ml_collections.ConfigDict, info: Any, tx: Any,
                       rng: jax.Array, example_batch: dict) -> TrainState:
    """A fresh TrainState of a continuous-time denoiser/velocity network ``net(x, t)``
    (score SDE, EDM, flow matching): parameters from the example batch's shape
    (flattened for the MLP), the optimizer ``tx`` and ``train.ema_decay``."""
    x = jnp.asarray(example_batch["x"])
    info.check_batch(x)
    x_in = x.reshape(x.shape[0], -1) if config.model.arch == "mlp" else x
    params = net.init({"params": rng}, x_in, jnp.zeros((x.shape[0],), jnp.float32))["params"]
    return TrainState.create(params, tx, config.train.ema_decay)


class DDPM:
    """The DDPM Method (see gen_jax.registry.Method)."""

    def __init__(self, config: ml_collections.ConfigDict, info: DataInfo):
        self.config = config
        m, d = config.model, config.data
        self.info = info
        _check(m.pred, process.PREDICTIONS, "model.pred")
        _check(m.variance, process.VARIANCES, "model.variance")
        _check(m.loss, LOSSES, "model.loss")
        _check(m.timestep_sampler, TIMESTEP_SAMPLERS, "model.timestep_sampler")
        if m.variance == "learned" and m.loss == "simple":
            raise ConfigError("model.variance='learned' needs a loss that trains it: "
                              "model.loss='hybrid' or 'vlb'")
        self.sched = get_schedule(m.schedule, m.num_timesteps)
        self.num_classes = int(m.num_classes)
        if self.num_classes and self.info.num_classes is None:
            raise ConfigError(f"model.num_classes={self.num_classes} but {self.info.name!r} has no labels")
        if self.num_classes and self.info.num_classes and self.num_classes < self.info.num_classes:
            raise ConfigError(f"model.num_classes={self.num_classes} < the data's "
                              f"{self.info.num_classes} classes")
        self.value_range = ValueRange.from_config(d, self.info)
        if self.info.kind == "image":
            if d.dequantize != "none":
                raise ConfigError("the ddpm Method models the discrete pixels with a discretized "
                                  "decoder: set data.dequantize='none'")
            self.decoder = losses.make_decoder("discrete", (self.value_range.lo, self.value_range.hi),
                                               self.value_range.num_levels)
        else:
            self.decoder = losses.make_decoder("continuous")
        self.learned = m.variance == "learned"
        self.net = build_network(config, self.info, 2 if self.learned else 1)
        self.tx = make_optimizer(config.optim, config.train.num_steps)
        # The configured sampler, checked now (its name, steps against T, typed options)
        # rather than after training.
        _check(config.sampler.name, tuple(samplers.SAMPLERS), "sampler.name")  # registered by now
        samplers.check_options(config.sampler.name, config.sampler.num_steps or None,
                               self.sched.num_timesteps, **self._sampler_options(config.sampler.name))

    # -- network -------------------------------------------------------------

    def _apply(self, params: Any, x: jax.Array, t: jax.Array, y: jax.Array | None,
               rng: jax.Array | None = None) -> tuple[jax.Array, jax.Array | None]:
        """(raw output in the ``pred`` parameterization, variance output v or None)."""
        kw = {"rngs": {"dropout": rng}, "train": True} if rng is not None else {}
        x_in = x.reshape(x.shape[0], -1) if self.config.model.arch == "mlp" else x
        out = self.net.apply({"params": params}, x_in, t, y if self.num_classes else None, **kw)
        if self.config.model.arch == "mlp":
            out = out.reshape(x.shape[0], 2 if self.learned else 1, *x.shape[1:])
            return (out[:, 0], out[:, 1]) if self.learned else (out[:, 0], None)
        if self.learned:
            o, v = jnp.split(out, 2, axis=-1)
            return o, v
        return out, None

    def eps_fn(self, params: Any, labels: jax.Array | None = None, guidance: float = 0.0):
        """``eps_fn(x_t, t) -> (ε̂, v)`` for the samplers, with classifier-free guidance
        ε̂ = ε_c + w (ε_c - ε_∅) (Ho & Salimans, 2021) when ``guidance`` w != 0."""
        null = self.num_classes

        def fn(x, t):
            if not self.num_classes or labels is None:
                out, v = self._apply(params, x, t, None)
                return process.to_eps(self.config.model.pred, self.sched, x, t, out), v
            if guidance == 0.0:
                out, v = self._apply(params, x, t, labels)
                return process.to_eps(self.config.model.pred, self.sched, x, t, out), v
            b = x.shape[0]
            x2, t2 = jnp.concatenate([x, x]), jnp.concatenate([t, t])
            y2 = jnp.concatenate([labels, jnp.full_like(labels, null)])
            out, v = self._apply(params, x2, t2, y2)
            eps = process.to_eps(self.config.model.pred, self.sched, x2, t2, out)
            eps_c, eps_u = eps[:b], eps[b:]
            return eps_c + guidance * (eps_c - eps_u), None if v is None else v[:b]

        return fn

    # -- losses --------------------------------------------------------------

    def _losses(self, params: Any, batch: dict, rng: jax.Array, history: dict | None,
                train: bool) -> tuple[jax.Array, dict, jax.Array, jax.Array]:
        x = batch["x"]
        b = x.shape[0]
        m = self.config.model
        r_t, r_noise, r_drop, r_label = jax.random.split(rng, 4)
        big_t = self.sched.num_timesteps
        t, weights = losses.sample_timesteps(r_t, b, big_t, history)
        y = None
        if self.num_classes:
            y = batch["y"].astype(jnp.int32)
            if train and m.cfg_dropout > 0:
                drop = jax.random.bernoulli(r_label, m.cfg_dropout, (b,))
                y = jnp.where(drop, self.num_classes, y)
        noise = jax.random.normal(r_noise, x.shape)
        xt = process.q_sample(self.sched, x, t, noise)
        out, v = self._apply(params, xt, t, y, r_drop if train else None)
        tgt = process.target(m.pred, self.sched, x, xt, t, noise)
        mse = jnp.mean((out - tgt).reshape(b, -1) ** 2, axis=1)
        eps = process.to_eps(m.pred, self.sched, xt, t, out)
        if m.loss == "hybrid":
            # L_hybrid = L_simple + λ L_vlb, the VLB training only the variance (its mean is frozen).
            eps = jax.lax.stop_gradient(eps)
        mean, logvar, _ = process.p_mean_logvar(self.sched, xt, t, eps, m.variance, v)
        vb_nats = losses.vlb_term(self.sched, x, xt, t, mean, logvar, self.decoder)
        vb = bits_per_dim(vb_nats, self.info.dim)  # bits/dim of this one term
        if m.loss == "simple":
            per_ex = mse
        elif m.loss == "hybrid":
            per_ex = mse + m.vlb_weight * big_t * vb
        else:
            per_ex = big_t * vb
        # An unbiased one-term estimate of -VLB (nats): the prior plus T L_t, t ~ uniform.
        prior = losses.prior_kl(self.sched, x)
        vlb_est = prior + big_t * vb_nats * weights
        metrics = {"mse": mse.mean(), "vlb_bpd_est": losses.bits(vlb_est.mean(), self.info.dim)}
        return jnp.mean(weights * per_ex), metrics, t, per_ex

    # -- the Method contract -------------------------------------------------

    def init(self, rng: jax.Array, example_batch: dict) -> TrainState:
        x = jnp.asarray(example_batch["x"])
        self.info.check_batch(x)
        b = x.shape[0]
        y = jnp.zeros((b,), jnp.int32) if self.num_classes else None
        x_in = x.reshape(b, -1) if self.config.model.arch == "mlp" else x
        params = self.net.init({"params": rng}, x_in, jnp.zeros((b,), jnp.int32), y)["params"]
        history = (losses.init_loss_history(self.sched.num_timesteps)
                   if self.config.model.timestep_sampler == "importance" else None)
        return TrainState.create(params, self.tx, self.config.train.ema_decay, model_state=history)

    def loss_fn(self, params: Any, model_state: Any, batch: dict, rng: jax.Array, train: bool):
        """The configured loss (see gen_jax.steps); in training, the importance sampler's
        loss history (``model_state``) records this batch's per-timestep terms."""
        history = model_state if train else None
        loss, metrics, t, per_ex = self._losses(params, batch, rng, history, train)
        if history is not None:
            model_state = losses.update_loss_history(history, t, jax.lax.stop_gradient(per_ex))
        return loss, (metrics, model_state)

    def train_step(self, state: TrainState, batch: dict, rng: jax.Array):
        return make_train_step(self.loss_fn)(state, batch, rng)

    def eval_step(self, state: TrainState, batch: dict, rng: jax.Array) -> dict:
        return make_eval_step(self.loss_fn)(state, batch, rng)

    def sample(self, state: TrainState, rng: jax.Array, num: int, labels: jax.Array | None = None,
               guidance: float | None = None, method: str | None = None,
               num_steps: int | None = None, **options: Any) -> jax.Array:
        """``num`` samples by ``sampler.name`` (or ``method``), in the data's value range.

        Args:
          state: the TrainState (EMA parameters where kept).
          rng: PRNG key.
          num: number of samples.
          labels: (num,) class labels of a conditional model; None = classes 0, 1, ... in turn.
          guidance: classifier-free guidance weight w (None = ``sampler.guidance``).
          method, num_steps: sampler and its steps (None = ``config.sampler``).
          **options: sampler options (see samplers.sample), overriding ``config.sampler``.
        """
        s = self.config.sampler
        method = method or s.name
        num_steps = num_steps or s.num_steps or None
        w = float(s.guidance if guidance is None else guidance)
        opts = {**self._sampler_options(method), **options}
        if self.num_classes:
            if labels is None:
                labels = jnp.arange(num, dtype=jnp.int32) % (self.info.num_classes or self.num_classes)
            labels = jnp.asarray(labels, jnp.int32)
        elif labels is not None or w != 0.0:
            raise ConfigError("labels and guidance need a class-conditional model (model.num_classes > 0)")
        x = samplers.sample(self.eps_fn(state.eval_params, labels, w), self.sched,
                            (num, *self.info.shape), rng, method, num_steps, **opts)
        return self.value_range.clip(x) if self.info.kind == "image" else x

    def _sampler_options(self, method: str) -> dict:
        """The options ``config.sampler`` (and the model's variance) give sampler ``method``:
        those among ``spacing``, ``eta``, ``order``, ``variance`` that it takes, and ``clip_x0``."""
        s = self.config.sampler
        given = {"spacing": s.spacing or None, "eta": s.get("eta"), "order": s.get("order"),
                 "variance": self.config.model.variance}
        takes = samplers.get_sampler(method).options
        opts = {k: v for k, v in given.items() if k in takes}
        if s.clip_x0 and self.info.kind == "image":
            opts["clip_x0"] = (self.value_range.lo, self.value_range.hi)
        return opts

    # -- optional extras -----------------------------------------------------

    def log_prob(self, state: TrainState, x: jax.Array, rng: jax.Array, *,
                 num_samples: int = 1) -> jax.Array:
        """-VLB in nats per example (a lower bound on log p(x), discrete scale for images):
        all T terms, each with its own x_t draw, plus the prior term; the
        unconditional (null-label) model for a conditional one. ``num_samples`` is
        unused: the bound has no importance samples to tighten it."""
        params = state.eval_params

        def model_fn(xt, t):
            out, v = self._apply(params, xt, t, None)
            return process.to_eps(self.config.model.pred, self.sched, xt, t, out), v

        return -losses.full_vlb(self.sched, model_fn, x, rng, self.config.model.variance, self.decoder)


@register("ddpm")
def make_ddpm(config: ml_collections.ConfigDict, info: DataInfo) -> DDPM:
    """Factory registered as "ddpm"."""
    return DDPM(config, info)
