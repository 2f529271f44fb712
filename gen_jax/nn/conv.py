"""Convolution layers that pick XLA:CPU's fast formulation by shape, and
convolutional encoder/decoder stacks with selectable upsampling.

:class:`Conv` and :class:`ConvTranspose` are drop-ins for ``flax.linen.Conv`` /
``ConvTranspose`` (same attributes, same parameter names, shapes, initializers
and module names, so parameter trees and checkpoints are unchanged). They differ
only in how the convolution is computed. XLA:CPU runs a convolution whose window
is larger than its output map (3x3/4x4 windows on 1x1-4x4 maps, the
low-resolution end of every encoder, decoder, UNet and discriminator) through a
naive loop emitter, 10-30x slower than the matrix multiply it amounts to; and the
weight gradient of a convolution (itself a convolution whose window is the output
map) is slow on large maps and very slow (~50x) inside a ``lax.scan`` body. So
:func:`conv_general_dilated` computes, by shape (:func:`choose_impl`, the
crossover measured by experiments/bench_conv_crossover.py):

- "im2col": patches by strided slices, dropping the taps that only ever see
  padding, and one dot; forward and both gradients are dots;
- "lax_wdot": ``lax.conv_general_dilated`` forward and input gradient, the weight
  gradient as one dot (a custom JVP whose kernel tangent goes through im2col);
- "lax": ``lax.conv_general_dilated``.

Upsampling is a config choice because on CPU ``nn.ConvTranspose``'s backward
pass is very slow in XLA (DESIGN.md, performance notes): a conv to 4x channels
followed by depth-to-space ("pixel_shuffle", Shi et al., 2016) measured ~2.3x
faster per train step than ConvTranspose there, nearest-resize + conv
("resize") in between.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.linen.linear import canonicalize_padding
from jax import lax
from jax.custom_derivatives import SymbolicZero

from gen_jax.errors import ConfigError
from gen_jax.nn.mlp import get_activation

CONV_IMPLS = ("auto", "im2col", "lax_wdot", "lax")
# Output positions x channels from which lax's weight gradient loses to a dot
# (experiments/results/conv_crossover.md).
_WDOT_MIN_OUT_SIZE = 16 * 16 * 128
_NHWC = lax.ConvDimensionNumbers(lhs_spec=(0, 3, 1, 2), rhs_spec=(3, 2, 0, 1), out_spec=(0, 3, 1, 2))


def choose_impl(out_hw: Sequence[int], window_hw: Sequence[int], features: int) -> str:
    """The formulation XLA:CPU runs fastest for a convolution of this shape (forward and
    backward), as measured by experiments/bench_conv_crossover.py.

    Args:
      out_hw: spatial size of the output map.
      window_hw: spatial size of the (dilated) kernel window.
      features: output channels.

    Returns:
      "im2col" where the window is larger than the output map in some dimension;
      "lax_wdot" (lax forward and input gradient, the weight gradient as one dot)
      for large output maps, where lax's weight gradient is slow; else "lax".
    """
    if any(o < k for o, k in zip(out_hw, window_hw, strict=True)):
        return "im2col"
    if math.prod(out_hw) * features >= _WDOT_MIN_OUT_SIZE:
        return "lax_wdot"
    return "lax"


def _unsupported(lhs, dn, feature_group_count, batch_group_count) -> str | None:
    """Why the im2col path cannot compute this convolution (None when it can)."""
    if lhs.ndim != 4:
        return f"only 2-D convolutions (rank-4 inputs), got rank {lhs.ndim}"
    if dn != _NHWC:
        return f"only NHWC inputs with HWIO kernels, got {dn}"
    if feature_group_count != 1 or batch_group_count != 1:
        return "feature_group_count and batch_group_count must be 1"
    return None


def _taps(size: int, pads: tuple[int, int], k: int, dilation: int, stride: int, out: int) -> list[int]:
    """Kernel offsets along one axis whose slice touches the (dilated) input, not only padding."""
    lo = max(pads[0], 0)
    hi = pads[0] + size  # the input's rows are [lo, hi) of the padded axis
    return [i for i in range(k)
            if any(lo <= i * dilation + s * stride < hi for s in range(out))]


def _im2col(x: jax.Array, w: jax.Array, strides, pads, lhs_dilation, rhs_dilation, precision,
            preferred_element_type) -> jax.Array:
    n, height, width, c = x.shape
    kh, kw, _, c_out = w.shape
    (sh, sw), (dh, dw), (lh, lw) = strides, rhs_dilation, lhs_dilation
    # Input dilation (transposed convolutions) is lax.pad's interior padding.
    xp = lax.pad(x, jnp.zeros((), x.dtype),
                 [(0, 0, 0), (*pads[0], lh - 1), (*pads[1], lw - 1), (0, 0, 0)])
    ho = (xp.shape[1] - (kh - 1) * dh - 1) // sh + 1
    wo = (xp.shape[2] - (kw - 1) * dw - 1) // sw + 1
    rows = _taps((height - 1) * lh + 1, pads[0], kh, dh, sh, ho)
    cols = _taps((width - 1) * lw + 1, pads[1], kw, dw, sw, wo)
    taps = [(i, j) for i in rows for j in cols]
    if not taps:  # every window sees only padding
        dtype = preferred_element_type or jnp.result_type(x, w)
        return jnp.zeros((n, ho, wo, c_out), dtype)
    patches = [lax.slice(xp, (0, i * dh, j * dw, 0),
                         (n, i * dh + (ho - 1) * sh + 1, j * dw + (wo - 1) * sw + 1, c),
                         (1, sh, sw, 1)) for i, j in taps]
    patches = patches[0] if len(taps) == 1 else jnp.concatenate(patches, axis=-1)
    if len(taps) == kh * kw:
        kernel = w.reshape(kh * kw * w.shape[2], c_out)  # HWIO rows are (i, j, c), as the patches
    else:
        kernel = jnp.concatenate([w[t] for t in taps], axis=0)
    return lax.dot_general(patches, kernel, (((3,), (0,)), ((), ())), precision=precision,
                           preferred_element_type=preferred_element_type)


def _lax_wdot(x: jax.Array, w: jax.Array, strides, pads, lhs_dilation, rhs_dilation, precision,
              preferred_element_type) -> jax.Array:
    """lax's convolution, whose derivative in the kernel is im2col's (a dot): the forward
    and the input gradient stay lax convolutions, the weight gradient becomes one dot."""

    def lax_conv(x, w):
        return lax.conv_general_dilated(x, w, strides, pads, lhs_dilation, rhs_dilation, _NHWC,
                                        precision=precision,
                                        preferred_element_type=preferred_element_type)

    @jax.custom_jvp
    def conv(x, w):
        return lax_conv(x, w)

    def conv_jvp(primals, tangents):
        (x, w), (dx, dw) = primals, tangents
        y = lax_conv(x, w)
        dy = jnp.zeros_like(y)
        if not isinstance(dx, SymbolicZero):
            dy = lax_conv(dx, w)
        if not isinstance(dw, SymbolicZero):
            dy = dy + _im2col(x, dw, strides, pads, lhs_dilation, rhs_dilation, precision,
                              preferred_element_type)
        return y, dy

    # Symbolic zeros: a kernel that is not differentiated costs no im2col at all.
    conv.defjvp(conv_jvp, symbolic_zeros=True)
    return conv(x, w)


def conv_general_dilated(lhs: jax.Array, rhs: jax.Array, window_strides: Sequence[int],
                         padding: str | Sequence[tuple[int, int]],
                         lhs_dilation: Sequence[int] | None = None,
                         rhs_dilation: Sequence[int] | None = None,
                         dimension_numbers: Any = None, feature_group_count: int = 1,
                         batch_group_count: int = 1, precision: Any = None,
                         preferred_element_type: Any = None, *, impl: str = "auto") -> jax.Array:
    """``lax.conv_general_dilated`` (same signature and result), computed the way
    :func:`choose_impl` says is fastest for its shape on CPU (lax on other backends).

    Args:
      lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation, dimension_numbers,
        feature_group_count, batch_group_count, precision, preferred_element_type: as
        in ``lax.conv_general_dilated``.
      impl: "auto" (:func:`choose_impl` by shape), "im2col" (patches + one dot),
        "lax_wdot" (lax forward and input gradient, weight gradient as a dot) or "lax".
        "im2col" and "lax_wdot" raise a ValueError for what they cannot do (other than
        2-D NHWC/HWIO, grouped); "auto" falls back to lax there.

    Returns:
      The convolution.
    """
    if impl not in CONV_IMPLS:
        raise ValueError(f"unknown conv impl {impl!r}; known: {', '.join(CONV_IMPLS)}")
    nd = lhs.ndim - 2
    strides = tuple(window_strides)
    lhs_dilation = tuple(lhs_dilation or (1,) * nd)
    rhs_dilation = tuple(rhs_dilation or (1,) * nd)

    def via_lax():
        return lax.conv_general_dilated(
            lhs, rhs, strides, padding, lhs_dilation, rhs_dilation, dimension_numbers,
            feature_group_count, batch_group_count, precision, preferred_element_type)

    if impl == "lax":
        return via_lax()
    dn = lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
    why = _unsupported(lhs, dn, feature_group_count, batch_group_count)
    if why is not None:
        if impl != "auto":
            raise ValueError(f"conv impl {impl!r} cannot compute this convolution: {why}")
        return via_lax()
    window = [(k - 1) * d + 1 for k, d in zip(rhs.shape[:2], rhs_dilation, strict=True)]
    in_hw = [(size - 1) * d + 1 for size, d in zip(lhs.shape[1:3], lhs_dilation, strict=True)]
    if isinstance(padding, str):
        if any(d != 1 for d in lhs_dilation):
            return via_lax()  # lax raises its error for string padding with input dilation
        pads = lax.padtype_to_pads(in_hw, window, strides, padding)
    else:
        pads = [(int(lo), int(hi)) for lo, hi in padding]
    out_hw = [(size + lo + hi - k) // s + 1
              for size, (lo, hi), k, s in zip(in_hw, pads, window, strides, strict=True)]
    if impl == "auto":
        # The crossover is XLA:CPU's; GPU and TPU convolutions (cuDNN, the MXU) stay lax.
        impl = choose_impl(out_hw, window, rhs.shape[-1]) if jax.default_backend() == "cpu" else "lax"
    if impl == "lax":
        return via_lax()
    fn = _im2col if impl == "im2col" else _lax_wdot
    return fn(lhs, rhs, strides, pads, lhs_dilation, rhs_dilation, precision, preferred_element_type)


class Conv(nn.Conv):
    """``flax.linen.Conv`` (same attributes, parameters and module names) computed by
    :func:`conv_general_dilated`: the formulation XLA:CPU runs fastest for the shape.

    Attributes:
      impl: "auto", "im2col", "lax_wdot" or "lax" (see :func:`conv_general_dilated`);
        not a parameter.
    """

    impl: str = "auto"

    def __post_init__(self):
        if self.impl not in CONV_IMPLS:
            raise ValueError(f"unknown conv impl {self.impl!r}; known: {', '.join(CONV_IMPLS)}")
        if self.conv_general_dilated is None and self.conv_general_dilated_cls is None:
            impl = self.impl

            def conv(*args, **kwargs):
                return conv_general_dilated(*args, **kwargs, impl=impl)

            object.__setattr__(self, "conv_general_dilated", conv)
        super().__post_init__()


def _transpose_pads(k: int, s: int, padding: str | tuple[int, int]) -> tuple[int, int]:
    """The padding of the input-dilated convolution that ``lax.conv_transpose`` computes
    (its ``use_consistent_padding=False`` convention, which flax follows)."""
    if padding == "SAME":
        total = k + s - 2
        lo = k - 1 if s > k - 1 else -(-total // 2)
        return lo, total - lo
    if padding == "VALID":
        return k - 1, k + s - 2 + max(k - s, 0) - (k - 1)
    return tuple(padding)  # explicit pairs are the dilated convolution's padding


def conv_transpose(lhs: jax.Array, rhs: jax.Array, strides: Sequence[int],
                   padding: str | Sequence[tuple[int, int]],
                   rhs_dilation: Sequence[int] | None = None, transpose_kernel: bool = False,
                   precision: Any = None, preferred_element_type: Any = None, *,
                   impl: str = "auto") -> jax.Array:
    """``lax.conv_transpose`` for NHWC inputs and HWIO kernels (same result), computed by
    :func:`conv_general_dilated` (so by the formulation :func:`choose_impl` picks).

    Args:
      lhs, rhs, strides, padding, rhs_dilation, transpose_kernel, precision,
        preferred_element_type: as in ``lax.conv_transpose``.
      impl: see :func:`conv_general_dilated`.

    Returns:
      The transposed convolution.
    """
    nd = lhs.ndim - 2
    rhs_dilation = tuple(rhs_dilation or (1,) * nd)
    window = [(k - 1) * d + 1 for k, d in zip(rhs.shape[:nd], rhs_dilation, strict=True)]
    per_dim = [padding] * nd if isinstance(padding, str) else list(padding)
    pads = [_transpose_pads(k, s, p) for k, s, p in zip(window, strides, per_dim, strict=True)]
    if transpose_kernel:  # flip the spatial axes, swap in/out channels
        rhs = jnp.flip(rhs, tuple(range(nd))).swapaxes(-1, -2)
    return conv_general_dilated(lhs, rhs, (1,) * nd, pads, tuple(strides), rhs_dilation,
                                lax.conv_dimension_numbers(lhs.shape, rhs.shape, _dn(nd)),
                                precision=precision, preferred_element_type=preferred_element_type,
                                impl=impl)


def _dn(nd: int) -> tuple[str, str, str]:
    spatial = "HWD"[:nd] if nd <= 3 else None
    if spatial is None:
        raise ValueError(f"{nd}-D transposed convolutions are not supported")
    return f"N{spatial}C", f"{spatial}IO", f"N{spatial}C"


class ConvTranspose(nn.ConvTranspose):
    """``flax.linen.ConvTranspose`` (same attributes, parameters and module names) computed
    by :func:`conv_transpose`: the formulation XLA:CPU runs fastest for the shape.
    ``padding="CIRCULAR"`` is not supported (a ValueError: use flax's layer).

    Attributes:
      impl: "auto", "im2col", "lax_wdot" or "lax" (see :func:`conv_general_dilated`);
        not a parameter.
    """

    impl: str = "auto"

    @nn.compact
    def __call__(self, inputs: jax.Array) -> jax.Array:
        if self.impl not in CONV_IMPLS:
            raise ValueError(f"unknown conv impl {self.impl!r}; known: {', '.join(CONV_IMPLS)}")
        ks = (self.kernel_size,) if isinstance(self.kernel_size, int) else tuple(self.kernel_size)
        nd = len(ks)

        def broadcast(v):
            v = 1 if v is None else v
            return (v,) * nd if isinstance(v, int) else tuple(v)

        padding = canonicalize_padding(self.padding, nd)
        if padding == "CIRCULAR":
            raise ValueError("gen_jax.nn.ConvTranspose does not support padding='CIRCULAR'; "
                             "use flax.linen.ConvTranspose")
        batch_shape = inputs.shape[:inputs.ndim - nd - 1]
        inputs = inputs.reshape((-1, *inputs.shape[len(batch_shape):]))
        c_in = inputs.shape[-1]
        kernel_shape = ks + ((self.features, c_in) if self.transpose_kernel else (c_in, self.features))
        if self.mask is not None and self.mask.shape != kernel_shape:
            raise ValueError("Mask needs to have the same shape as weights. "
                             f"Shapes are: {self.mask.shape}, {kernel_shape}")
        kernel = self.param("kernel", self.kernel_init, kernel_shape, self.param_dtype)
        if self.mask is not None:
            kernel *= self.mask
        bias = (self.param("bias", self.bias_init, (self.features,), self.param_dtype)
                if self.use_bias else None)
        inputs, kernel, bias = self.promote_dtype(inputs, kernel, bias, dtype=self.dtype)
        y = conv_transpose(inputs, kernel, broadcast(self.strides), padding,
                           broadcast(self.kernel_dilation), self.transpose_kernel, self.precision,
                           self.preferred_element_type, impl=self.impl)
        if bias is not None:
            y += jnp.reshape(bias, (1,) * (y.ndim - 1) + (-1,))
        return y.reshape(batch_shape + y.shape[1:])


UPSAMPLE_MODES = ("pixel_shuffle", "resize", "transpose")


def depth_to_space(x: jax.Array, block: int = 2) -> jax.Array:
    """(N, H, W, C*b*b) -> (N, H*b, W*b, C), the inverse of space-to-depth."""
    n, h, w, c = x.shape
    if c % (block * block):
        raise ValueError(f"channels {c} not divisible by {block * block}")
    c_out = c // (block * block)
    x = x.reshape(n, h, w, block, block, c_out)
    x = x.transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(n, h * block, w * block, c_out)


def upsample_block(x: jax.Array, features: int, mode: str) -> jax.Array:
    """Doubles height and width and maps to ``features`` channels (call inside compact)."""
    if mode == "pixel_shuffle":
        return depth_to_space(Conv(4 * features, (3, 3))(x), 2)
    if mode == "resize":
        n, h, w, c = x.shape
        x = jax.image.resize(x, (n, 2 * h, 2 * w, c), method="nearest")
        return Conv(features, (3, 3))(x)
    if mode == "transpose":
        return ConvTranspose(features, (4, 4), strides=(2, 2), padding="SAME")(x)
    raise ConfigError(f"unknown upsampling {mode!r}; known: {', '.join(UPSAMPLE_MODES)}")


class ConvEncoder(nn.Module):
    """Stride-2 convolutions (one per entry of ``channels``), then dense layers.

    Attributes:
      channels: channels of each stride-2 stage.
      hidden: width of the dense layer before the output.
      out_dim: output width.
      activation: name of the activation.
    """

    channels: Sequence[int]
    hidden: int
    out_dim: int
    activation: str = "silu"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        act = get_activation(self.activation)
        h = act(Conv(self.channels[0], (3, 3))(x))
        for c in self.channels:
            h = act(Conv(c, (3, 3), strides=(2, 2))(h))
        h = h.reshape(h.shape[0], -1)
        h = act(nn.Dense(self.hidden)(h))
        return nn.Dense(self.out_dim)(h)


class ConvDecoder(nn.Module):
    """Dense layers to a small feature map, then one 2x upsampling per entry of
    ``channels``, then a 3x3 conv to ``out_channels``.

    Attributes:
      out_shape: (H, W) of the output; each must be divisible by 2**len(channels).
      channels: channels of each upsampling stage, coarsest first.
      hidden: width of the first dense layer.
      out_channels: channels of the output.
      upsample: one of UPSAMPLE_MODES.
      activation: name of the activation.
    """

    out_shape: tuple[int, int]
    channels: Sequence[int]
    hidden: int
    out_channels: int
    upsample: str = "pixel_shuffle"
    activation: str = "silu"

    @nn.compact
    def __call__(self, z: jax.Array) -> jax.Array:
        act = get_activation(self.activation)
        factor = 2 ** len(self.channels)
        h0, w0 = self.out_shape[0] // factor, self.out_shape[1] // factor
        if h0 * factor != self.out_shape[0] or w0 * factor != self.out_shape[1]:
            raise ConfigError(f"image size {self.out_shape} is not divisible by 2**{len(self.channels)}"
                              " (one halving per entry of model.channels)")
        h = act(nn.Dense(self.hidden)(z))
        h = act(nn.Dense(h0 * w0 * self.channels[0])(h))
        h = h.reshape(z.shape[0], h0, w0, self.channels[0])
        for c in self.channels:
            h = act(upsample_block(h, c, self.upsample))
        return Conv(self.out_channels, (3, 3))(h)

