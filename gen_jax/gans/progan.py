"""ProGAN (Karras, Aila, Laine & Lehtinen, 2018): progressive growing of GANs.

G and D start at 4x4 (stage 0) and grow by one resolution per stage (4 -> 8 -> 16 -> 32,
optionally 64: ``progan.resolutions``, the last one the data's size). Stage 0 trains for
``progan.stable_steps`` outer steps; every later stage first fades its new layers in
over ``progan.fade_steps`` steps and then trains them for ``progan.stable_steps``:

- **fade-in** (Sec. 2, Fig. 2): the new block's output is blended with the previous
  resolution's, ``(1 - alpha) old + alpha new`` (:func:`fade_in`), in G (the upsampled
  toRGB of the layer below) and in D (fromRGB of the average-pooled input), alpha rising
  linearly from 0 to 1 over the fade. The real images are blended the same way
  (:meth:`ProGAN.real_images`, as the official code's ``process_reals``), so D never
  sees a resolution G cannot yet make. alpha is a pure function of ``state.step``
  (:meth:`Schedule.alpha`): a resumed run, mid-stage or mid-fade, continues exactly.
- **minibatch standard deviation** (Sec. 3): D's last block sees one extra feature
  map, the standard deviation of its input over groups of ``progan.mbstd_group``
  examples averaged over features and pixels (:func:`minibatch_stddev`).
- **equalized learning rate** (Sec. 4.1): weights are initialized N(0, 1) and scaled
  at run time by He's constant gain / sqrt(fan_in) (:func:`he_scale`,
  :class:`EqualizedDense`, :class:`EqualizedConv`), so Adam's step is the same for
  every layer.
- **pixelwise feature normalization** (Sec. 4.2) after every conv of G and on the
  latent (:func:`pixel_norm`).
- **WGAN-GP** (Gulrajani et al., 2017; gen_jax/gans/losses.py: the critic loss and the
  penalty, weight ``progan.gp_weight`` = 10) **with the drift term**
  ``progan.drift_weight * E[D(x)^2]`` (eps_drift = 0.001, Sec. A.1; :func:`drift_penalty`)
  that keeps the critic's scores near zero. One critic and one generator update per
  outer step (n_critic = 1, as in the paper).

Details from the official implementation (github.com/tkarras/progressive_growing_of_gans)
that are followed: Adam(1e-3, b1=0, b2=0.99) in the configs, the optimizers' moments
reset when a fade or a stable phase starts (``progan.reset_optimizer``), G's first
layer a dense layer with gain sqrt(2)/4, toRGB and D's output layers with gain 1,
LeakyReLU 0.2, nearest-neighbour upsampling and 2x2 average pooling, linear (no tanh)
G output, minibatch-stddev groups formed with stride ``N / group`` (example i is in
group i mod N / group), and the gradient penalty taken on the gradient of the summed
scores (with minibatch stddev in D, examples of a group interact, as in the official
code). Differences: every resolution has the same batch size; samples are clipped to
[-1, 1] and, before the last stage, upsampled (nearest) to the data's size.

Runtime fit: registry.HasStages, one stage per resolution: the runtime compiles one
program per stage (:meth:`ProGAN.stage_train_step`); inside a stage alpha is read from
``state.step``, so the fade and the stable phase share the program (at alpha = 1 the
blend returns the new path exactly). ``train_step`` is the all-stage form (``lax.switch``).
Every resolution's parameters exist from the start (one checkpoint structure for the
whole run); layers not yet used get zero gradients.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from gen_jax.data import DataInfo
from gen_jax.errors import ConfigError
from gen_jax.gans.gan import GANState, d_optimizer
from gen_jax.gans.losses import gradient_penalty, wasserstein_d_loss, wasserstein_g_loss
from gen_jax.nn.conv import conv_general_dilated
from gen_jax.registry import register
from gen_jax.state import TrainState, make_optimizer

_NHWC = ("NHWC", "HWIO", "NHWC")


# -- the paper's pieces ------------------------------------------------------------------


def he_scale(fan_in: int, gain: float = math.sqrt(2.0)) -> float:
    """The equalized learning rate's run-time weight scale (Karras et al., 2018, Sec. 4.1):
    w_hat = w c with c = gain / sqrt(fan_in), He's initializer constant (gain sqrt(2))."""
    return gain / math.sqrt(fan_in)


def pixel_norm(x: jax.Array, eps: float = 1e-8) -> jax.Array:
    """Pixelwise feature normalization (Karras et al., 2018, Sec. 4.2):
    b = a / sqrt(1/C sum_j a_j^2 + eps), over the channels (last axis) at each pixel."""
    return x * jax.lax.rsqrt(jnp.mean(x ** 2, axis=-1, keepdims=True) + eps)


def stddev_group(n: int, group: int) -> int:
    """The group size used for a batch of ``n``: the largest divisor of ``n`` that is at
    most ``group`` (``group`` itself when it divides the training batch)."""
    return max(d for d in range(1, min(group, n) + 1) if n % d == 0)


def minibatch_stddev(x: jax.Array, group: int) -> jax.Array:
    """Minibatch standard deviation (Karras et al., 2018, Sec. 3): ``x`` (N, H, W, C) with
    one more channel holding, for each example, the standard deviation of each feature at
    each pixel over the example's group, averaged over features and pixels.

    Groups are formed as in the official code (``reshape([G, -1, ...])``): with M = N / G,
    example i belongs to group i mod M. G = :func:`stddev_group` (n, group).
    """
    n = x.shape[0]
    g = stddev_group(n, group)
    y = x.reshape(g, n // g, *x.shape[1:])
    std = jnp.sqrt(jnp.mean((y - y.mean(0)) ** 2, axis=0) + 1e-8)  # (M, H, W, C)
    s = jnp.tile(std.mean((1, 2, 3)), g)                             # (N,): s[i] of group i mod M
    return jnp.concatenate([x, jnp.broadcast_to(s[:, None, None, None], (*x.shape[:3], 1))], -1)


def drift_penalty(real_scores: jax.Array) -> jax.Array:
    """The drift term E[D(x)^2] over real data (Karras et al., 2018, Sec. A.1; added to the
    critic loss with weight eps_drift = 0.001): keeps the critic's output from drifting
    far from zero, which WGAN-GP's loss alone does not."""
    return jnp.mean(real_scores ** 2)


def fade_in(old: jax.Array, new: jax.Array, alpha: jax.Array) -> jax.Array:
    """The fade-in blend (Karras et al., 2018, Fig. 2b): (1 - alpha) old + alpha new, where
    ``old`` is the previous resolution's path (resampled) and ``new`` the new block's; at
    alpha = 1 it is ``new`` exactly."""
    return (1.0 - alpha) * old + alpha * new


def upsample2(x: jax.Array) -> jax.Array:
    """Nearest-neighbour 2x upsampling of NHWC maps."""
    return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)


def downsample(x: jax.Array, factor: int = 2) -> jax.Array:
    """Average pooling of NHWC maps over ``factor`` x ``factor`` blocks (2x2 pooled twice
    equals 4x4 pooled once)."""
    if factor == 1:
        return x
    n, h, w, c = x.shape
    return x.reshape(n, h // factor, factor, w // factor, factor, c).mean((2, 4))


class EqualizedDense(nn.Module):
    """A dense layer with the equalized learning rate: kernel ~ N(0, 1), used as
    kernel * :func:`he_scale` (fan_in, gain); bias zero, unscaled."""

    features: int
    gain: float = math.sqrt(2.0)

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        w = self.param("kernel", nn.initializers.normal(1.0), (x.shape[-1], self.features))
        b = self.param("bias", nn.initializers.zeros, (self.features,))
        return x @ (w * he_scale(x.shape[-1], self.gain)) + b


class EqualizedConv(nn.Module):
    """A stride-1 SAME ``kernel`` x ``kernel`` convolution with the equalized learning
    rate (fan_in = kernel^2 x input channels), computed by gen_jax.nn's shape-chosen
    formulation."""

    features: int
    kernel: int = 3
    gain: float = math.sqrt(2.0)

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        k, c = self.kernel, x.shape[-1]
        w = self.param("kernel", nn.initializers.normal(1.0), (k, k, c, self.features))
        b = self.param("bias", nn.initializers.zeros, (self.features,))
        w = w * he_scale(k * k * c, self.gain)
        return conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=_NHWC) + b


def _act(x: jax.Array) -> jax.Array:
    return nn.leaky_relu(x, 0.2)


class Generator(nn.Module):
    """G: pixel-normed latent -> dense to 4x4 -> conv3x3; per later resolution: upsample,
    two conv3x3; LeakyReLU and pixel norm after every layer; a 1x1 toRGB per resolution.

    ``channels[k]``: the feature width at resolution 4 * 2^k.
    """

    channels: Sequence[int]
    out_channels: int
    use_pixel_norm: bool = True

    def setup(self):
        c = tuple(self.channels)
        self.dense = EqualizedDense(16 * c[0], gain=math.sqrt(2.0) / 4)
        self.conv0 = EqualizedConv(c[0], 3)
        self.conv_a = [EqualizedConv(ch, 3) for ch in c[1:]]
        self.conv_b = [EqualizedConv(ch, 3) for ch in c[1:]]
        self.to_rgb = [EqualizedConv(self.out_channels, 1, gain=1.0) for _ in c]

    def _norm(self, x):
        return pixel_norm(x) if self.use_pixel_norm else x

    def _block(self, k: int, h: jax.Array) -> jax.Array:
        h = upsample2(h)
        h = self._norm(_act(self.conv_a[k - 1](h)))
        return self._norm(_act(self.conv_b[k - 1](h)))

    def __call__(self, z: jax.Array, stage: int, alpha: jax.Array) -> jax.Array:
        """Images at resolution 4 * 2^stage, the newest block faded in by ``alpha``."""
        h = self._norm(z)
        h = self._norm(_act(self.dense(h))).reshape(z.shape[0], 4, 4, self.channels[0])
        h = self._norm(_act(self.conv0(h)))
        prev = h
        for k in range(1, stage + 1):
            prev, h = h, self._block(k, h)
        out = self.to_rgb[stage](h)
        if stage > 0:
            out = fade_in(upsample2(self.to_rgb[stage - 1](prev)), out, alpha)
        return out

    def init_all(self, z: jax.Array) -> list:
        """Every resolution's toRGB output on one pass up the blocks (creates every layer's
        parameters at init)."""
        h = self._norm(z)
        h = self._norm(_act(self.dense(h))).reshape(z.shape[0], 4, 4, self.channels[0])
        h = self._norm(_act(self.conv0(h)))
        outs = [self.to_rgb[0](h)]
        for k in range(1, len(self.channels)):
            h = self._block(k, h)
            outs.append(self.to_rgb[k](h))
        return outs


class Discriminator(nn.Module):
    """D: a 1x1 fromRGB per resolution; per resolution above 4: two conv3x3 and 2x2 average
    pooling; at 4x4: minibatch stddev, conv3x3, dense, dense to one score. LeakyReLU 0.2.

    ``channels[k]``: the feature width at resolution 4 * 2^k.
    """

    channels: Sequence[int]
    mbstd_group: int = 4

    def setup(self):
        c = tuple(self.channels)
        self.from_rgb = [EqualizedConv(ch, 1) for ch in c]
        self.conv_a = [EqualizedConv(c[k], 3) for k in range(1, len(c))]
        self.conv_b = [EqualizedConv(c[k - 1], 3) for k in range(1, len(c))]
        self.conv_last = EqualizedConv(c[0], 3)
        self.dense_last = EqualizedDense(c[0])
        self.out = EqualizedDense(1, gain=1.0)

    def _block(self, k: int, h: jax.Array) -> jax.Array:
        h = _act(self.conv_a[k - 1](h))
        return downsample(_act(self.conv_b[k - 1](h)))

    def __call__(self, x: jax.Array, stage: int, alpha: jax.Array) -> jax.Array:
        """Scores (N,) of images at resolution 4 * 2^stage, the newest block faded in by ``alpha``."""
        h = _act(self.from_rgb[stage](x))
        if stage > 0:
            h = fade_in(_act(self.from_rgb[stage - 1](downsample(x))), self._block(stage, h), alpha)
            for k in range(stage - 1, 0, -1):
                h = self._block(k, h)
        return self._head(h)

    def _head(self, h: jax.Array) -> jax.Array:
        if self.mbstd_group > 1:
            h = minibatch_stddev(h, self.mbstd_group)
        h = _act(self.conv_last(h))
        h = _act(self.dense_last(h.reshape(h.shape[0], -1)))
        return self.out(h)[:, 0]

    def init_all(self, x: jax.Array) -> list:
        """The scores of ``x`` (at the finest resolution) down the whole stack, and every
        fromRGB applied at its resolution (creates every layer's parameters at init)."""
        top = len(self.channels) - 1
        feats = [self.from_rgb[k](downsample(x, 2 ** (top - k))) for k in range(top + 1)]
        h = feats[-1]
        for k in range(top, 0, -1):
            h = self._block(k, h)
        return [self._head(h), *feats]


# -- the schedule ---------------------------------------------------------------------


class Schedule:
    """Stage k covers outer steps [start(k), start(k + 1)): stage 0 is ``stable`` steps;
    stage k > 0 is ``fade`` steps of fade-in then ``stable`` steps. The last stage runs on
    to the end of training."""

    def __init__(self, num_stages: int, stable: int, fade: int):
        self.num_stages, self.stable, self.fade = num_stages, stable, fade
        self.starts = tuple([0] + [stable + (k - 1) * (fade + stable) for k in range(1, num_stages)])
        self.total = stable + (num_stages - 1) * (fade + stable)

    def stage_of(self, step: int) -> int:
        """The stage of outer step ``step`` (a host int)."""
        return max(k for k, s in enumerate(self.starts) if s <= int(step))

    def stage_index(self, step: jax.Array) -> jax.Array:
        """:meth:`stage_of` traced: the stage of ``step`` (an int32 array)."""
        return jnp.sum(step >= jnp.asarray(self.starts[1:], jnp.int32)).astype(jnp.int32)

    def alpha(self, step: jax.Array, stage: int) -> jax.Array:
        """The fade-in weight at outer step ``step`` of ``stage``: (step - start) / fade
        clipped to [0, 1] (0 at the fade's first step, 1 from the stable phase on); 1 in
        stage 0 and when ``fade`` is 0. A pure function of the step."""
        if stage == 0 or self.fade == 0:
            return jnp.ones((), jnp.float32)
        t = (jnp.asarray(step, jnp.float32) - self.starts[stage]) / self.fade
        return jnp.clip(t, 0.0, 1.0)

    def phase_start(self, step: jax.Array, stage: int) -> jax.Array:
        """Whether ``step`` is the first step of a fade or of a stable phase of ``stage``."""
        first = self.starts[stage]
        if stage == 0 or self.fade == 0:
            return step == first
        return (step == first) | (step == first + self.fade)


# -- the Method -----------------------------------------------------------------------


def _reset_optimizer(ts: TrainState, flag: jax.Array) -> TrainState:
    """``ts`` with fresh optimizer moments where ``flag`` (the official reset_opt_for_new_lod)."""
    fresh = ts.tx.init(ts.params)
    return ts.replace(opt_state=jax.tree.map(lambda a, b: jnp.where(flag, a, b), fresh, ts.opt_state))


def _check_int(key: str, value: Any, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigError(f"{key}={value!r} must be an integer >= {low}")


class ProGAN:
    """The ProGAN Method (see gen_jax.registry.Method, registry.HasStages and the module
    docstring)."""

    def __init__(self, config: ml_collections.ConfigDict, info: DataInfo):
        self.config, self.info = config, info
        m, p = config.model, config.progan
        if info.kind != "image":
            raise ConfigError(f"ProGAN generates images; {info.name!r} is not image data")
        if tuple(config.data.value_range) != (-1.0, 1.0):
            raise ConfigError("ProGAN's generator is linear around 0: set data.value_range=(-1.0, 1.0)")
        res = tuple(p.resolutions)
        if not res or res[0] != 4 or any(b != 2 * a for a, b in zip(res[:-1], res[1:], strict=False)):
            raise ConfigError(f"progan.resolutions={res} must start at 4 and double at each stage")
        h, w, self.c = info.shape
        if (h, w) != (res[-1], res[-1]):
            raise ConfigError(f"progan.resolutions ends at {res[-1]}, but the images are {h}x{w}: "
                              f"set data.image_size={res[-1]} or change progan.resolutions")
        for key in ("g_channels", "d_channels"):
            if len(m[key]) != len(res):
                raise ConfigError(f"model.{key} has {len(m[key])} entries; one per resolution "
                                  f"({len(res)}: {res}) is needed")
        for key, value, low in (("model.latent_dim", m.latent_dim, 1), ("progan.stable_steps",
                                p.stable_steps, 1), ("progan.fade_steps", p.fade_steps, 0),
                                ("progan.mbstd_group", p.mbstd_group, 0)):
            _check_int(key, value, low)
        group = p.mbstd_group
        if group > 1 and (group > config.data.batch_size or config.data.batch_size % group):
            raise ConfigError(f"progan.mbstd_group={group} must divide data.batch_size="
                              f"{config.data.batch_size}")
        self.resolutions = res
        self.schedule = Schedule(len(res), p.stable_steps, p.fade_steps)
        self.g_net = Generator(tuple(m.g_channels), self.c, bool(p.pixel_norm))
        self.d_net = Discriminator(tuple(m.d_channels), group)
        self.g_tx = make_optimizer(config.optim, config.train.num_steps)
        self.d_tx = d_optimizer(config, config.train.num_steps)

    # -- pieces --------------------------------------------------------------

    def stage_of(self, step: int) -> int:
        """The stage (resolution index) of outer step ``step`` (registry.HasStages)."""
        return self.schedule.stage_of(step)

    def _z(self, rng: jax.Array, n: int) -> jax.Array:
        return jax.random.normal(rng, (n, self.config.model.latent_dim))

    def generator(self, params: Any, z: jax.Array, stage: int, alpha: jax.Array) -> jax.Array:
        """G's images at ``stage``'s resolution (linear output, not clipped)."""
        return self.g_net.apply({"params": params}, z, stage, alpha)

    def critic(self, params: Any, x: jax.Array, stage: int, alpha: jax.Array) -> jax.Array:
        """D's scores (N,) of images at ``stage``'s resolution."""
        return self.d_net.apply({"params": params}, x, stage, alpha)

    def real_images(self, x: jax.Array, stage: int, alpha: jax.Array) -> jax.Array:
        """Full-size data images as D sees them at ``stage``: average-pooled to its
        resolution and, during a fade, blended with their upsampled half-resolution copy
        (``fade_in(up(pool(x_r)), x_r, alpha)``, the official ``process_reals``)."""
        x = downsample(x, x.shape[1] // self.resolutions[stage])
        if stage == 0:
            return x
        return fade_in(upsample2(downsample(x)), x, alpha)

    def critic_loss(self, d_params: Any, real: jax.Array, fake: jax.Array, stage: int,
                    alpha: jax.Array, rng: jax.Array) -> tuple[jax.Array, dict]:
        """L_D = E[D(G(z))] - E[D(x)] + gp_weight GP + drift_weight E[D(x)^2] (Karras et al.,
        2018, Sec. A.1), with GP the WGAN-GP penalty (gans/losses.py) on interpolates of
        ``real`` and ``fake`` (both at ``stage``'s resolution).

        Returns:
          (loss, metrics: d_loss, d_real, d_fake, gp, drift).
        """
        p = self.config.progan

        def critic(xx):
            return self.critic(d_params, xx, stage, alpha)

        real_out, fake_out = critic(real), critic(fake)
        gp = gradient_penalty(critic, real, fake, rng)
        drift = drift_penalty(real_out)
        loss = wasserstein_d_loss(real_out, fake_out) + p.gp_weight * gp + p.drift_weight * drift
        return loss, {"d_loss": loss, "d_real": real_out.mean(), "d_fake": fake_out.mean(),
                      "gp": gp, "drift": drift}

    def _stage_update(self, stage: int, state: GANState, x: jax.Array, rng: jax.Array):
        alpha = self.schedule.alpha(state.step, stage)
        g, d = state.g, state.d
        if self.config.progan.reset_optimizer:
            flag = self.schedule.phase_start(state.step, stage)
            g, d = _reset_optimizer(g, flag), _reset_optimizer(d, flag)
        n = x.shape[0]
        real = self.real_images(x, stage, alpha)
        r_fake, r_gp, r_g = jax.random.split(rng, 3)
        fake = jax.lax.stop_gradient(self.generator(g.params, self._z(r_fake, n), stage, alpha))
        grads, d_metrics = jax.grad(self.critic_loss, has_aux=True)(d.params, real, fake, stage, alpha, r_gp)
        d = d.apply_gradients(grads)
        z = self._z(r_g, n)

        def g_loss_fn(params):
            fake = self.generator(params, z, stage, alpha)
            return wasserstein_g_loss(self.critic(d.params, fake, stage, alpha))

        g_loss, grads = jax.value_and_grad(g_loss_fn)(g.params)
        g = g.apply_gradients(grads)
        metrics = d_metrics | {"g_loss": g_loss, "alpha": alpha,
                               "resolution": jnp.float32(self.resolutions[stage])}
        metrics["loss"] = metrics["d_loss"] + metrics["g_loss"]  # both finite, for the runtime's check
        return GANState(step=state.step + 1, g=g, d=d), metrics

    # -- the Method contract -------------------------------------------------

    def init(self, rng: jax.Array, example_batch: dict) -> GANState:
        """Fresh G and D with the parameters of every resolution."""
        x = jnp.asarray(example_batch["x"])
        self.info.check_batch(x)
        rg, rd = jax.random.split(rng)
        n = max(self.config.progan.mbstd_group, 1)
        g_params = self.g_net.init(rg, self._z(rg, n), method=Generator.init_all)["params"]
        probe = jnp.zeros((n, *self.info.shape), jnp.float32)
        d_params = self.d_net.init(rd, probe, method=Discriminator.init_all)["params"]
        g = TrainState.create(g_params, self.g_tx, self.config.train.ema_decay)
        d = TrainState.create(d_params, self.d_tx, 0.0)
        return GANState(step=jnp.zeros((), jnp.int32), g=g, d=d)

    def stage_train_step(self, stage: int):
        """One outer step (one critic and one generator update) of ``stage``, for the
        steps whose :meth:`stage_of` is ``stage``; alpha from ``state.step``."""

        def step(state: GANState, batch: dict, rng: jax.Array):
            return self._stage_update(stage, state, batch["x"], rng)

        return step

    def train_step(self, state: GANState, batch: dict, rng: jax.Array):
        """One outer step of the current stage, every stage in one program (``lax.switch``
        on the step); the runtime uses :meth:`stage_train_step`."""
        branches = [self.stage_train_step(k) for k in range(len(self.resolutions))]
        return jax.lax.switch(self.schedule.stage_index(state.step), branches, state, batch, rng)

    def _trained(self, state: GANState) -> tuple[jax.Array, jax.Array]:
        """(the last step trained, its stage index); step 0 (stage 0) before any."""
        last = jnp.maximum(state.step - 1, 0)
        return last, self.schedule.stage_index(last)

    def eval_step(self, state: GANState, batch: dict, rng: jax.Array) -> dict:
        """The critic's and generator's Wasserstein losses (as the GAN Method's eval: no
        penalty terms in ``d_loss``; the drift reported on its own) at the stage and alpha of
        the last step trained, the (EMA) generator's samples against the validation batch.
        The gradient penalty is not evaluated: a second differentiation per stage in the
        eval program would cost more compile time than the number is worth."""
        last, index = self._trained(state)

        def at(stage):
            def f(x, rng):
                alpha = self.schedule.alpha(last, stage)
                real = self.real_images(x, stage, alpha)
                fake = self.generator(state.g.eval_params, self._z(rng, x.shape[0]), stage, alpha)
                real_out = self.critic(state.d.params, real, stage, alpha)
                fake_out = self.critic(state.d.params, fake, stage, alpha)
                metrics = {"d_loss": wasserstein_d_loss(real_out, fake_out),
                           "g_loss": wasserstein_g_loss(fake_out), "d_real": real_out.mean(),
                           "d_fake": fake_out.mean(), "drift": drift_penalty(real_out)}
                metrics["loss"] = metrics["d_loss"] + metrics["g_loss"]
                return metrics
            return f

        return jax.lax.switch(index, [at(k) for k in range(len(self.resolutions))], batch["x"], rng)

    def generate(self, state: GANState, z: jax.Array) -> jax.Array:
        """The (EMA) generator at latent codes ``z`` (N, latent_dim), at the stage and alpha
        of the last step trained, upsampled (nearest) to the data's size, clipped to [-1, 1]."""
        last, index = self._trained(state)
        size = self.resolutions[-1]

        def at(stage):
            def f(z):
                x = self.generator(state.g.eval_params, z, stage, self.schedule.alpha(last, stage))
                f_up = size // self.resolutions[stage]
                return jnp.repeat(jnp.repeat(x, f_up, axis=1), f_up, axis=2)
            return f

        x = jax.lax.switch(index, [at(k) for k in range(len(self.resolutions))], z)
        return jnp.clip(x, -1.0, 1.0)

    def sample(self, state: GANState, rng: jax.Array, num: int, **kw: Any) -> jax.Array:
        """``num`` samples of the (EMA) generator (see :meth:`generate`)."""
        return self.generate(state, self._z(rng, num))


@register("progan")
def make_progan(config: ml_collections.ConfigDict, info: DataInfo) -> ProGAN:
    """Factory registered as "progan"."""
    return ProGAN(config, info)


__all__ = ["Discriminator", "EqualizedConv", "EqualizedDense", "Generator", "ProGAN", "Schedule",
           "downsample", "drift_penalty", "fade_in", "he_scale", "make_progan", "minibatch_stddev",
           "pixel_norm", "stddev_group", "upsample2"]
