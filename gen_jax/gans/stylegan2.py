"""StyleGAN2 (Karras, Laine, Aittala, Hellsten, Lehtinen & Aila, 2020) with DiffAugment
(Zhao, Liu, Lin, Zhu & Han, 2020) for few-shot data.

The pieces, each in one function or module below:

- **mapping network** (:class:`Mapping`): z normalized to unit second moment
  (progan.pixel_norm) -> ``model.mapping_layers`` fully connected LeakyReLU layers to w,
  with the learning-rate multiplier ``stylegan2.mapping_lr_mul`` (0.01): weights stored as
  N(0, 1 / lr_mul^2) and scaled by lr_mul at run time, so Adam moves them lr_mul times
  slower (:class:`FullyConnected`).
- **modulated / demodulated convolutions** (Sec. 2.2, Eq. 1-3; :func:`modulated_conv`):
  w'_ijk = s_i w_ijk, w''_ijk = w'_ijk / sqrt(sum_ik w'^2 + eps) per sample and output
  channel j, computed in the equivalent form conv(x * s, w) * d (the official
  ``fused_modconv=False`` path: one ordinary convolution for the batch, no grouped conv);
  :func:`modulated_weights` is the per-sample weight form. Styles s come from w through
  an affine layer per conv (bias 1). ToRGB layers modulate without demodulation.
- **noise inputs** (:class:`SynthesisLayer`): one N(0, 1) map per layer and sample, scaled
  by a learned per-layer strength (initialized 0), added before the bias.
- **constant 4x4 input and skip generator** (Fig. 7b; :class:`Synthesis`): a learned
  4x4 constant; per resolution two 3x3 modulated convs (one at 4x4) and a 1x1 ToRGB whose
  output is added to the upsampled image of the resolution below. w is broadcast to
  ``2 * len(g_channels)`` per-layer styles; a ToRGB shares its w with the next conv.
- **residual discriminator with minibatch stddev** (Fig. 7c; :class:`Discriminator`):
  fromRGB at the top, per resolution conv3-conv3-pool plus a pooled 1x1 skip, summed and
  scaled by 1/sqrt(2); at 4x4 minibatch stddev (progan.minibatch_stddev), conv3, dense,
  dense to one logit. Equalized learning rate as ProGAN (progan.EqualizedConv/Dense).
- **non-saturating logistic loss** (gans/losses.py: bce_d_loss, nonsaturating_g_loss).
- **lazy regularization** (Sec. 3.1): the R1 penalty
  gamma/2 E||grad_x D(x)||^2 on real images (:func:`r1_penalty`) every
  ``stylegan2.r1_every`` steps and the path-length penalty (:func:`path_lengths`,
  :meth:`StyleGAN2.pl_loss`) every ``stylegan2.pl_every`` steps, each as a separate
  optimizer update of its network with the penalty multiplied by its interval; both
  networks' Adam use lr c, b1^c, b2^c with c = k / (k + 1) (the official code's
  ``mb_ratio``).
- **path-length regularization** (Sec. 3.2, Eq. 4): ||J_w^T y|| with y ~ N(0, I) / sqrt(H W)
  in image space, J the Jacobian of the image with respect to the per-layer styles (the
  length: the root of the mean over layers of the squared norm, as the official code),
  penalized as (length - a)^2, a the running mean of the lengths (decay 0.01) kept in the
  state, on batch / ``stylegan2.pl_batch_shrink`` samples.
- **style mixing regularization** (Sec. 3.1 of StyleGAN; :func:`mixing_cutoff`,
  :func:`mix_styles`): with probability ``stylegan2.style_mixing_prob`` a batch's styles
  switch to those of a second latent from a crossover layer drawn uniformly in
  [1, num_ws); used for D's fakes, G's loss and the path-length batch, as the official code.
- **G EMA** with the official rampup (:func:`ema_beta`) and the **truncation trick in w**
  (:func:`truncate`: w_avg + psi (w - w_avg)), w_avg the mean of w tracked in training
  (``stylegan2.w_avg_beta``).
- **DiffAugment** (gen_jax/gans/diffaugment.py): color (brightness, saturation, contrast),
  translation (1/8 of the size, zero fill) and cutout (a square of half the size), fresh
  per image, applied to real and fake images before every D evaluation in training (the
  R1 penalty is taken at the augmented reals, as StyleGAN2-ADA), differentiable, so G's
  gradient passes through them.

Differences from the official code, for a CPU: 2x resampling is bilinear (the [1, 3, 3, 1]
filter's interpolation, edges clamped) for G and 2x2 average pooling for D, in place of
upfirdn2d with a blur; one style-mixing crossover per batch and w_avg updated once per
step from G's latents; the tracked w_avg is shared by G and its EMA (the official code
copies it).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from gen_jax.data import DataInfo
from gen_jax.errors import ConfigError
from gen_jax.gans.biggan import ema_update
from gen_jax.gans.diffaugment import AUGMENTS, diff_augment
from gen_jax.gans.gan import GANState
from gen_jax.gans.losses import bce_d_loss, nonsaturating_g_loss
from gen_jax.gans.progan import (
    EqualizedConv,
    EqualizedDense,
    downsample,
    he_scale,
    minibatch_stddev,
    pixel_norm,
)
from gen_jax.nn.conv import conv_general_dilated
from gen_jax.registry import register
from gen_jax.state import TrainState, make_optimizer

_NHWC = ("NHWC", "HWIO", "NHWC")


def act(x: jax.Array) -> jax.Array:
    """LeakyReLU 0.2 times sqrt(2) (the official bias_act's lrelu gain)."""
    return nn.leaky_relu(x, 0.2) * math.sqrt(2.0)


def upsample_bilinear2(x: jax.Array) -> jax.Array:
    """2x bilinear upsampling of NHWC maps: each output pixel is 3/4 its nearest input pixel
    and 1/4 the next one along each axis (edges clamped), as two products with a fixed
    (2 size, size) interpolation matrix, in ``x``'s dtype (exact in bfloat16 too)."""
    def matrix(size):
        a = np.zeros((2 * size, size), x.dtype)
        for i in range(size):
            a[2 * i, i] += 0.75
            a[2 * i, max(i - 1, 0)] += 0.25
            a[2 * i + 1, i] += 0.75
            a[2 * i + 1, min(i + 1, size - 1)] += 0.25
        return a
    x = jnp.einsum("ih,nhwc->niwc", matrix(x.shape[1]), x)
    return jnp.einsum("jw,niwc->nijc", matrix(x.shape[2]), x)


# -- modulated convolution ---------------------------------------------------------------


def demodulation(w: jax.Array, s: jax.Array, eps: float = 1e-8) -> jax.Array:
    """Eq. 3's factors 1 / sqrt(sum_{i,k} (s_i w_ijk)^2 + eps): (N, C_out) for a kernel ``w``
    (kh, kw, C_in, C_out) and styles ``s`` (N, C_in)."""
    return jax.lax.rsqrt(jnp.einsum("hwio,ni->no", w ** 2, s ** 2) + eps)


def modulated_weights(w: jax.Array, s: jax.Array, demodulate: bool = True) -> jax.Array:
    """The per-sample kernels (N, kh, kw, C_in, C_out) of Eq. 1 (and 3 when ``demodulate``)."""
    out = w[None] * s[:, None, None, :, None]
    if demodulate:
        out = out * demodulation(w, s)[:, None, None, None, :]
    return out


def modulated_conv(x: jax.Array, w: jax.Array, s: jax.Array, demodulate: bool = True) -> jax.Array:
    """Each sample of ``x`` (N, H, W, C_in) convolved (stride 1, SAME) with its own
    :func:`modulated_weights`, as one shared convolution: conv(x * s, w) * d."""
    y = conv_general_dilated(x * s[:, None, None, :], w, (1, 1), "SAME", dimension_numbers=_NHWC)
    return y * demodulation(w, s)[:, None, None, :] if demodulate else y


# -- layers -----------------------------------------------------------------------------


class FullyConnected(nn.Module):
    """An equalized-learning-rate dense layer with a learning-rate multiplier: kernel stored
    as N(0, 1 / lr_mul^2), used as kernel * lr_mul * he_scale(fan_in, gain); bias stored as
    bias_init / lr_mul, used times lr_mul; then :func:`act` when ``activate``."""

    features: int
    gain: float = 1.0
    lr_mul: float = 1.0
    bias_init: float = 0.0
    activate: bool = False

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        fan_in = x.shape[-1]
        w = self.param("kernel", nn.initializers.normal(1.0 / self.lr_mul), (fan_in, self.features))
        b = self.param("bias", nn.initializers.constant(self.bias_init / self.lr_mul), (self.features,))
        y = x @ (w * (he_scale(fan_in, self.gain) * self.lr_mul)) + b * self.lr_mul
        return act(y) if self.activate else y


class Mapping(nn.Module):
    """z -> w: second-moment normalization, then ``num_layers`` FC layers with :func:`act`."""

    w_dim: int
    num_layers: int
    lr_mul: float = 0.01

    @nn.compact
    def __call__(self, z: jax.Array) -> jax.Array:
        x = pixel_norm(z)
        for i in range(self.num_layers):
            x = FullyConnected(self.w_dim, lr_mul=self.lr_mul, activate=True, name=f"fc{i}")(x)
        return x


class SynthesisLayer(nn.Module):
    """Modulated, demodulated 3x3 conv; plus ``noise`` (N, H, W, 1) times a learned strength
    (None: no noise); bias; :func:`act`."""

    features: int
    kernel: int = 3

    @nn.compact
    def __call__(self, x: jax.Array, w: jax.Array, noise: jax.Array | None) -> jax.Array:
        k, c = self.kernel, x.shape[-1]
        s = FullyConnected(c, bias_init=1.0, name="affine")(w)
        weight = self.param("kernel", nn.initializers.normal(1.0), (k, k, c, self.features))
        strength = self.param("noise_strength", nn.initializers.zeros, ())
        x = modulated_conv(x, weight * he_scale(k * k * c, 1.0), s, demodulate=True)
        if noise is not None:
            x = x + strength * noise
        return act(x + self.param("bias", nn.initializers.zeros, (self.features,)))


class ToRGB(nn.Module):
    """Modulated 1x1 conv to the image channels without demodulation, plus a bias."""

    features: int

    @nn.compact
    def __call__(self, x: jax.Array, w: jax.Array) -> jax.Array:
        c = x.shape[-1]
        s = FullyConnected(c, bias_init=1.0, name="affine")(w)
        weight = self.param("kernel", nn.initializers.normal(1.0), (1, 1, c, self.features))
        y = modulated_conv(x, weight * he_scale(c, 1.0), s, demodulate=False)
        return y + self.param("bias", nn.initializers.zeros, (self.features,))


def noise_sizes(num_resolutions: int) -> list[int]:
    """The side of each noise map of the synthesis network, in layer order (one at 4x4, two
    per later resolution)."""
    return [4] + [4 * 2 ** k for k in range(1, num_resolutions) for _ in range(2)]


class Synthesis(nn.Module):
    """The skip generator: per-layer styles ``ws`` (N, 2 len(channels), w_dim) and the noise
    maps' values ``noise`` (N, sum of :func:`noise_sizes` squared; None: no noise) -> images.
    ``channels[k]``: the width at resolution 4 * 2^k."""

    channels: Sequence[int]
    out_channels: int

    @nn.compact
    def __call__(self, ws: jax.Array, noise: jax.Array | None = None) -> jax.Array:
        c, n = tuple(self.channels), ws.shape[0]
        maps = [None] * len(noise_sizes(len(c)))
        if noise is not None:
            ends = np.cumsum([r * r for r in noise_sizes(len(c))])
            maps = [m.reshape(n, r, r, 1) for m, r in zip(jnp.split(noise, ends[:-1], axis=1),
                                                          noise_sizes(len(c)), strict=True)]
        const = self.param("const", nn.initializers.normal(1.0), (4, 4, c[0]))
        x = jnp.broadcast_to(const, (n, *const.shape))
        x = SynthesisLayer(c[0], name="conv4")(x, ws[:, 0], maps[0])
        img = ToRGB(self.out_channels, name="torgb4")(x, ws[:, 1])
        for k in range(1, len(c)):
            r = 4 * 2 ** k
            x = upsample_bilinear2(x)
            x = SynthesisLayer(c[k], name=f"conv{r}_0")(x, ws[:, 2 * k - 1], maps[2 * k - 1])
            x = SynthesisLayer(c[k], name=f"conv{r}_1")(x, ws[:, 2 * k], maps[2 * k])
            img = upsample_bilinear2(img) + ToRGB(self.out_channels, name=f"torgb{r}")(x, ws[:, 2 * k + 1])
        return img


class Generator(nn.Module):
    """Mapping and synthesis networks; ``__call__`` (z -> images, w broadcast, no noise)
    creates both."""

    channels: Sequence[int]
    out_channels: int
    w_dim: int
    mapping_layers: int
    lr_mul: float

    def setup(self):
        self.mapping = Mapping(self.w_dim, self.mapping_layers, self.lr_mul)
        self.synthesis = Synthesis(tuple(self.channels), self.out_channels)

    def map(self, z: jax.Array) -> jax.Array:
        return self.mapping(z)

    def synthesize(self, ws: jax.Array, noise: jax.Array | None = None) -> jax.Array:
        return self.synthesis(ws, noise)

    def __call__(self, z: jax.Array) -> jax.Array:
        w = self.mapping(z)
        return self.synthesis(jnp.repeat(w[:, None], 2 * len(self.channels), 1))


class Discriminator(nn.Module):
    """The residual D; ``channels[k]``: the width at resolution 4 * 2^k. Returns logits (N,)."""

    channels: Sequence[int]
    mbstd_group: int = 4

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        c = tuple(self.channels)
        h = nn.leaky_relu(EqualizedConv(c[-1], 1, name="from_rgb")(x), 0.2)
        for k in range(len(c) - 1, 0, -1):
            r = 4 * 2 ** k
            skip = EqualizedConv(c[k - 1], 1, gain=1.0, name=f"skip{r}")(downsample(h))
            h = nn.leaky_relu(EqualizedConv(c[k], 3, name=f"conv{r}_0")(h), 0.2)
            h = downsample(nn.leaky_relu(EqualizedConv(c[k - 1], 3, name=f"conv{r}_1")(h), 0.2))
            h = (h + skip) / math.sqrt(2.0)
        if self.mbstd_group > 1:
            h = minibatch_stddev(h, self.mbstd_group)
        h = nn.leaky_relu(EqualizedConv(c[0], 3, name="conv4")(h), 0.2)
        h = nn.leaky_relu(EqualizedDense(c[0], name="fc")(h.reshape(h.shape[0], -1)), 0.2)
        return EqualizedDense(1, gain=1.0, name="out")(h)[:, 0]


# -- the paper's formulas ------------------------------------------------------------------


def mixing_cutoff(rng: jax.Array, num_ws: int, prob: float) -> jax.Array:
    """The style-mixing crossover layer of a batch: uniform in [1, num_ws) with probability
    ``prob``, else ``num_ws`` (no mixing); from two U(0, 1) draws of ``rng`` (layer, coin)."""
    u = jax.random.uniform(rng, (2,))
    cut = 1 + jnp.minimum(jnp.floor(u[0] * (num_ws - 1)), num_ws - 2).astype(jnp.int32)
    return jnp.where(u[1] < prob, cut, num_ws)


def mix_styles(ws1: jax.Array, ws2: jax.Array, cutoff: jax.Array) -> jax.Array:
    """Per-layer styles (N, L, w_dim): layers below ``cutoff`` from ``ws1``, the rest from ``ws2``."""
    layer = jnp.arange(ws1.shape[1])[None, :, None]
    return jnp.where(layer < cutoff, ws1, ws2)


def truncate(w: jax.Array, w_avg: jax.Array, psi: float | jax.Array) -> jax.Array:
    """The truncation trick in W: w_avg + psi (w - w_avg) (psi = 1: off; 0: the mean w)."""
    return w_avg + psi * (w - w_avg)


def r1_penalty(critic, x: jax.Array) -> jax.Array:
    """R1 (Mescheder et al., 2018) without gamma / 2: E_i ||grad_{x_i} sum_j D(x)_j||^2, the
    gradient of the summed logits (with minibatch stddev, examples of a group interact; as the
    official code)."""
    g = jax.grad(lambda xx: jnp.sum(critic(xx)))(x)
    return jnp.mean(jnp.sum(g.reshape(g.shape[0], -1) ** 2, axis=-1))


def path_lengths(synthesize, ws: jax.Array, y: jax.Array) -> jax.Array:
    """Per-sample path lengths ||J_w^T y|| (Eq. 4): the gradient of sum(g(ws) * y) with respect
    to the styles ``ws`` (N, L, w_dim) (per sample, since samples do not interact in G), its
    squared norm summed over w's dims, averaged over layers, square-rooted (the official code).
    ``y``: (N, H, W, C) image-space directions (N(0, I) / sqrt(H W) in training)."""
    g = jax.grad(lambda v: jnp.sum(synthesize(v) * y))(ws)
    return jnp.sqrt(jnp.mean(jnp.sum(g ** 2, axis=2), axis=1))


def ema_beta(step: jax.Array, decay: float, rampup: float) -> jax.Array:
    """G EMA's decay after G step ``step`` (1-based): the half-life of ``decay`` (in steps),
    capped at ``rampup`` x step (StyleGAN2-ADA's ``ema_rampup``; 0 = no rampup)."""
    if decay <= 0:
        return jnp.zeros(())
    half = math.log(0.5) / math.log(decay)
    if rampup > 0:
        half = jnp.minimum(half, rampup * jnp.asarray(step, jnp.float32))
    return 0.5 ** (1.0 / jnp.maximum(half, 1e-8))


# -- the Method --------------------------------------------------------------------------


def init_params(rng: jax.Array, shapes: Any, lr_mul: float) -> Any:
    """Parameters of the shapes of a network's ``init`` (``jax.eval_shape``) from one normal
    draw, as the modules' initializers: kernels and the constant input N(0, 1) (the mapping
    network's N(0, 1 / lr_mul^2)), the style affines' biases 1, other biases and the noise
    strengths 0. Why not the modules' own initializers: each is a random program of its own
    (a threefry hash, ~0.1 CPU-s of compilation each on XLA:CPU at -O0), as in
    gen_jax/gans/biggan.py's init_variables."""
    leaves, treedef = jax.tree_util.tree_flatten_with_path(shapes)
    sizes = [math.prod(s.shape) for _, s in leaves]
    flat, offset, out = jax.random.normal(rng, (sum(sizes),)), 0, []
    for (path, s), size in zip(leaves, sizes, strict=True):
        keys = [getattr(k, "key", "") for k in path]
        draw, offset = flat[offset:offset + size].reshape(s.shape), offset + size
        if keys[-1] in ("kernel", "const"):
            value = draw / lr_mul if keys[0] == "mapping" else draw
        elif keys[-1] == "bias":
            value = jnp.full(s.shape, 1.0 if keys[-2] == "affine" else 0.0)
        elif keys[-1] == "noise_strength":
            value = jnp.zeros(s.shape)
        else:
            raise ValueError(f"no initializer for {jax.tree_util.keystr(path)}")
        out.append(value.astype(s.dtype))
    return jax.tree_util.tree_unflatten(treedef, out)


class StyleGAN2State(GANState):
    """GANState plus the tracked mean of w (truncation's centre) and the running mean of
    the path lengths (the path-length penalty's a)."""

    w_avg: jax.Array
    pl_mean: jax.Array


def _check(key: str, value: Any, low: float, kind: type = int, high: float | None = None) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value >= low
    ok = ok and (high is None or value <= high) and (kind is not int or isinstance(value, int))
    if not ok:
        what = "an integer" if kind is int else "a number"
        upper = f" and <= {high}" if high is not None else ""
        raise ConfigError(f"{key}={value!r} must be {what} >= {low}{upper}")


def _adjusted(optim: ml_collections.ConfigDict, every: int) -> ml_collections.ConfigDict:
    """Adam settings for a network regularized every ``every`` steps: lr c, b1^c, b2^c with
    c = every / (every + 1) (the official mb_ratio); c = 1 when ``every`` is 0 (no lazy term)."""
    c = every / (every + 1.0) if every else 1.0
    out = ml_collections.ConfigDict(optim.to_dict())
    out.learning_rate, out.b1, out.b2 = optim.learning_rate * c, optim.b1 ** c, optim.b2 ** c
    return out


class StyleGAN2:
    """The StyleGAN2 Method (gen_jax.registry.Method; see the module docstring).

    Keys: a train step splits its key into (D step, R1 step, G step, path-length step); a
    D step into (fakes, augmentation of the reals followed by the fakes); a G step into
    (fakes, augmentation); a path-length step into (latents, crossover, noise, y); a draw of
    fakes (:meth:`fakes`) into (latents, crossover, noise).
    """

    def __init__(self, config: ml_collections.ConfigDict, info: DataInfo):
        self.config, self.info = config, info
        m, s = config.model, config.stylegan2
        if info.kind != "image":
            raise ConfigError(f"StyleGAN2 generates images; {info.name!r} is not image data")
        if tuple(config.data.value_range) != (-1.0, 1.0):
            raise ConfigError("StyleGAN2's generator is linear around 0: set data.value_range=(-1.0, 1.0)")
        h, w, self.c = info.shape
        g_ch, d_ch = tuple(m.g_channels), tuple(m.d_channels)
        if h != w or h != 4 * 2 ** (len(g_ch) - 1) or len(d_ch) != len(g_ch):
            raise ConfigError(f"model.g_channels={g_ch} and model.d_channels={d_ch} need one width per "
                              f"resolution 4, 8, ..., {h} (the data is {h}x{w})")
        for key in ("latent_dim", "w_dim", "mapping_layers"):
            _check(f"model.{key}", m[key], 1)
        for key in ("r1_every", "pl_every", "pl_batch_shrink"):
            _check(f"stylegan2.{key}", s[key], 1)
        _check("stylegan2.mbstd_group", s.mbstd_group, 0)
        for key in ("r1_gamma", "pl_weight", "truncation", "ema_rampup"):
            _check(f"stylegan2.{key}", s[key], 0.0, float)
        for key in ("style_mixing_prob", "pl_decay", "w_avg_beta", "mapping_lr_mul"):
            _check(f"stylegan2.{key}", s[key], 0.0, float, 1.0)
        if s.mapping_lr_mul <= 0:
            raise ConfigError(f"stylegan2.mapping_lr_mul={s.mapping_lr_mul} must be > 0")
        self.policy = tuple(p for p in s.augment.split(",") if p)
        if any(p not in AUGMENTS for p in self.policy):
            raise ConfigError(f"stylegan2.augment={s.augment!r}: valid is '' or comma-separated "
                              f"names from {', '.join(AUGMENTS)}")
        b = config.data.batch_size
        if s.mbstd_group > 1 and b % s.mbstd_group:
            raise ConfigError(f"stylegan2.mbstd_group={s.mbstd_group} must divide data.batch_size={b}")
        if b % s.pl_batch_shrink:
            raise ConfigError(f"stylegan2.pl_batch_shrink={s.pl_batch_shrink} must divide "
                              f"data.batch_size={b}")
        self.num_ws = 2 * len(g_ch)
        self.noise_dim = sum(r * r for r in noise_sizes(len(g_ch)))
        self.r1_every = int(s.r1_every) if s.r1_gamma > 0 else 0
        self.pl_every = int(s.pl_every) if s.pl_weight > 0 else 0
        self.g_net = Generator(g_ch, self.c, int(m.w_dim), int(m.mapping_layers), float(s.mapping_lr_mul))
        self.d_net = Discriminator(d_ch, int(s.mbstd_group))
        steps = config.train.num_steps
        self.g_tx = make_optimizer(_adjusted(config.optim, self.pl_every), steps)
        d_optim = config.d_optim if "d_optim" in config else config.optim
        self.d_tx = make_optimizer(_adjusted(d_optim, self.r1_every), steps)

    # -- networks --------------------------------------------------------------

    def map(self, params: Any, z: jax.Array) -> jax.Array:
        """w (N, w_dim) of latents ``z`` (N, latent_dim)."""
        return self.g_net.apply({"params": params}, z, method=Generator.map)

    def synthesize(self, params: Any, ws: jax.Array, noise: jax.Array | None) -> jax.Array:
        """Images (linear, not clipped) of per-layer styles ``ws`` (N, num_ws, w_dim) with the
        noise values ``noise`` (N, noise_dim) (:meth:`noise`; None: no noise)."""
        return self.g_net.apply({"params": params}, ws, noise, method=Generator.synthesize)

    def noise(self, rng: jax.Array, n: int) -> jax.Array:
        """The values of every noise map for ``n`` images, N(0, 1): (n, noise_dim)."""
        return jax.random.normal(rng, (n, self.noise_dim))

    def critic(self, params: Any, x: jax.Array) -> jax.Array:
        """D's logits (N,)."""
        return self.d_net.apply({"params": params}, x)

    def broadcast(self, w: jax.Array) -> jax.Array:
        """w (N, w_dim) repeated for every layer: (N, num_ws, w_dim)."""
        return jnp.repeat(w[:, None], self.num_ws, axis=1)

    def augment(self, x: jax.Array, rng: jax.Array) -> jax.Array:
        """DiffAugment with the configured policy (identity when it is empty)."""
        return diff_augment(x, rng, self.policy)

    def training_styles(self, params: Any, r_z: jax.Array, r_cut: jax.Array,
                        n: int) -> tuple[jax.Array, jax.Array]:
        """(styles (n, num_ws, w_dim) with style mixing, the unmixed w (n, w_dim)): the w of
        2n latents drawn with ``r_z`` (the first n, then the second latents), crossed over at
        :func:`mixing_cutoff` of ``r_cut``."""
        w = self.map(params, jax.random.normal(r_z, (2 * n, self.config.model.latent_dim)))
        cutoff = mixing_cutoff(r_cut, self.num_ws, self.config.stylegan2.style_mixing_prob)
        return mix_styles(self.broadcast(w[:n]), self.broadcast(w[n:]), cutoff), w[:n]

    def fakes(self, params: Any, rng: jax.Array, n: int) -> tuple[jax.Array, jax.Array]:
        """(images, unmixed w) of a training draw: ``rng`` split into (latents, crossover,
        noise) (:meth:`training_styles`, :meth:`noise`)."""
        r_z, r_cut, r_noise = jax.random.split(rng, 3)
        ws, w = self.training_styles(params, r_z, r_cut, n)
        return self.synthesize(params, ws, self.noise(r_noise, n)), w

    # -- losses ----------------------------------------------------------------

    def d_loss(self, d_params: Any, real: jax.Array, fake: jax.Array, rng: jax.Array):
        """The logistic D loss softplus(D(A(fake))) + softplus(-D(A(real))), A = DiffAugment
        drawn with ``rng`` over the reals followed by the fakes (one draw, each image its own
        augmentation). D scores the two halves separately (``vmap``: minibatch-stddev groups
        never mix real and fake), in one program."""
        x = self.augment(jnp.concatenate([real, fake]), rng)
        out = jax.vmap(lambda v: self.critic(d_params, v))(x.reshape(2, -1, *x.shape[1:]))
        real_out, fake_out = out[0], out[1]
        loss = bce_d_loss(real_out, fake_out)
        return loss, {"d_loss": loss, "d_real": real_out.mean(), "d_fake": fake_out.mean()}

    def r1_loss(self, d_params: Any, real: jax.Array, rng: jax.Array):
        """The lazy R1 term: r1_every x gamma / 2 x :func:`r1_penalty` at the reals augmented
        with ``rng``. Returns (loss, metrics: r1 (the raw penalty), r1_loss)."""
        s = self.config.stylegan2
        r1 = r1_penalty(lambda x: self.critic(d_params, x), self.augment(real, rng))
        loss = self.r1_every * (s.r1_gamma / 2.0) * r1
        return loss, {"r1": r1, "r1_loss": loss}

    def g_loss(self, g_params: Any, d_params: Any, rng: jax.Array, n: int):
        """The non-saturating G loss softplus(-D(A(G(z)))) on ``n`` mixed-style fakes (``rng``
        split into (fakes, augmentation)). Returns (loss, (metrics, the unmixed w))."""
        r_fake, r_aug = jax.random.split(rng)
        fake, w = self.fakes(g_params, r_fake, n)
        loss = nonsaturating_g_loss(self.critic(d_params, self.augment(fake, r_aug)))
        return loss, ({"g_loss": loss}, w)

    def pl_loss(self, g_params: Any, pl_mean: jax.Array, rng: jax.Array, n: int):
        """The lazy path-length term on ``n`` mixed-style draws (``rng`` split into (latents,
        crossover, noise, y)): pl_every x pl_weight x mean((lengths - a')^2) with
        a' = a + decay (mean(lengths) - a), not stop-gradiented (as the official code).
        Returns (loss, (metrics, a'))."""
        s = self.config.stylegan2
        r_z, r_cut, r_noise, r_y = jax.random.split(rng, 4)
        ws, _ = self.training_styles(g_params, r_z, r_cut, n)
        noise = self.noise(r_noise, n)
        h, w = self.info.shape[:2]
        y = jax.random.normal(r_y, (n, *self.info.shape)) / math.sqrt(h * w)
        lengths = path_lengths(lambda v: self.synthesize(g_params, v, noise), ws, y)
        new_mean = pl_mean + s.pl_decay * (jnp.mean(lengths) - pl_mean)
        penalty = jnp.mean((lengths - new_mean) ** 2)
        loss = self.pl_every * s.pl_weight * penalty
        return loss, ({"pl_penalty": penalty, "pl_loss": loss, "pl_length": jnp.mean(lengths)},
                      jax.lax.stop_gradient(new_mean))

    # -- updates ---------------------------------------------------------------

    @staticmethod
    def _update(ts: TrainState, grads: Any) -> TrainState:
        """``ts`` after one optimizer update, its EMA left alone (G's EMA moves once per outer
        step, in :meth:`train_step`, not in each of its updates)."""
        return ts.replace(ema_params=None).apply_gradients(grads).replace(ema_params=ts.ema_params)

    def d_step(self, state: StyleGAN2State, real: jax.Array, rng: jax.Array):
        """One D update on ``real`` against as many fakes (``rng`` split into fakes, augmentation)."""
        r_fake, r_aug = jax.random.split(rng)
        fake = jax.lax.stop_gradient(self.fakes(state.g.params, r_fake, real.shape[0])[0])
        grads, metrics = jax.grad(self.d_loss, has_aux=True)(state.d.params, real, fake, r_aug)
        return state.replace(d=self._update(state.d, grads)), metrics

    def r1_step(self, d: TrainState, real: jax.Array, rng: jax.Array) -> tuple[TrainState, dict]:
        """One update of D (its TrainState ``d``) on the lazy R1 term alone."""
        grads, metrics = jax.grad(self.r1_loss, has_aux=True)(d.params, real, rng)
        return self._update(d, grads), metrics

    def g_step(self, state: StyleGAN2State, rng: jax.Array, n: int):
        """One G update on the adversarial loss; w_avg moves towards the batch's mean w."""
        grads, (metrics, w) = jax.grad(self.g_loss, has_aux=True)(state.g.params, state.d.params, rng, n)
        mean = jnp.mean(w, 0)
        w_avg = mean + self.config.stylegan2.w_avg_beta * (state.w_avg - mean)
        return state.replace(g=self._update(state.g, grads), w_avg=w_avg), metrics

    def pl_step(self, g: TrainState, pl_mean: jax.Array, rng: jax.Array, n: int):
        """One update of G (its TrainState ``g``) on the lazy path-length term alone.
        Returns ((g, the moved running mean a'), metrics)."""
        grads, (metrics, new_mean) = jax.grad(self.pl_loss, has_aux=True)(g.params, pl_mean, rng, n)
        return (self._update(g, grads), new_mean), metrics

    # -- the Method contract ---------------------------------------------------

    def init(self, rng: jax.Array, example_batch: dict) -> StyleGAN2State:
        """Fresh G (:func:`init_params`; its EMA a copy) and D; w_avg and the path-length
        mean 0, as the official code."""
        x = jnp.asarray(example_batch["x"])
        self.info.check_batch(x)
        rg, rd = jax.random.split(rng)
        z = jnp.zeros((1, self.config.model.latent_dim))
        g_params = init_params(rg, jax.eval_shape(self.g_net.init, rg, z)["params"],
                               self.config.stylegan2.mapping_lr_mul)
        probe = jnp.zeros((max(self.config.stylegan2.mbstd_group, 1), *self.info.shape))
        d_params = init_params(rd, jax.eval_shape(self.d_net.init, rd, probe)["params"], 1.0)
        g = TrainState.create(g_params, self.g_tx, 0.0)
        if self.config.train.ema_decay > 0:  # averaged once per outer step (ema_beta)
            g = g.replace(ema_params=jax.tree.map(jnp.copy, g_params))
        d = TrainState.create(d_params, self.d_tx, 0.0)
        return StyleGAN2State(step=jnp.zeros((), jnp.int32), g=g, d=d,
                              w_avg=jnp.zeros((self.config.model.w_dim,)), pl_mean=jnp.zeros(()))

    def train_step(self, state: StyleGAN2State, batch: dict, rng: jax.Array):
        """One outer step: D update; the R1 update when step % r1_every == 0; G update; the
        path-length update when step % pl_every == 0; the G EMA."""
        x, n = batch["x"], batch["x"].shape[0]
        r_d, r_r1, r_g, r_pl = jax.random.split(rng, 4)
        state, metrics = self.d_step(state, x, r_d)
        zero = jnp.zeros(())
        if self.r1_every:  # the cond passes D's state only: a smaller program than the whole state
            d, m = jax.lax.cond(state.step % self.r1_every == 0, lambda d: self.r1_step(d, x, r_r1),
                                lambda d: (d, {"r1": zero, "r1_loss": zero}), state.d)
            state, metrics = state.replace(d=d), metrics | m
        state, m = self.g_step(state, r_g, n)
        metrics |= m
        if self.pl_every:
            n_pl = n // self.config.stylegan2.pl_batch_shrink
            skip = {"pl_penalty": zero, "pl_loss": zero, "pl_length": zero}
            (g, a), m = jax.lax.cond(state.step % self.pl_every == 0,
                                     lambda ga: self.pl_step(*ga, r_pl, n_pl), lambda ga: (ga, skip),
                                     (state.g.replace(ema_params=None), state.pl_mean))
            state = state.replace(g=g.replace(ema_params=state.g.ema_params), pl_mean=a)
            metrics |= m
        g = state.g
        if g.ema_params is not None:
            beta = ema_beta(state.step + 1, self.config.train.ema_decay, self.config.stylegan2.ema_rampup)
            g = g.replace(ema_params=ema_update(g.ema_params, g.params, state.step, beta, 0))
        metrics |= {"pl_mean": state.pl_mean, "loss": metrics["d_loss"] + metrics["g_loss"]}
        return state.replace(step=state.step + 1, g=g), metrics

    def eval_step(self, state: StyleGAN2State, batch: dict, rng: jax.Array) -> dict:
        """Logistic D and G losses (no augmentation) on a validation batch against as many
        untruncated samples of the (EMA) generator."""
        x = batch["x"]
        fake = self.sample(state, rng, x.shape[0], truncation=1.0)
        real_out, fake_out = self.critic(state.d.params, x), self.critic(state.d.params, fake)
        metrics = {"d_loss": bce_d_loss(real_out, fake_out), "g_loss": nonsaturating_g_loss(fake_out),
                   "d_real": real_out.mean(), "d_fake": fake_out.mean()}
        metrics["loss"] = metrics["d_loss"] + metrics["g_loss"]
        return metrics

    def generate(self, state: StyleGAN2State, z: jax.Array, truncation: float | jax.Array = 1.0,
                 noise: jax.Array | None = None) -> jax.Array:
        """The (EMA) generator's images of latents ``z`` (N, latent_dim), w truncated towards
        the tracked w_avg by ``truncation`` (psi; 1 = off), with ``noise`` (N, noise_dim)
        (None: no noise), clipped to [-1, 1]."""
        params = state.g.eval_params
        w = truncate(self.map(params, z), state.w_avg, truncation)
        return jnp.clip(self.synthesize(params, self.broadcast(w), noise), -1.0, 1.0)

    def sample(self, state: StyleGAN2State, rng: jax.Array, num: int,
               truncation: float | jax.Array | None = None, **kw: Any) -> jax.Array:
        """``num`` samples (``rng`` split into latents and noise), truncated at ``truncation``
        (None: ``stylegan2.truncation``)."""
        psi = self.config.stylegan2.truncation if truncation is None else truncation
        r_z, r_noise = jax.random.split(rng)
        z = jax.random.normal(r_z, (num, self.config.model.latent_dim))
        return self.generate(state, z, psi, self.noise(r_noise, num))

    def _one_noise(self, rng: jax.Array | None, n: int) -> jax.Array | None:
        """The noise of one image repeated for ``n`` (figures: only the styles differ)."""
        return None if rng is None else jnp.repeat(self.noise(rng, 1), n, 0)

    def truncation_strip(self, state: StyleGAN2State, z: jax.Array, psis: Sequence[float],
                         noise_rng: jax.Array | None = None) -> jax.Array:
        """One row per latent of ``z``, one column per psi of ``psis`` (e.g. 1 -> 0), the same
        noise everywhere: (len(z) * len(psis)) images row by row, clipped to [-1, 1]."""
        params = state.g.eval_params
        w = self.map(params, z)
        ws = jnp.stack([self.broadcast(truncate(w, state.w_avg, p)) for p in psis], 1)
        ws = ws.reshape(-1, *ws.shape[2:])
        return jnp.clip(self.synthesize(params, ws, self._one_noise(noise_rng, len(ws))), -1.0, 1.0)

    def style_mixing_grid(self, state: StyleGAN2State, z_rows: jax.Array, z_cols: jax.Array,
                          cutoff: int, noise_rng: jax.Array | None = None) -> jax.Array:
        """StyleGAN's Fig. 3: image (i, j) takes the styles of layers < ``cutoff`` (coarse) from
        row source i and the rest (fine) from column source j. Returns (R + 1) x (C + 1)
        images row by row: a blank corner, the column sources, then each row source followed
        by its mixes (the same noise for every image), clipped to [-1, 1]."""
        params = state.g.eval_params
        ws_r, ws_c = self.broadcast(self.map(params, z_rows)), self.broadcast(self.map(params, z_cols))
        rows, cols = len(ws_r), len(ws_c)
        mixed = mix_styles(jnp.repeat(ws_r, cols, 0), jnp.tile(ws_c, (rows, 1, 1)), cutoff)
        ws = jnp.concatenate([ws_c, ws_r, mixed])
        imgs = jnp.clip(self.synthesize(params, ws, self._one_noise(noise_rng, len(ws))), -1.0, 1.0)
        col_src, row_src, mixed = imgs[:cols], imgs[cols:cols + rows], imgs[cols + rows:]
        grid = [jnp.full_like(imgs[:1], -1.0), col_src]
        for i in range(rows):
            grid += [row_src[i:i + 1], mixed[i * cols:(i + 1) * cols]]
        return jnp.concatenate(grid)


@register("stylegan2")
def make_stylegan2(config: ml_collections.ConfigDict, info: DataInfo) -> StyleGAN2:
    """Factory registered as "stylegan2"."""
    return StyleGAN2(config, info)


__all__ = ["Discriminator", "FullyConnected", "Generator", "Mapping", "StyleGAN2", "StyleGAN2State",
           "Synthesis", "SynthesisLayer", "ToRGB", "demodulation", "ema_beta", "init_params",
           "make_stylegan2", "mix_styles", "mixing_cutoff", "modulated_conv", "modulated_weights",
           "noise_sizes", "path_lengths", "r1_penalty", "truncate", "upsample_bilinear2"]
