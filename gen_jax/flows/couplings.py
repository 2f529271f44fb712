"""Coupling layers (NICE, RealNVP/Glow, Flow++) and the conditioner networks they use.

A coupling keeps the dimensions where the binary ``mask`` b is 1 and transforms
the others elementwise with parameters computed from the kept ones
(``mask`` names the pattern, ``parity`` picks which half is kept):
y = b*x + (1-b)*g(x; theta(b*x)). The conditioner sees concat(b*x, b[, context]);
a trunk network (MLP, residual conv net, or Flow++'s gated conv + attention)
ends in a zero-initialised Dense layer, so every coupling starts near the
identity. Masks: :func:`make_mask` (checkerboard, or a half of the channels).
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from gen_jax.errors import ConfigError
from gen_jax.flows.bijectors import Bijector, sum_except_batch
from gen_jax.nn import Conv
from gen_jax.nn.attention import TransformerBlock

Array = jax.Array
MASKS = ("checkerboard", "channel")


def make_mask(shape: tuple[int, ...], kind: str, parity: int) -> np.ndarray:
    """A binary float32 mask for one example (1 = kept, conditions the rest).

    Args:
      shape: an example's shape, (H, W, C) or (D,).
      kind: "checkerboard" (images: (i + j) % 2 == parity at every channel) or
        "channel" (the first half of the last axis for parity 0, the second half
        for parity 1).
      parity: 0 or 1; alternating it between layers transforms every dimension.

    Returns:
      float32 array of ``shape``.
    """
    if kind == "checkerboard":
        if len(shape) != 3:
            raise ConfigError(f"a checkerboard mask needs (H, W, C) examples, got {shape}")
        h, w, c = shape
        board = (np.add.outer(np.arange(h), np.arange(w)) % 2 == parity).astype(np.float32)
        return np.repeat(board[:, :, None], c, axis=2)
    if kind == "channel":
        c = shape[-1]
        if c < 2:
            raise ConfigError(f"a channel mask needs at least 2 channels, got shape {shape}")
        first = (np.arange(c) < c // 2).astype(np.float32)
        return np.broadcast_to(first if parity == 0 else 1.0 - first, shape).astype(np.float32)
    raise ConfigError(f"unknown mask {kind!r}; known: {', '.join(MASKS)}")


# -- conditioner trunks ------------------------------------------------------

class MLPTrunk(nn.Module):
    """Dense layers with ReLU on the last axis (vectors; NICE on flattened images)."""

    hidden: Sequence[int]

    @nn.compact
    def __call__(self, h: Array) -> Array:
        for width in self.hidden:
            h = nn.relu(nn.Dense(width)(h))
        return h


class ConvTrunk(nn.Module):
    """3x3 conv, ``num_blocks`` residual blocks (two 3x3 convs), 1x1 conv; ReLU.

    With ``num_blocks=0`` this is Glow's coupling network (3x3, 1x1, then the
    coupling's zero-initialised output layer); with blocks, RealNVP's ResNet
    without batch norm (the tanh-bounded scale keeps it stable).
    """

    hidden: int
    num_blocks: int = 0

    @nn.compact
    def __call__(self, h: Array) -> Array:
        h = Conv(self.hidden, (3, 3))(h)
        for _ in range(self.num_blocks):
            r = Conv(self.hidden, (3, 3))(nn.relu(h))
            h = h + Conv(self.hidden, (3, 3))(nn.relu(r))
        return nn.relu(Conv(self.hidden, (1, 1))(nn.relu(h)))


class GatedAttentionTrunk(nn.Module):
    """Flow++'s conditioner (Ho et al., 2019, sec. 3.3): stacks of a gated residual
    conv, h + GLU(conv(elu(conv(elu(h))))) with GLU(a, g) = a * sigmoid(g), then
    layer norm, then multi-head self-attention over the H*W positions (a
    pre-norm transformer block), then layer norm."""

    hidden: int
    num_blocks: int = 2
    num_heads: int = 4

    @nn.compact
    def __call__(self, h: Array) -> Array:
        h = Conv(self.hidden, (3, 3))(h)
        for _ in range(self.num_blocks):
            r = Conv(self.hidden, (3, 3))(nn.elu(h))
            a, g = jnp.split(Conv(2 * self.hidden, (3, 3))(nn.elu(r)), 2, axis=-1)
            h = nn.LayerNorm()(h + a * jax.nn.sigmoid(g))
            if self.num_heads:
                n, hh, ww, c = h.shape
                tokens = TransformerBlock(self.num_heads, mlp_ratio=2.0)(h.reshape(n, hh * ww, c))
                h = nn.LayerNorm()(tokens.reshape(n, hh, ww, c))
        return h


class _Coupling(Bijector):
    """Shared plumbing: the conditioner's input and its zero-initialised output layer."""

    trunk: nn.Module
    mask: str = "channel"
    parity: int = 0

    def params_from(self, x: Array, context: Array | None, per_dim: int) -> tuple[Array, Array]:
        """(b, theta) with theta (N, ..., C, per_dim) computed from b*x (and context)."""
        b = jnp.asarray(make_mask(x.shape[1:], self.mask, self.parity), x.dtype)
        inp = [x * b, jnp.broadcast_to(b, x.shape)]
        if context is not None:
            inp.append(context)
        h = self.trunk(jnp.concatenate(inp, -1))
        out = nn.Dense(x.shape[-1] * per_dim, kernel_init=nn.initializers.zeros, name="out")(h)
        return b, out.reshape(*x.shape, per_dim)


class AdditiveCoupling(_Coupling):
    """NICE's additive coupling (Dinh et al., 2015, eq. 6): y = b*x + (1-b)*(x + t(b*x)); log|det| = 0."""

    @nn.compact
    def __call__(self, x: Array, reverse: bool = False, context: Array | None = None):
        b, theta = self.params_from(x, context, 1)
        t = (1 - b) * theta[..., 0]
        return (x - t if reverse else x + t), jnp.zeros((x.shape[0],), x.dtype)


class AffineCoupling(_Coupling):
    """RealNVP's affine coupling (Dinh et al., 2017, eq. 9):
    y = b*x + (1-b)*(x*exp(s(b*x)) + t(b*x)), log|det| = sum((1-b)*s).

    ``scale_fn``: "tanh", RealNVP's bounded s = scale * tanh(raw) with a learned
    per-channel ``scale`` (stable without batch norm); "sigmoid", Glow's
    exp(s) = sigmoid(raw + 2) (Kingma & Dhariwal, 2018, code).
    """

    scale_fn: str = "tanh"

    @nn.compact
    def __call__(self, x: Array, reverse: bool = False, context: Array | None = None):
        b, theta = self.params_from(x, context, 2)
        raw, t = theta[..., 0], theta[..., 1]
        if self.scale_fn == "tanh":
            scale = self.param("scale", nn.initializers.ones, (x.shape[-1],))
            s = scale * jnp.tanh(raw)
        elif self.scale_fn == "sigmoid":
            s = jax.nn.log_sigmoid(raw + 2.0)
        else:
            raise ConfigError(f"unknown scale_fn {self.scale_fn!r}; known: tanh, sigmoid")
        s, t = (1 - b) * s, (1 - b) * t
        if reverse:
            return (x - t) * jnp.exp(-s), -sum_except_batch(s)
        return x * jnp.exp(s) + t, sum_except_batch(s)


def mix_logistic_logit_cdf(x: Array, logits: Array, means: Array,
                           log_scales: Array) -> tuple[Array, Array]:
    """u = logit(F(x)) for the logistic-mixture CDF F (Flow++, Ho et al., 2019, eq. 7),
    and log du/dx, both computed in log space so they never round to +-inf:

    F(x) = sum_k pi_k sigmoid((x - mu_k) / s_k),
    log du/dx = log f(x) - log F(x) - log(1 - F(x)),
    with f the mixture density sum_k pi_k sigmoid(z_k) sigmoid(-z_k) / s_k.

    Args:
      x: (...) points.
      logits, means, log_scales: (..., K) mixture parameters per point.

    Returns:
      (u, log du/dx), each shaped like x.
    """
    z = (x[..., None] - means) * jnp.exp(-log_scales)
    log_pi = jax.nn.log_softmax(logits, axis=-1)
    log_cdf = jax.nn.logsumexp(log_pi + jax.nn.log_sigmoid(z), axis=-1)
    log_sf = jax.nn.logsumexp(log_pi + jax.nn.log_sigmoid(-z), axis=-1)
    log_pdf = jax.nn.logsumexp(log_pi + jax.nn.log_sigmoid(z) + jax.nn.log_sigmoid(-z) - log_scales,
                               axis=-1)
    return log_cdf - log_sf, log_pdf - log_cdf - log_sf


def mix_logistic_inverse(u: Array, logits: Array, means: Array, log_scales: Array,
                         iters: int = 60) -> Array:
    """Solves logit(F(x)) = u by bisection (F is monotone), inside one lax.fori_loop.

    The bracket is exact: at x = max_k(mu_k + s_k c) every component's CDF is at
    least sigmoid(c), so logit(F) >= c; with c = |u| + 1 that exceeds u (and
    symmetrically below).
    """
    c = (jnp.abs(u) + 1.0)[..., None]
    scales = jnp.exp(log_scales)
    lo = jnp.min(means - scales * c, axis=-1)
    hi = jnp.max(means + scales * c, axis=-1)

    def body(_, bracket):
        lo, hi = bracket
        mid = 0.5 * (lo + hi)
        below = mix_logistic_logit_cdf(mid, logits, means, log_scales)[0] < u
        return jnp.where(below, mid, lo), jnp.where(below, hi, mid)

    lo, hi = jax.lax.fori_loop(0, iters, body, (lo, hi))
    return 0.5 * (lo + hi)


class MixLogisticCoupling(_Coupling):
    """Flow++'s logistic-mixture CDF coupling (Ho et al., 2019, eq. 7):
    y = b*x + (1-b)*(logit(MixLogCDF(x; pi, mu, s)) * exp(a) + t), with
    pi, mu, s, a, t functions of b*x. a is bounded as scale * tanh(raw), log s
    clipped to [-7, 7]. The inverse inverts the mixture CDF by bisection.
    """

    num_components: int = 4

    @nn.compact
    def __call__(self, x: Array, reverse: bool = False, context: Array | None = None):
        k = self.num_components
        b, theta = self.params_from(x, context, 2 + 3 * k)
        scale = self.param("scale", nn.initializers.ones, (x.shape[-1],))
        a = scale * jnp.tanh(theta[..., 0])
        t = theta[..., 1]
        logits, means = theta[..., 2:2 + k], theta[..., 2 + k:2 + 2 * k]
        log_scales = jnp.clip(theta[..., 2 + 2 * k:], -7.0, 7.0)
        keep = 1 - b
        if reverse:
            u = (x - t) * jnp.exp(-a)
            xt = mix_logistic_inverse(u, logits, means, log_scales)
            _, log_du = mix_logistic_logit_cdf(xt, logits, means, log_scales)
            y = b * x + keep * xt
            return y, -sum_except_batch(keep * (log_du + a))
        u, log_du = mix_logistic_logit_cdf(x, logits, means, log_scales)
        y = b * x + keep * (u * jnp.exp(a) + t)
        return y, sum_except_batch(keep * (log_du + a))
