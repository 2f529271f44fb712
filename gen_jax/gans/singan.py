"""SinGAN (Shaham, Dekel & Michaeli, 2019): a pyramid of patch GANs learned from one image.

Scales n = 0 (coarsest) .. N-1 (the image itself) each have a small fully convolutional
generator G_n and critic D_n. They are trained one after the other, coarse to fine,
``singan.steps_per_scale`` outer steps each; scales below the current one are frozen.
G_n maps noise plus the upsampled output of the scales below to an image at scale n,
residually: ``x_n = G_n(amp_n z_n + up(x_{n-1})) + up(x_{n-1})``. Each step is
``singan.d_steps`` WGAN-GP critic updates and ``singan.g_steps`` generator updates on

  L_G = -E[D_n(x~_n)] + alpha ||G_n(amp_n z*_n + up(x*_{n-1})) - x_n||^2,

the reconstruction term running the fixed noise maps {z*_0, 0, ..., 0} through the
pyramid (x*_n its outputs). The noise amplitude of scale n > 0 is
``singan.noise_amp`` times the RMSE between the real image at scale n and the upsampled
reconstruction from scale n-1 (the paper's Sec. 2.2 rule; amp_0 = 1), set once, at the
first step of the scale.

Details from the official implementation (github.com/tamarott/SinGAN) that the paper
leaves out, and followed here: 3x3 convs without padding (the input is zero-padded
once by ``num_layers`` pixels, so G keeps the size and D's map is smaller), LeakyReLU
0.2, tanh on G's output before the skip; the coarsest noise is one channel repeated
over the image's channels; Adam(5e-4, b1=0.5) whose rate drops by ``lr_gamma`` at
``lr_decay_at`` of each scale; scale n starts from scale n-1's trained weights; the
gradient penalty takes the gradient norm over channels at each pixel (weight 0.1).
Differences: the official ConvBlocks use batch norm on a batch of one image while
training (an instance norm) and running averages when sampling; here instance norm is
used in both (``model.norm``). Pyramid resizing is ``jax.image.resize`` bicubic with
antialiasing in place of the official MATLAB-style imresize.

Runtime fit: one Method, one ``train_step`` for all scales. The scale is
``state.step // steps_per_scale``, so it lives in the (checkpointed) state and a resumed
run continues exactly, across scale boundaries too. The runtime compiles one program
per scale when the scale is reached (registry.HasStages: :meth:`SinGAN.stage_of`,
:meth:`SinGAN.stage_train_step`); ``train_step`` is the all-scale form (``lax.switch``),
the same numbers in one bigger program. XLA:CPU runs ``lax.conv``'s gradients inside
``lax.switch`` and ``lax.scan`` through a naive loop, so by default
(``model.conv='wdot'``) the convolutions are :func:`conv_valid`, whose input gradient
is again a forward convolution and whose weight gradient is one matmul (measured, a
5-conv critic loss with the gradient penalty at 42x42, differentiated inside a switch:
382 ms with lax's gradients, 44 ms with conv_valid's). ``model.conv='xla'``
(:class:`XlaConv`, the same parameters) compiles faster (the smoke config uses it) and
is the form for accelerators.

Single-image FID (SIFID, the paper's Sec. 3.2): :func:`sifid`.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import struct

from gen_jax.data import DataInfo
from gen_jax.errors import ConfigError
from gen_jax.gans.losses import gradient_penalty, wasserstein_d_loss, wasserstein_g_loss
from gen_jax.registry import register
from gen_jax.state import TrainState

NORMS = ("instance", "none")
CONVS = ("wdot", "xla")
PENALTIES = ("pixel", "image")


_NHWC = ("NHWC", "HWIO", "NHWC")


@jax.custom_vjp
def conv_valid(x: jax.Array, w: jax.Array) -> jax.Array:
    """Stride-1 VALID convolution, NHWC x HWIO, whose gradients stay fast inside ``lax.switch``
    and ``lax.scan`` on XLA:CPU: the input gradient is again this forward convolution (of the
    padded cotangent with the flipped, transposed kernel) and the weight gradient one matmul
    of the input's k^2 shifted slices with the cotangent. Differentiating twice (the gradient
    penalty) reuses the same rules."""
    return jax.lax.conv_general_dilated(x, w, (1, 1), "VALID", dimension_numbers=_NHWC)


def _conv_valid_fwd(x, w):
    return conv_valid(x, w), (x, w)


def _conv_valid_bwd(res, g):
    x, w = res
    k, ho, wo = w.shape[0], g.shape[1], g.shape[2]
    gx = conv_valid(jnp.pad(g, ((0, 0), (k - 1, k - 1), (k - 1, k - 1), (0, 0))),
                    jnp.flip(w, (0, 1)).transpose(0, 1, 3, 2))
    cols = jnp.concatenate([x[:, i:i + ho, j:j + wo] for i in range(k) for j in range(k)], -1)
    gw = jnp.einsum("nhwk,nhwo->ko", cols, g).reshape(w.shape)
    return gx, gw


conv_valid.defvjp(_conv_valid_fwd, _conv_valid_bwd)


class WdotConv(nn.Module):
    """A stride-1, unpadded (VALID) k x k convolution computed by :func:`conv_valid`."""

    features: int
    kernel: int = 3

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        k = self.kernel
        # The official init: N(0, 0.02) kernels, zero biases.
        w = self.param("kernel", nn.initializers.normal(0.02), (k, k, x.shape[-1], self.features))
        b = self.param("bias", nn.initializers.zeros, (self.features,))
        return conv_valid(x, w) + b


class InstanceNorm(nn.Module):
    """Per-example, per-channel normalization over the spatial axes, with scale and bias."""

    eps: float = 1e-5

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        mean = x.mean((1, 2), keepdims=True)
        var = x.var((1, 2), keepdims=True)
        scale = self.param("scale", nn.initializers.ones, (x.shape[-1],))
        bias = self.param("bias", nn.initializers.zeros, (x.shape[-1],))
        return (x - mean) * jax.lax.rsqrt(var + self.eps) * scale + bias


class XlaConv(WdotConv):
    """:class:`WdotConv` (same parameters) with lax's own gradients."""

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        k = self.kernel
        w = self.param("kernel", nn.initializers.normal(0.02), (k, k, x.shape[-1], self.features))
        b = self.param("bias", nn.initializers.zeros, (self.features,))
        return jax.lax.conv_general_dilated(x, w, (1, 1), "VALID", dimension_numbers=_NHWC) + b


def _conv(kind: str):
    return WdotConv if kind == "wdot" else XlaConv


def _body(x: jax.Array, channels: int, num_blocks: int, kernel: int, norm: str, conv: str) -> jax.Array:
    for _ in range(num_blocks):
        x = _conv(conv)(channels, kernel)(x)
        if norm == "instance":
            x = InstanceNorm()(x)
        x = nn.leaky_relu(x, 0.2)
    return x


class Generator(nn.Module):
    """G_n: ``tanh(convs(pad(noisy))) + prev``, the same size as ``prev``."""

    channels: int
    num_layers: int
    kernel: int
    norm: str
    out_channels: int
    conv: str = "wdot"

    @nn.compact
    def __call__(self, noisy: jax.Array, prev: jax.Array) -> jax.Array:
        p = self.num_layers * (self.kernel - 1) // 2
        x = jnp.pad(noisy, ((0, 0), (p, p), (p, p), (0, 0)))
        x = _body(x, self.channels, self.num_layers - 1, self.kernel, self.norm, self.conv)
        return jnp.tanh(_conv(self.conv)(self.out_channels, self.kernel)(x)) + prev


class Critic(nn.Module):
    """D_n: a patch critic; its score map is smaller than the input by the receptive field - 1."""

    channels: int
    num_layers: int
    kernel: int
    norm: str
    conv: str = "wdot"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = _body(x, self.channels, self.num_layers - 1, self.kernel, self.norm, self.conv)
        return _conv(self.conv)(1, self.kernel)(x)


def pyramid_shapes(height: int, width: int, num_scales: int, min_size: int,
                   scale_v: float = 1.0, scale_h: float = 1.0) -> tuple[tuple[int, int], ...]:
    """(h_n, w_n) of scales 0 (coarsest) .. N-1: the image shrunk by r^(N-1-n), r chosen so
    the coarsest scale's shorter side is ``min_size`` (as the official code fits its
    scale factor); ``scale_v`` / ``scale_h`` stretch every scale (samples of other sizes)."""
    r = (min_size / min(height, width)) ** (1.0 / (num_scales - 1)) if num_scales > 1 else 1.0
    out = []
    for n in range(num_scales):
        f = r ** (num_scales - 1 - n)
        out.append((max(1, round(height * f * scale_v)), max(1, round(width * f * scale_h))))
    return tuple(out)


def resize(x: jax.Array, shape: tuple[int, int]) -> jax.Array:
    """NHWC bicubic resize (antialiased when shrinking)."""
    if tuple(x.shape[1:3]) == tuple(shape):
        return x
    return jax.image.resize(x, (x.shape[0], *shape, x.shape[-1]), "bicubic", antialias=True)


def pixel_gradient_penalty(critic, real: jax.Array, fake: jax.Array, rng: jax.Array) -> jax.Array:
    """The official SinGAN penalty: E_pixels[(||grad_x sum D(x_hat)||_channels - 1)^2] with
    x_hat = eps x + (1 - eps) G(z), eps ~ U[0, 1] per example; the norm is over the channels
    at each pixel (``gradients.norm(2, dim=1)`` in NCHW), not over the whole image as in
    Gulrajani et al. (2017) (:func:`gen_jax.gans.losses.gradient_penalty`, ``singan.gp='image'``)."""
    eps = jax.random.uniform(rng, (real.shape[0], 1, 1, 1))
    x_hat = eps * real + (1.0 - eps) * fake
    grads = jax.grad(lambda x: jnp.sum(critic(x)))(x_hat)
    norms = jnp.sqrt(jnp.sum(grads ** 2, axis=-1) + 1e-12)
    return jnp.mean((norms - 1.0) ** 2)


class SinGANState(struct.PyTreeNode):
    """Outer steps so far (the scale is ``step // steps_per_scale``), one TrainState per
    scale for G and for D, the noise amplitudes (set when a scale starts; 0 before) and
    the fixed reconstruction noise z*_0 of the coarsest scale."""

    step: jax.Array
    g: tuple
    d: tuple
    noise_amp: jax.Array
    z_rec: jax.Array


def _select(flag: jax.Array, a: Any, b: Any) -> Any:
    return jax.tree.map(lambda u, v: jnp.where(flag, u, v), a, b)


class SinGAN:
    """The SinGAN Method (see gen_jax.registry.Method and the module docstring)."""

    def __init__(self, config: ml_collections.ConfigDict, info: DataInfo):
        self.config, self.info = config, info
        m, s = config.model, config.singan
        if info.kind != "image":
            raise ConfigError(f"SinGAN learns one image; {info.name!r} is not image data")
        if tuple(config.data.value_range) != (-1.0, 1.0):
            raise ConfigError("SinGAN's generators output tanh + skip: set data.value_range=(-1.0, 1.0)")
        if config.data.batch_size != 1:
            raise ConfigError(f"SinGAN trains on one image: data.batch_size must be 1, got "
                              f"{config.data.batch_size}")
        if m.norm not in NORMS:
            raise ConfigError(f"model.norm={m.norm!r}; known: {', '.join(NORMS)}")
        if m.conv not in CONVS:
            raise ConfigError(f"model.conv={m.conv!r}; known: {', '.join(CONVS)}")
        if s.gp not in PENALTIES:
            raise ConfigError(f"singan.gp={s.gp!r}; known: {', '.join(PENALTIES)}")
        for key, value, low in (("model.channels", m.channels, 1), ("model.num_layers", m.num_layers, 2),
                                ("singan.num_scales", s.num_scales, 1), ("singan.steps_per_scale",
                                s.steps_per_scale, 1), ("singan.d_steps", s.d_steps, 1),
                                ("singan.g_steps", s.g_steps, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ConfigError(f"{key}={value!r} must be an integer >= {low}")
        if m.kernel % 2 != 1:
            raise ConfigError(f"model.kernel={m.kernel} must be odd")
        self.shrink = m.num_layers * (m.kernel - 1)  # D's map is this much smaller than its input
        h, w, self.c = info.shape
        if not self.shrink < s.min_size <= min(h, w):
            raise ConfigError(f"singan.min_size={s.min_size} must exceed the critic's receptive field - 1 "
                              f"({self.shrink}) and be at most the image's shorter side ({min(h, w)})")
        self.num_scales, self.sps = s.num_scales, s.steps_per_scale
        self.shapes = pyramid_shapes(h, w, s.num_scales, s.min_size)
        self.g_net = Generator(m.channels, m.num_layers, m.kernel, m.norm, self.c, m.conv)
        self.d_net = Critic(m.channels, m.num_layers, m.kernel, m.norm, m.conv)
        self.g_tx = self._optimizer(config.optim, s.g_steps)
        self.d_tx = self._optimizer(config.d_optim if "d_optim" in config else config.optim, s.d_steps)

    def _optimizer(self, optim: ml_collections.ConfigDict, updates_per_step: int):
        if optim.name != "adam":
            raise ConfigError(f"SinGAN uses Adam (optim.name='adam'), got {optim.name!r}")
        s = self.config.singan
        boundary = int(s.lr_decay_at * self.sps * updates_per_step)
        lr = optax.piecewise_constant_schedule(optim.learning_rate, {boundary: s.lr_gamma})
        return optax.adam(lr, b1=optim.b1, b2=optim.b2)

    # -- the pyramid -----------------------------------------------------------

    def scale_of(self, step: jax.Array) -> jax.Array:
        """The scale trained at outer step ``step`` (0-based)."""
        return jnp.minimum(step // self.sps, self.num_scales - 1)

    def trained_scale(self, state: SinGANState) -> jax.Array:
        """The finest scale trained so far (0 before any step)."""
        return self.scale_of(jnp.maximum(state.step - 1, 0))

    def real_pyramid(self, x: jax.Array) -> list[jax.Array]:
        """The training image at every scale (the last one is ``x`` itself)."""
        return [resize(x, shape) for shape in self.shapes]

    def noise(self, rng: jax.Array, n: int, num: int, shape: tuple[int, int]) -> jax.Array:
        """z_n: one channel repeated over the image's channels at the coarsest scale."""
        if n == 0:
            return jnp.broadcast_to(jax.random.normal(rng, (num, *shape, 1)), (num, *shape, self.c))
        return jax.random.normal(rng, (num, *shape, self.c))

    def run(self, g_params: tuple, amps: jax.Array, zs: list, shapes, active: jax.Array | None = None):
        """x_{len(zs)-1}: G_0 .. G_{len(zs)-1} applied to the noise maps ``zs`` (one per scale, at
        ``shapes``), each on the bicubic upsampling of the one below (zeros under G_0). Scales
        above ``active`` pass their input through unchanged (not trained yet)."""
        num = zs[0].shape[0]
        x = jnp.zeros((num, *shapes[0], self.c))
        for n, z in enumerate(zs):
            prev = resize(x, shapes[n])
            out = self.g_net.apply({"params": g_params[n]}, amps[n] * z + prev, prev)
            x = out if active is None else jnp.where(n <= active, out, prev)
        return x

    def _rec_zs(self, state: SinGANState, upto: int, shapes) -> list:
        """The fixed reconstruction noise {z*_0, 0, ..., 0} of scales 0 .. upto-1."""
        return [state.z_rec if n == 0 else jnp.zeros((1, *shapes[n], self.c)) for n in range(upto)]

    def _prev(self, g_params, amps, zs, n: int, num: int) -> jax.Array:
        """The input image of scale n: the output of scales < n upsampled (zeros for n = 0)."""
        if n == 0:
            return jnp.zeros((num, *self.shapes[0], self.c))
        return resize(self.run(g_params, amps, zs, self.shapes[:n]), self.shapes[n])

    def _random_zs(self, rng: jax.Array, upto: int, num: int, shapes) -> list:
        keys = jax.random.split(rng, max(upto, 1))
        return [self.noise(keys[n], n, num, shapes[n]) for n in range(upto)]

    # -- one scale's step --------------------------------------------------------

    def _critic_loss(self, params, real, fake, rng):
        critic = lambda xx: self.d_net.apply({"params": params}, xx)  # noqa: E731
        # One pass over real and fake together (the norm is per example, so they stay apart).
        out = critic(jnp.concatenate([real, fake]))
        real_out, fake_out = out[:1], out[1:]
        if self.config.singan.gp == "pixel":
            gp = pixel_gradient_penalty(critic, real, fake, rng)
        else:
            gp = gradient_penalty(lambda xx: critic(xx).sum((1, 2, 3)), real, fake, rng)
        loss = wasserstein_d_loss(real_out, fake_out) + self.config.singan.gp_weight * gp
        return loss, {"d_loss": loss, "d_real": real_out.mean(), "d_fake": fake_out.mean(), "gp": gp}

    def _scale_step(self, n: int, state: SinGANState, x: jax.Array, rng: jax.Array):
        s, k = self.config.singan, self.config.singan.d_steps
        real = resize(x, self.shapes[n])
        first = state.step == n * self.sps
        g_params = tuple(ts.params for ts in state.g)
        r_prev, r_z, r_gp = jax.random.split(rng, 3)
        # The inputs of scale n from the frozen scales below, in one batch: the reconstruction
        # path (row 0: fixed noise) and one random path per critic step (rows 1..k).
        rand = self._random_zs(r_prev, n, k, self.shapes)
        zs = [jnp.concatenate([r, q]) for r, q in zip(self._rec_zs(state, n, self.shapes), rand, strict=True)]
        prevs = self._prev(g_params, state.noise_amp, zs, n, 1 + k)
        rec_prev, prev = prevs[:1], prevs[1:]
        # The noise amplitude of scale n, when it starts: noise_amp x RMSE(real, up(rec_{n-1})).
        amp_n = jnp.ones(()) if n == 0 else s.noise_amp * jnp.sqrt(jnp.mean((real - rec_prev) ** 2))
        amps = state.noise_amp.at[n].set(jnp.where(first, amp_n, state.noise_amp[n]))
        amp = amps[n]
        g, d = state.g[n], state.d[n]
        if n > 0:  # scale n starts from scale n-1's trained weights (fresh optimizer state)
            g = g.replace(params=_select(first, state.g[n - 1].params, g.params))
            d = d.replace(params=_select(first, state.d[n - 1].params, d.params))
        z = self.noise(r_z, n, k, self.shapes[n])
        # G is fixed during the critic steps, so their k fakes are drawn at once.
        fakes = jax.lax.stop_gradient(self.g_net.apply({"params": g.params}, amp * z + prev, prev))
        # The k critic steps and the generator steps are lax.scan loops: the program (and its
        # compile time) stays one step's size. Inside loops and lax.switch, lax.conv's
        # gradients are slow on XLA:CPU; model.conv="wdot" keeps them fast.

        def d_body(d, inp):
            fake, key = inp
            grads, metrics = jax.grad(self._critic_loss, has_aux=True)(d.params, real, fake[None], key)
            return d.apply_gradients(grads), metrics

        d, d_metrics = jax.lax.scan(d_body, d, (fakes, jax.random.split(r_gp, k)))
        rec_z = state.z_rec if n == 0 else jnp.zeros_like(real)
        # The generator steps use the last critic step's noise and input (as the official code),
        # with the reconstruction in the same batch (row 1).
        g_in = jnp.concatenate([amp * z[-1:] + prev[-1:], amp * rec_z + rec_prev])
        g_prev = jnp.concatenate([prev[-1:], rec_prev])

        def g_loss_fn(params):
            out = self.g_net.apply({"params": params}, g_in, g_prev)
            adv = wasserstein_g_loss(self.d_net.apply({"params": d.params}, out[:1]))
            rec = jnp.mean((out[1:] - real) ** 2)
            return adv + s.rec_weight * rec, {"g_adv": adv, "rec_mse": rec}

        def g_body(g, _):
            (loss, metrics), grads = jax.value_and_grad(g_loss_fn, has_aux=True)(g.params)
            return g.apply_gradients(grads), metrics | {"g_loss": loss}

        g, g_metrics = jax.lax.scan(g_body, g, None, length=s.g_steps)
        metrics = {key: v.mean() for key, v in d_metrics.items()}
        metrics |= {key: v[-1] for key, v in g_metrics.items()} | {"noise_amp": amp, "scale": jnp.float32(n)}
        new = state.replace(g=state.g[:n] + (g,) + state.g[n + 1:], d=state.d[:n] + (d,) + state.d[n + 1:],
                            noise_amp=amps)
        return new, metrics

    # -- the Method contract -------------------------------------------------

    def init(self, rng: jax.Array, example_batch: dict) -> SinGANState:
        """Fresh networks; every scale gets the same initial weights, which matter only at
        scale 0: scale n > 0 starts from scale n-1's trained weights."""
        x = jnp.asarray(example_batch["x"])
        self.info.check_batch(x)
        r_z, r_g, r_d = jax.random.split(rng, 3)
        probe = jnp.zeros((1, *self.shapes[0], self.c))
        g_params = self.g_net.init(r_g, probe, probe)["params"]
        d_params = self.d_net.init(r_d, probe)["params"]
        copies = lambda p: tuple(jax.tree.map(jnp.copy, p) for _ in range(self.num_scales))  # noqa: E731
        return SinGANState(step=jnp.zeros((), jnp.int32),
                           g=tuple(TrainState.create(p, self.g_tx) for p in copies(g_params)),
                           d=tuple(TrainState.create(p, self.d_tx) for p in copies(d_params)),
                           noise_amp=jnp.zeros((self.num_scales,), jnp.float32),
                           z_rec=self.noise(r_z, 0, 1, self.shapes[0]))

    def stage_of(self, step: int) -> int:
        """The scale trained at outer step ``step`` (registry.HasStages: the runtime
        compiles one program per scale)."""
        return min(int(step) // self.sps, self.num_scales - 1)

    def stage_train_step(self, n: int):
        """One outer step of scale ``n`` (for steps whose :meth:`stage_of` is ``n``)."""

        def step(state: SinGANState, batch: dict, rng: jax.Array):
            state, metrics = self._scale_step(n, state, batch["x"][:1], rng)
            metrics["loss"] = metrics["d_loss"] + metrics["g_loss"]
            return state.replace(step=state.step + 1), metrics

        return step

    def train_step(self, state: SinGANState, batch: dict, rng: jax.Array):
        """One outer step of the current scale, every scale in one program (``lax.switch``
        on ``step // steps_per_scale``); the runtime uses :meth:`stage_train_step`."""
        branches = [self.stage_train_step(n) for n in range(self.num_scales)]
        return jax.lax.switch(self.scale_of(state.step), branches, state, batch, rng)

    def eval_step(self, state: SinGANState, batch: dict, rng: jax.Array) -> dict:
        """The reconstruction RMSE of the whole image (the fixed noise through the scales
        trained so far, upsampled to full size), in the data's [-1, 1] units (loss = it)."""
        del rng
        rmse = jnp.sqrt(jnp.mean((self.reconstruction(state) - batch["x"][:1]) ** 2))
        return {"rec_rmse": rmse, "loss": rmse}

    def sample(self, state: SinGANState, rng: jax.Array, num: int, scale_v: float = 1.0,
               scale_h: float = 1.0, **kw: Any) -> jax.Array:
        """``num`` random images, every scale's noise map stretched by ``scale_v`` (height)
        and ``scale_h`` (width): other sizes and aspect ratios. Scales not trained yet pass
        the finest trained scale's output through, upsampled. Clipped to [-1, 1]."""
        h, w, _ = self.info.shape
        shapes = pyramid_shapes(h, w, self.num_scales, self.config.singan.min_size, scale_v, scale_h)
        g_params = tuple(ts.params for ts in state.g)
        zs = self._random_zs(rng, self.num_scales, num, shapes)
        return jnp.clip(self.run(g_params, state.noise_amp, zs, shapes, self.trained_scale(state)), -1.0, 1.0)

    def reconstruction(self, state: SinGANState) -> jax.Array:
        """The fixed noise maps {z*_0, 0, ...} through the trained pyramid: (1, H, W, C)."""
        g_params = tuple(ts.params for ts in state.g)
        return self.run(g_params, state.noise_amp, self._rec_zs(state, self.num_scales, self.shapes),
                        self.shapes, self.trained_scale(state))


@register("singan")
def make_singan(config: ml_collections.ConfigDict, info: DataInfo) -> SinGAN:
    """Factory registered as "singan"."""
    return SinGAN(config, info)


# -- SIFID ---------------------------------------------------------------------------

# The official SIFID code (tamarott/SinGAN, SIFID/sifid_score.py with dims=64 and its own copy
# of pytorch-fid's SIFID/inception.py) compares "block 0": Conv2d_1a, 2a and 2b, ending before
# the first max pool (that copy moved the pool to the start of block 1; pytorch-fid's own
# block 0 ends after it). Both are taps of the project's InceptionV3.
SIFID_TAP = "Conv2d_2b_3x3"
SIFID_TAPS = {"Conv2d_2b_3x3": "the official SIFID's block 0 (before the first max pool)",
              "MaxPool_3a": "pytorch-fid's block 0 (after the first 3x3 stride-2 max pool)"}


@functools.lru_cache(maxsize=2)
def _block0_apply(tap: str):
    from gen_jax.metrics.inception import InceptionV3

    return jax.jit(InceptionV3(resize=False, capture=(tap,)).apply)


def sifid_features(variables: Any, images: np.ndarray, tap: str = SIFID_TAP) -> np.ndarray:
    """The 64-d features at every position of each image: (n, positions, 64), float64.

    Args:
      variables: the FID Inception's variables (those of the layers up to ``tap`` suffice).
      images: (n, H, W, C) or (H, W, C) in [0, 1], C = 1 (repeated to RGB) or 3; not resized.
      tap: a key of :data:`SIFID_TAPS`.
    """
    if tap not in SIFID_TAPS:
        raise ConfigError(f"SIFID tap {tap!r} is not one of {sorted(SIFID_TAPS)}")
    x = np.asarray(images, np.float32)
    x = x.reshape(-1, *x.shape[-3:])
    if x.shape[-1] == 1:
        x = np.repeat(x, 3, -1)
    f = np.asarray(_block0_apply(tap)(variables, jnp.asarray(x))[tap], np.float64)
    if f.shape[1] * f.shape[2] < 2:
        raise ValueError(f"SIFID needs images large enough for 2 feature positions at {tap}, "
                         f"got {x.shape[1]}x{x.shape[2]}")
    return f.reshape(len(x), -1, f.shape[-1])


def sifid_per_image(variables: Any, real: np.ndarray, fakes: np.ndarray, tap: str = SIFID_TAP) -> np.ndarray:
    """SIFID of each fake against ``real`` (see :func:`sifid`): (n,) float64."""
    from gen_jax.metrics.frechet import frechet_distance

    real_f = sifid_features(variables, real, tap)[0]
    return np.asarray([frechet_distance(real_f, f) for f in sifid_features(variables, fakes, tap)])


def sifid(real: np.ndarray, fakes: np.ndarray, inception_path: str = "",
          tap: str = SIFID_TAP) -> tuple[float | None, str]:
    """Single-image FID (Shaham et al., 2019, Sec. 3.2): for each fake, the Fréchet distance
    between Gaussians fitted to the early Inception features (64-d, one per position) of the
    real image and of the fake; returned is their mean over the fakes.

    As the official code (tamarott/SinGAN SIFID, ``dims=64``): the features are block 0, the
    outputs of Conv2d_2b_3x3 (before the first max pool: ``tap="MaxPool_3a"`` gives
    pytorch-fid's block 0, after it); images are not resized, [0, 1] is mapped to [-1, 1],
    covariances are the (n - 1) estimates. The network is the project's FID Inception
    (gen_jax/metrics/inception.py, the TF FID weights), where the official code uses
    torchvision's ImageNet InceptionV3: values compare within this project, not with the
    paper's table.

    Args:
      real: (H, W, C) or (1, H, W, C) image in [0, 1] (C = 1 or 3; gray is repeated to RGB).
      fakes: (n, H', W', C) samples in [0, 1] (at least 9x9; 15x15 with the pool).
      inception_path: ``config.eval.inception_path`` ("" = the installed weights).
      tap: a key of :data:`SIFID_TAPS`.

    Returns:
      (mean SIFID, description of the weights), or (None, the reason) when no weights.
    """
    from gen_jax.metrics.inception import load_weights

    try:
        variables, source = load_weights(inception_path)
    except ConfigError as e:  # includes WeightsUnavailable
        return None, f"SIFID unavailable: {e}"
    return float(np.mean(sifid_per_image(variables, real, fakes, tap))), source


__all__ = ["Critic", "Generator", "SIFID_TAP", "SIFID_TAPS", "SinGAN", "SinGANState", "WdotConv", "XlaConv",
           "conv_valid", "make_singan", "pixel_gradient_penalty", "pyramid_shapes", "sifid",
           "sifid_features", "sifid_per_image"]
