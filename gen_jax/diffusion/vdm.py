"""The "vdm" Method: Variational Diffusion Models (Kingma, Salimans, Poole & Ho, 2021).

A variance-preserving diffusion z_t = α_t x + σ_t ε on the data's discrete levels, its
noise schedule given by γ(t) = log(σ_t² / α_t²) = -log SNR(t) (α_t² = sigmoid(-γ),
σ_t² = sigmoid(γ)), increasing in t ∈ [0, 1]. The negative variational bound
(nats per example) has three terms:

- prior: KL(q(z_1 | x) || N(0, I)) = ½ Σ (α_1² x² + σ_1² - log σ_1² - 1);
- reconstruction: -log p(x | z_0) with the exact factorised decoder
  p(x_i | z_0) ∝ N(z_{0,i} / α_0; x_k, e^{γ_0}) normalised over the L levels x_k
  (:func:`reconstruction_nll`): a bound on the discrete data's likelihood with no
  dequantization;
- diffusion, in continuous time (T → ∞, their eq. 17):
  ½ E_{t ~ U[0,1], ε} [γ'(t) ‖ε - ε̂_θ(z_t; γ_t)‖²].

The schedule (:func:`gamma`) is γ(t) = γ_0 + (γ_1 - γ_0) (f(t) - f(0)) / (f(1) - f(0)) with
f VDM's monotone network (a positive-weight linear term plus a positive-weight layer
of sigmoids, their App. I.1) and learned endpoints γ_0 < γ_1. For fixed endpoints the
continuous-time diffusion loss does not depend on f (their §5.1), so the endpoints
are trained on the bound and f on the *variance* of the diffusion-loss estimator
(their App. I.2): :func:`gamma_varmin` passes the VLB gradient to the endpoints and
the gradient of E[L²] = E[2 L ∇L] to f, within the same backward pass (the per-example
loss L reaches the schedule's backward pass as the cotangent of a zero "tap" output).
Times are drawn antithetically, t_i = (u + i / B) mod 1 (:func:`antithetic_times`).

Non-leaking augmentation (Karras et al. 2022, EDM, §5 and App. B.5 "augmentation
conditioning"): with ``model.augment_prob`` > 0, each training example is, with that
probability, translated by one of the 8 one-pixel shifts (dy, dx) ∈ {-1, 0, 1}², (0, 0) excluded
(:data:`SHIFTS`, :func:`translate`; the vacated row/column filled with the lowest level,
the digits' background) and the network is told which through the UNet's label embedding
(index k of :data:`SHIFTS`; 0 = none). The training loss is then the bound of the
augmented image given k; the evaluation loss, ``log_prob`` and sampling always use k = 0
and never augment, so the model of the data is p(x | k = 0). With ``augment_prob`` = 0 the
network has no label embedding and the loss is the old one, draw for draw.

The network ε̂_θ is the project's UNet (or MLP) with Fourier features sin/cos(2^n π z)
of its input concatenated on the channels (:class:`VDMNet`), conditioned on γ_t scaled
to [0, 1000] over the initial schedule's range. Sampling is ancestral with T steps
on the grid t = i / T, then x ~ p(x | z_0).

Config (``model``): ``arch`` and network sizes as the ddpm Method; ``gamma_0``,
``gamma_1`` (initial endpoints), ``schedule`` ("nnet" | "linear"),
``schedule_features``, ``fourier_exponents`` (the n of the features; () = none),
``antithetic`` (bool), ``var_min`` (bool: variance-minimising schedule gradient),
``augment_prob`` (in [0, 1]; 0 = off, also for a config.json without the key;
configs/vdm_digits.py: 0.5. Non-leaking augmentation, above).
Section ``sampler``: ``num_steps`` (T). ``eval.log_prob_samples`` is the number of
stratified time samples per example in :meth:`VDM.log_prob` (a Monte-Carlo average of
the bound, not importance samples: it lowers the variance, not the bound).
"""

from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from gen_jax.data import DataInfo
from gen_jax.diffusion.ddpm import build_network, init_network_state
from gen_jax.errors import ConfigError
from gen_jax.likelihood import bits_per_dim, gaussian_kl, gaussian_log_prob_elementwise
from gen_jax.registry import register
from gen_jax.state import TrainState, make_optimizer
from gen_jax.steps import make_eval_step, make_train_step
from gen_jax.value_range import ValueRange

SCHEDULES = ("nnet", "linear")
ENDPOINTS = ("gamma_0", "log_range")  # the schedule's parameters trained on the bound
COND_SCALE = 1000.0  # normalised γ_t in [0, 1] -> the 0..1000 span of the time embedding
# The augmentations' (dy, dx): index 0 = none, then the 8 one-pixel translations (a pixel at
# (i, j) moves to (i + dy, j + dx)); the index is the network's label.
SHIFTS = ((0, 0), (-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1))

EpsFn = Callable[[jax.Array, jax.Array], jax.Array]  # ε̂(z_t, γ_t) with γ_t of shape (batch,)


def _bcast(a: jax.Array, x: jax.Array) -> jax.Array:
    return jnp.reshape(a, a.shape + (1,) * (x.ndim - a.ndim))


def _flat_sum(a: jax.Array) -> jax.Array:
    return a.reshape(a.shape[0], -1).sum(-1)


# -- the noise schedule ----------------------------------------------------------


def init_schedule(rng: jax.Array, gamma_0: float, gamma_1: float, features: int,
                  kind: str = "nnet") -> dict:
    """Parameters of :func:`gamma`: the endpoints (``gamma_0``, ``log_range`` =
    log(γ_1 - γ_0)) and, for ``kind="nnet"``, the monotone network f (VDM's init: the
    linear term's weight γ_1 - γ_0, the sigmoid layer's weights N(0, 1), its bias 0)."""
    if not gamma_1 > gamma_0:
        raise ConfigError(f"the schedule needs gamma_1 > gamma_0; got {gamma_0}, {gamma_1}")
    p = {"gamma_0": jnp.float32(gamma_0), "log_range": jnp.float32(np.log(gamma_1 - gamma_0))}
    if kind == "nnet":
        k2, k3 = jax.random.split(rng)
        p.update(w1=jnp.float32(gamma_1 - gamma_0), w2=jax.random.normal(k2, (features,)),
                 b2=jnp.zeros((features,)), w3=jax.random.normal(k3, (features,)))
    return p


def _monotone(p: dict, t: jax.Array) -> jax.Array:
    """f(t): |w1| t + mean_j |w3_j| (2 sigmoid(|w2_j| (2t - 1) + b2_j) - 1), increasing in t."""
    if "w1" not in p:
        return t
    h = 2.0 * jax.nn.sigmoid(jnp.abs(p["w2"]) * (2.0 * t[..., None] - 1.0) + p["b2"]) - 1.0
    return jnp.abs(p["w1"]) * t + jnp.mean(jnp.abs(p["w3"]) * h, axis=-1)


def endpoints(p: dict) -> tuple[jax.Array, jax.Array]:
    """(γ_0, γ_1) = (gamma_0, gamma_0 + exp(log_range)): γ_1 > γ_0 always."""
    return p["gamma_0"], p["gamma_0"] + jnp.exp(p["log_range"])


def gamma(p: dict, t: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(γ(t), γ'(t)) elementwise: γ_0 + (γ_1 - γ_0) (f(t) - f(0)) / (f(1) - f(0)), so
    γ(0) = γ_0 and γ(1) = γ_1 exactly whatever f."""
    g0, g1 = endpoints(p)
    f_t, df_t = jax.jvp(lambda s: _monotone(p, s), (t,), (jnp.ones_like(t),))
    f0, f1 = _monotone(p, jnp.zeros((1,)))[0], _monotone(p, jnp.ones((1,)))[0]
    scale = (g1 - g0) / (f1 - f0)
    return g0 + scale * (f_t - f0), scale * df_t


@jax.custom_vjp
def gamma_varmin(p: dict, t: jax.Array, tap: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """:func:`gamma` (and ``tap`` passed through) with the variance-minimising gradient.

    Add ``sum(tap_out * stop_gradient(L))`` (zero) to the objective, with L the
    per-example diffusion loss and the objective's diffusion term mean(L): the
    backward pass then sees L_i as ``tap``'s cotangent and gives the endpoints the
    gradient of mean(L) and the monotone network f that of mean(L²) (= Σ_i 2 L_i
    ∂L_i/∂f / B), the gradient of the estimator's variance, since E[L] does not
    depend on f.

    Args:
      p: schedule parameters; t: (batch,) times; tap: zeros of shape (batch,).
    """
    g, dg = gamma(p, t)
    return g, dg, tap


def _varmin_fwd(p, t, tap):
    return gamma_varmin(p, t, tap), (p, t)


def _varmin_bwd(res, ct):
    p, t = res
    ct_g, ct_dg, ct_tap = ct
    _, vjp = jax.vjp(lambda q: gamma(q, t), p)
    (vlb,) = vjp((ct_g, ct_dg))
    w = 2.0 * ct_tap  # 2 L_i
    (var,) = vjp((w * ct_g, w * ct_dg))
    grads = {k: vlb[k] if k in ENDPOINTS else var[k] for k in p}
    return grads, jnp.zeros_like(t), jnp.zeros_like(ct_tap)


gamma_varmin.defvjp(_varmin_fwd, _varmin_bwd)


def alpha_sigma(g: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(α, σ) of γ: α² = sigmoid(-γ), σ² = sigmoid(γ)."""
    return jnp.sqrt(jax.nn.sigmoid(-g)), jnp.sqrt(jax.nn.sigmoid(g))


def antithetic_times(rng: jax.Array, batch: int) -> jax.Array:
    """VDM's low-discrepancy times: t_i = (u + i / B) mod 1, u ~ U[0, 1): each is
    uniform, and together they hit every interval [j / B, (j + 1) / B) once."""
    u = jax.random.uniform(rng, ())
    return jnp.mod(u + jnp.arange(batch, dtype=jnp.float32) / batch, 1.0)


# -- the bound's terms -----------------------------------------------------------


def prior_kl(x: jax.Array, gamma_1: jax.Array) -> jax.Array:
    """KL(q(z_1 | x) || N(0, I)) per example (nats): q(z_1 | x) = N(α_1 x, σ_1² I)."""
    a1, _ = alpha_sigma(gamma_1)
    mean = (a1 * x).reshape(x.shape[0], -1)
    return gaussian_kl(mean, jnp.broadcast_to(jax.nn.log_sigmoid(gamma_1), mean.shape))


def decoder_log_probs(z0_scaled: jax.Array, gamma_0: jax.Array, levels: jax.Array) -> jax.Array:
    """log p(x_i = level k | z_0), shape z0 + (L,): the softmax over k of
    log N(z_0 / α_0; x_k, e^{γ_0}), exact for a factorised q(z_0 | x) (VDM App. C)."""
    logits = gaussian_log_prob_elementwise(z0_scaled[..., None], levels, gamma_0)
    return jax.nn.log_softmax(logits, axis=-1)


def reconstruction_nll(x_levels: jax.Array, eps0: jax.Array, gamma_0: jax.Array,
                       levels: jax.Array) -> jax.Array:
    """-log p(x | z_0) per example (nats), z_0 / α_0 = x + e^{γ_0 / 2} ε_0.

    Args:
      x_levels: integer level indices of x; eps0: the noise of z_0, shaped like x;
      gamma_0: γ_0; levels: (L,) the levels' values x_k.
    """
    x = levels[x_levels]
    lp = decoder_log_probs(x + jnp.exp(0.5 * gamma_0) * eps0, gamma_0, levels)
    return -_flat_sum(jnp.take_along_axis(lp, x_levels[..., None], axis=-1)[..., 0])


def diffusion_loss(eps: jax.Array, eps_hat: jax.Array, dgamma: jax.Array) -> jax.Array:
    """½ γ'(t) ‖ε - ε̂‖² per example (nats): the continuous-time diffusion loss's estimate."""
    return 0.5 * dgamma * _flat_sum((eps - eps_hat) ** 2)


# -- augmentation ----------------------------------------------------------------


def translate(x: jax.Array, k: jax.Array, fill: float) -> jax.Array:
    """Each image of ``x`` (B, H, W, C) shifted by :data:`SHIFTS` [k_b]: out[i, j] =
    x[i - dy, j - dx], ``fill`` where that falls outside the image."""
    h, w = x.shape[1:3]
    padded = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=fill)
    shifted = jnp.stack([padded[:, 1 - dy:1 - dy + h, 1 - dx:1 - dx + w] for dy, dx in SHIFTS])
    return jnp.take_along_axis(shifted, k[None, :, None, None, None], axis=0)[0]


def draw_augmentations(rng: jax.Array, batch: int, prob: float) -> jax.Array:
    """(batch,) augmentation indices: 0 (none) with probability 1 - ``prob``, else one of
    the 8 translations uniformly."""
    r_on, r_k = jax.random.split(rng)
    on = jax.random.bernoulli(r_on, prob, (batch,))
    return jnp.where(on, jax.random.randint(r_k, (batch,), 1, len(SHIFTS)), 0).astype(jnp.int32)


# -- the network -----------------------------------------------------------------


def fourier_features(z: jax.Array, exponents: tuple[int, ...]) -> jax.Array:
    """sin and cos of 2^n π z for each n, on the last axis: shape (..., C·2·len(exponents))."""
    if not exponents:
        return z[..., :0]
    w = jnp.pi * 2.0 ** jnp.asarray(exponents, jnp.float32)
    h = (z[..., None] * w).reshape(*z.shape[:-1], -1)
    return jnp.concatenate([jnp.sin(h), jnp.cos(h)], axis=-1)


class VDMNet(nn.Module):
    """ε̂(z, c): ``net`` (the UNet or MLP of gen_jax.diffusion.ddpm.build_network) on z
    with its Fourier features concatenated on the last axis, conditioned on c."""

    net: nn.Module
    exponents: tuple[int, ...] = ()

    @nn.compact
    def __call__(self, z: jax.Array, c: jax.Array, train: bool = False,
                 y: jax.Array | None = None) -> jax.Array:
        h = jnp.concatenate([z, fourier_features(z, self.exponents)], axis=-1)
        return self.net(h, c, y, train=train)


# -- the Method ------------------------------------------------------------------


class VDM:
    """The VDM Method (see gen_jax.registry.Method; also HasLogProb)."""

    def __init__(self, config: ml_collections.ConfigDict, info: DataInfo):
        self.config = config
        self.info = info
        m = config.model
        if info.kind != "image" or info.num_levels is None:
            raise ConfigError("the vdm Method models discrete images (its decoder is over the "
                              f"data's levels); {info.name!r} is {info.kind} data")
        if config.data.dequantize != "none":
            raise ConfigError("the vdm Method's decoder is exact on the discrete levels: set "
                              "data.dequantize='none'")
        if m.schedule not in SCHEDULES:
            raise ConfigError(f"model.schedule must be one of {', '.join(SCHEDULES)}; got {m.schedule!r}")
        if not m.gamma_1 > m.gamma_0:
            raise ConfigError(f"model.gamma_1={m.gamma_1} must be > model.gamma_0={m.gamma_0}")
        if int(config.sampler.num_steps) < 1:
            raise ConfigError(f"sampler.num_steps={config.sampler.num_steps} must be >= 1")
        p = m.get("augment_prob", 0.0)  # an old workdir's config.json predates the key
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= p <= 1.0:
            raise ConfigError(f"model.augment_prob must be a number in [0, 1] (0 = no augmentation); "
                              f"got {p!r}")
        self.augment_prob = float(p)
        self.value_range = ValueRange.from_config(config.data, info)
        self.levels = np.asarray(self.value_range.from_levels(np.arange(self.value_range.num_levels)))
        exps = tuple(int(n) for n in m.fourier_exponents)
        net = build_network(config, info, 1, time_scale=COND_SCALE)
        if self.augment_prob > 0:  # the augmentation index is the network's label
            net = net.clone(num_classes=len(SHIFTS))
        self.net = VDMNet(net, exps)
        self.tx = make_optimizer(config.optim, config.train.num_steps)

    # -- network -------------------------------------------------------------

    def _cond(self, g: jax.Array) -> jax.Array:
        """γ_t scaled to [0, 1] over the initial schedule's [γ_0, γ_1]."""
        m = self.config.model
        return (g - m.gamma_0) / (m.gamma_1 - m.gamma_0)

    def eps_hat(self, params: Any, z: jax.Array, g: jax.Array, rng: jax.Array | None = None,
                aug: jax.Array | None = None) -> jax.Array:
        """ε̂_θ(z_t; γ_t), γ_t of shape (batch,); dropout when ``rng`` is given; ``aug``
        the (batch,) augmentation indices (None = 0, none; only with ``augment_prob`` > 0)."""
        kw = {"rngs": {"dropout": rng}, "train": True} if rng is not None else {}
        if self.augment_prob > 0:
            kw["y"] = jnp.zeros((z.shape[0],), jnp.int32) if aug is None else aug
        z_in = z.reshape(z.shape[0], -1) if self.config.model.arch == "mlp" else z
        out = self.net.apply({"params": params["net"]}, z_in, self._cond(g), **kw)
        return out.reshape(z.shape)

    # -- the bound -----------------------------------------------------------

    def terms(self, params: Any, x: jax.Array, rng: jax.Array, times: jax.Array | None = None,
              train: bool = False) -> dict:
        """The bound's three terms per example (nats): ``prior``, ``recon``, ``diffusion``
        (one time sample each), and ``t``.

        Args:
          params: {"net", "schedule"} parameters.
          x: data in the value range, on the levels.
          rng: PRNG key.
          times: (batch,) times; None = drawn (antithetic or i.i.d. by ``model.antithetic``).
          train: dropout on, the variance-minimising schedule gradient (``model.var_min``)
            and, with ``model.augment_prob`` > 0, augmentation (index in ``aug``).
        """
        m = self.config.model
        b = x.shape[0]
        r_t, r_eps, r_eps0, r_drop = jax.random.split(rng, 4)
        sp = params["schedule"]
        g0, g1 = endpoints(sp)
        k = self.value_range.levels(x).astype(jnp.int32)
        levels = jnp.asarray(self.levels)
        aug = None
        if train and self.augment_prob > 0:
            aug = draw_augmentations(jax.random.fold_in(rng, 0xA06), b, self.augment_prob)
            k = translate(k, aug, 0)  # level 0, the lowest: the digits' background
        x = levels[k]
        recon = reconstruction_nll(k, jax.random.normal(r_eps0, x.shape), g0, levels)
        prior = prior_kl(x, g1)
        if times is None:
            times = antithetic_times(r_t, b) if m.antithetic else jax.random.uniform(r_t, (b,))
        tap = jnp.zeros((b,), jnp.float32)
        if train and m.var_min:
            g_t, dg_t, tap = gamma_varmin(sp, times, tap)
        else:
            g_t, dg_t = gamma(sp, times)
        a_t, s_t = alpha_sigma(g_t)
        eps = jax.random.normal(r_eps, x.shape)
        z = _bcast(a_t, x) * x + _bcast(s_t, x) * eps
        drop = r_drop if train else None
        # (called as before the option when there is no augmentation)
        e_hat = self.eps_hat(params, z, g_t, drop) if aug is None else self.eps_hat(params, z, g_t, drop, aug)
        diff = diffusion_loss(eps, e_hat, dg_t)
        out = {"prior": prior, "recon": recon, "diffusion": diff, "t": times, "tap": tap}
        return out if aug is None else {**out, "aug": aug}

    def loss_fn(self, params: Any, model_state: Any, batch: dict, rng: jax.Array, train: bool):
        """The negative bound in bits/dim (VDM trains on it), and its terms (see gen_jax.steps)."""
        d = self.info.dim
        tm = self.terms(params, batch["x"], rng, train=train)
        prior, recon, diff = (bits_per_dim(tm[n], d) for n in ("prior", "recon", "diffusion"))
        bpd = prior + recon + diff
        # Zero in value; its gradient hands each example's diffusion loss to gamma_varmin.
        tap = jnp.sum(tm["tap"] * jax.lax.stop_gradient(diff))
        g0, g1 = endpoints(params["schedule"])
        metrics = {"bpd": bpd.mean(), "prior_bpd": prior.mean(), "recon_bpd": recon.mean(),
                   "diffusion_bpd": diff.mean(), "diffusion_bpd_var": jnp.var(diff),
                   "gamma_0": g0, "gamma_1": g1}
        return bpd.mean() + tap, (metrics, model_state)

    # -- the Method contract -------------------------------------------------

    def init(self, rng: jax.Array, example_batch: dict) -> TrainState:
        r_net, r_sched = jax.random.split(rng)
        m = self.config.model
        net = init_network_state(self.net, self.config, self.info, self.tx, r_net, example_batch).params
        sched = init_schedule(r_sched, m.gamma_0, m.gamma_1, m.schedule_features, m.schedule)
        return TrainState.create({"net": net, "schedule": sched}, self.tx, self.config.train.ema_decay)

    def train_step(self, state: TrainState, batch: dict, rng: jax.Array):
        return make_train_step(self.loss_fn)(state, batch, rng)

    def eval_step(self, state: TrainState, batch: dict, rng: jax.Array) -> dict:
        return make_eval_step(self.loss_fn)(state, batch, rng)

    def log_prob(self, state: TrainState, x: jax.Array, rng: jax.Array, *,
                 num_samples: int = 1) -> jax.Array:
        """-(prior + reconstruction + diffusion) in nats per example: a lower bound on
        log P(x) of the discrete data. The diffusion and reconstruction terms average
        ``num_samples`` draws each, the times stratified per example
        (t_j = (u + j / K) mod 1): a lower-variance estimate of the same bound."""
        return -sum(self.log_prob_terms(state.eval_params, x, rng, num_samples).values())

    def log_prob_terms(self, params: Any, x: jax.Array, rng: jax.Array, num_samples: int = 1) -> dict:
        """The bound's terms per example (nats), each averaged over ``num_samples`` draws
        (see :meth:`log_prob`)."""
        k = max(int(num_samples), 1)
        b = x.shape[0]
        r_u, r_scan = jax.random.split(rng)
        u = jax.random.uniform(r_u, (b,))

        def body(acc, inp):
            j, key = inp
            tm = self.terms(params, x, key, times=jnp.mod(u + j / k, 1.0))
            return {n: acc[n] + tm[n] / k for n in acc}, None

        zero = jnp.zeros((b,), jnp.float32)
        acc0 = {"prior": zero, "recon": zero, "diffusion": zero}
        out, _ = jax.lax.scan(body, acc0, (jnp.arange(k, dtype=jnp.float32), jax.random.split(r_scan, k)))
        return out

    def sample(self, state: TrainState, rng: jax.Array, num: int, num_steps: int | None = None) -> jax.Array:
        """``num`` samples on the data's levels by ancestral sampling: T steps from
        z_1 ~ N(0, I) down the grid t = i / T (VDM eq. 32), then x ~ p(x | z_0).

        Args:
          state: the TrainState (EMA parameters where kept).
          rng: PRNG key.
          num: number of samples.
          num_steps: T (None = ``sampler.num_steps``).
        """
        params = state.eval_params
        return ancestral_sample(lambda z, g: self.eps_hat(params, z, g), params["schedule"],
                                (num, *self.info.shape), rng, int(num_steps or self.config.sampler.num_steps),
                                jnp.asarray(self.levels))


def ancestral_sample(eps_fn: EpsFn, sched: dict, shape: tuple[int, ...], key: jax.Array,
                     num_steps: int, levels: jax.Array) -> jax.Array:
    """VDM's ancestral sampler (one ``lax.scan``): for t = i / T, s = (i - 1) / T,
    z_s = (α_s / α_t)(z_t - σ_t c ε̂) + σ_s √c ε with c = 1 - e^{γ_s - γ_t}; then each
    pixel's level drawn from p(x | z_0).

    Args:
      eps_fn: ε̂(z, γ) with γ of shape (batch,); sched: schedule parameters;
      shape: (batch, ...); key: PRNG key; num_steps: T; levels: (L,) level values.

    Returns:
      The samples' level values, of ``shape``.
    """
    b = shape[0]
    k_init, k_steps, k_dec = jax.random.split(key, 3)

    def step(z, inp):
        i, k = inp
        t, s = i / num_steps, (i - 1.0) / num_steps
        g_t, _ = gamma(sched, jnp.full((b,), t))
        g_s, _ = gamma(sched, jnp.full((b,), s))
        a_t, s_t = alpha_sigma(g_t)
        a_s, s_s = alpha_sigma(g_s)
        c = -jnp.expm1(g_s - g_t)
        eps_hat = eps_fn(z, g_t)
        mean = _bcast(a_s / a_t, z) * (z - _bcast(s_t * c, z) * eps_hat)
        return mean + _bcast(s_s * jnp.sqrt(c), z) * jax.random.normal(k, z.shape), None

    i = jnp.arange(num_steps, 0, -1, dtype=jnp.float32)
    z, _ = jax.lax.scan(step, jax.random.normal(k_init, shape), (i, jax.random.split(k_steps, num_steps)))
    g0, _ = endpoints(sched)
    a0, _ = alpha_sigma(g0)
    lp = decoder_log_probs(z / a0, g0, levels)
    return levels[jax.random.categorical(k_dec, lp, axis=-1)]


@register("vdm")
def make_vdm(config: ml_collections.ConfigDict, info: DataInfo) -> VDM:
    """Factory registered as "vdm"."""
    return VDM(config, info)
