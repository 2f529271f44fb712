"""The bijector contract and the parameter-light layers of normalizing flows.

A bijector (in the spirit of distrax) is a Flax linen module whose one
``__call__(x, reverse=False, context=None)`` computes either direction with the
same parameters:

- ``forward_and_log_det(x)  -> (y, log|det dy/dx|)`` (``reverse=False``),
- ``inverse_and_log_det(y)  -> (x, log|det dx/dy|)`` (``reverse=True``),

where the log-determinant is per example, shape ``(N,)``. Calling both methods
through ``module.apply(variables, x, method="forward_and_log_det")`` (or
``"inverse_and_log_det"``) uses the same variables. :class:`Chain` composes
bijectors: it sums log-determinants and inverts in reverse order. ``context``
carries conditioning features (the data, for the variational dequantizer of
Flow++); only couplings read it.

Layers here: :class:`Chain`, :class:`Invert`, :class:`Reshape`, :class:`Squeeze`,
:class:`Rescale`, :class:`Logit`, :class:`ElementwiseAffine` (NICE's scaling
layer, Glow's learned top prior), :class:`ActNorm`, :class:`InvConv1x1` and
:class:`Split` (multi-scale factoring-out with an optional learned prior).
Couplings live in couplings.py.
"""

from __future__ import annotations

import math
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from gen_jax.nn import Conv

Array = jax.Array


def sum_except_batch(a: Array) -> Array:
    """Sums every axis but the first: per-example totals of a log-det term."""
    return a.reshape(a.shape[0], -1).sum(-1)


class Bijector(nn.Module):
    """Base class: subclasses implement ``__call__(x, reverse=False, context=None)``."""

    def forward_and_log_det(self, x: Array, context: Array | None = None) -> tuple[Array, Array]:
        """y = f(x) and log|det df/dx| per example.

        Args:
          x: a batch (N, ...).
          context: optional conditioning features (read by couplings only).

        Returns:
          (y, (N,) log-determinants).
        """
        return self(x, reverse=False, context=context)

    def inverse_and_log_det(self, y: Array, context: Array | None = None) -> tuple[Array, Array]:
        """x = f^{-1}(y) and log|det df^{-1}/dy| per example (minus the forward one at x)."""
        return self(y, reverse=True, context=context)


class Chain(Bijector):
    """f = f_n o ... o f_1 for ``layers = (f_1, ..., f_n)``: log-dets add up,
    the inverse applies the inverses in reverse order."""

    layers: Sequence[nn.Module]

    def __call__(self, x: Array, reverse: bool = False, context: Array | None = None):
        total = jnp.zeros((x.shape[0],), x.dtype)
        for layer in (reversed(self.layers) if reverse else self.layers):
            x, ld = layer(x, reverse=reverse, context=context)
            total = total + ld
        return x, total


class Invert(Bijector):
    """The inverse of ``bijector`` as a bijector (e.g. a sigmoid from :class:`Logit`)."""

    bijector: nn.Module

    def __call__(self, x: Array, reverse: bool = False, context: Array | None = None):
        return self.bijector(x, reverse=not reverse, context=context)


class Reshape(Bijector):
    """A reshape of each example from ``in_shape`` to ``out_shape`` (log-det 0)."""

    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]

    def __call__(self, x: Array, reverse: bool = False, context: Array | None = None):
        shape = self.in_shape if reverse else self.out_shape
        return x.reshape(x.shape[0], *shape), jnp.zeros((x.shape[0],), x.dtype)


def squeeze2x2(x: Array) -> Array:
    """(N, H, W, C) -> (N, H/2, W/2, 4C): each 2x2 block becomes channels (RealNVP)."""
    n, h, w, c = x.shape
    x = x.reshape(n, h // 2, 2, w // 2, 2, c).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(n, h // 2, w // 2, 4 * c)


def unsqueeze2x2(x: Array) -> Array:
    """The inverse of :func:`squeeze2x2`."""
    n, h, w, c4 = x.shape
    c = c4 // 4
    x = x.reshape(n, h, w, 2, 2, c).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(n, 2 * h, 2 * w, c)


class Squeeze(Bijector):
    """Space-to-depth by 2 (``undo=True``: depth-to-space); a permutation, log-det 0."""

    undo: bool = False

    def __call__(self, x: Array, reverse: bool = False, context: Array | None = None):
        y = unsqueeze2x2(x) if reverse != self.undo else squeeze2x2(x)
        return y, jnp.zeros((x.shape[0],), x.dtype)


class Rescale(Bijector):
    """A fixed affine map y = scale * x + shift (e.g. the data's value range to
    [0, 1]); log|det| = D log|scale|."""

    scale: float
    shift: float = 0.0

    def __call__(self, x: Array, reverse: bool = False, context: Array | None = None):
        d = math.prod(x.shape[1:])
        ld = jnp.full((x.shape[0],), d * math.log(abs(self.scale)), x.dtype)
        if reverse:
            return (x - self.shift) / self.scale, -ld
        return self.scale * x + self.shift, ld


class Logit(Bijector):
    """RealNVP's preprocessing of pixels in [0, 1] (Dinh et al., 2017, sec. 4.1):
    y = logit(alpha + (1 - 2 alpha) x), so the flow works on an unbounded space.

    log|dy/dx| = log(1 - 2 alpha) - log p - log(1 - p) with p = alpha + (1 - 2 alpha) x.
    """

    alpha: float = 0.05

    def __call__(self, x: Array, reverse: bool = False, context: Array | None = None):
        a = self.alpha
        if reverse:
            p = jax.nn.sigmoid(x)
            ld = jax.nn.log_sigmoid(x) + jax.nn.log_sigmoid(-x) - math.log(1 - 2 * a)
            return (p - a) / (1 - 2 * a), sum_except_batch(ld)
        p = a + (1 - 2 * a) * x
        y = jnp.log(p) - jnp.log1p(-p)
        ld = math.log(1 - 2 * a) - jnp.log(p) - jnp.log1p(-p)
        return y, sum_except_batch(ld)


class ElementwiseAffine(Bijector):
    """y = x * exp(log_scale) + shift with one parameter per dimension of an example.

    NICE's diagonal scaling layer (Dinh et al., 2015, sec. 3.3) is the
    ``shift=False`` case; Glow's learned prior on the top latent is this layer
    too, since N(z; mu, sigma) = N((z - mu) / sigma; 0, 1) / sigma.
    """

    shift: bool = True
    data_init: bool = False

    @nn.compact
    def __call__(self, x: Array, reverse: bool = False, context: Array | None = None):
        if self.data_init:
            # Like actnorm, per dimension: the init batch leaves with zero mean and unit
            # variance. (NICE's one scaling layer otherwise needs thousands of Adam
            # steps to reach the data's scale: its log-scale moves ~lr per step.)
            log_scale = self.param("log_scale", lambda _: -jnp.log(jnp.std(x, axis=0) + 1e-6))
            b = (self.param("shift", lambda _: -jnp.mean(x, axis=0) * jnp.exp(log_scale))
                 if self.shift else 0.0)
        else:
            log_scale = self.param("log_scale", nn.initializers.zeros, x.shape[1:])
            b = self.param("shift", nn.initializers.zeros, x.shape[1:]) if self.shift else 0.0
        ld = jnp.broadcast_to(jnp.sum(log_scale), (x.shape[0],))
        if reverse:
            return (x - b) * jnp.exp(-log_scale), -ld
        return x * jnp.exp(log_scale) + b, ld


class ActNorm(Bijector):
    """Glow's activation normalization (Kingma & Dhariwal, 2018, sec. 3.1):
    y = (x + bias) * exp(log_scale) per channel (last axis).

    Data-dependent initialisation: the parameters' initialisers read the batch
    that reaches this layer during ``module.init``, so the outputs on the init
    batch have zero mean and unit variance per channel. The Method's ``init``
    runs the flow forward on a real training batch for exactly this reason.
    log|det| = (number of positions) * sum(log_scale).
    """

    eps: float = 1e-6

    @nn.compact
    def __call__(self, x: Array, reverse: bool = False, context: Array | None = None):
        axes = tuple(range(x.ndim - 1))
        bias = self.param("bias", lambda _: -jnp.mean(x, axis=axes))
        log_scale = self.param("log_scale",
                               lambda _: -jnp.log(jnp.std(x, axis=axes) + self.eps))
        positions = math.prod(x.shape[1:-1])
        ld = jnp.broadcast_to(positions * jnp.sum(log_scale), (x.shape[0],))
        if reverse:
            return x * jnp.exp(-log_scale) - bias, -ld
        return (x + bias) * jnp.exp(log_scale), ld


def _lu_init(key: Array, c: int) -> dict[str, Array]:
    """LU factors of a random rotation (Glow's init): W = P L (U + diag(sign_s * exp(log_s)))."""
    w = jnp.linalg.qr(jax.random.normal(key, (c, c)))[0]
    p, low, up = jax.scipy.linalg.lu(w)
    s = jnp.diag(up)
    return {"p": p, "l": low, "u": jnp.triu(up, 1), "sign_s": jnp.sign(s), "log_s": jnp.log(jnp.abs(s))}


class InvConv1x1(Bijector):
    """Glow's invertible 1x1 convolution, LU-decomposed (Kingma & Dhariwal, 2018, sec. 3.2):
    W = P L (U + diag(s)), with P a fixed permutation, L unit lower triangular
    and U strictly upper triangular, so log|det W| = sum(log|s|) and the layer's
    log|det| = (number of positions) * sum(log|s|). Acts on the last axis, so it
    is a learned invertible linear map for vector data too.

    P and sign(s) are constants, not parameters: they live in the non-trainable
    ``"constants"`` collection (carried in ``TrainState.model_state``), so no
    optimizer ever touches them (weight decay would shrink P, making det W differ
    from the log-det counted). L, U and log|s| are the ``"lu"`` parameter; every
    factor comes from the same random rotation, drawn from the ``"params"`` stream.
    """

    @nn.compact
    def __call__(self, x: Array, reverse: bool = False, context: Array | None = None):
        c = x.shape[-1]
        # Both collections come from one rotation, drawn once. (Flax also calls the
        # param's initializer abstractly on apply to check shapes: hence its key.)
        init = _lu_init(self.make_rng("params"), c) if not self.has_variable("params", "lu") else None

        def factors(key: Array, names: tuple[str, ...]) -> dict[str, Array]:
            full = init if init is not None else _lu_init(key, c)
            return {k: full[k] for k in names}

        lu = self.param("lu", factors, ("l", "u", "log_s"))
        fixed = self.variable("constants", "lu", lambda: factors(None, ("p", "sign_s"))).value
        log_s = lu["log_s"]
        w = self.assemble(fixed["p"], lu["l"], lu["u"], fixed["sign_s"], log_s)
        positions = math.prod(x.shape[1:-1])
        ld = jnp.broadcast_to(positions * jnp.sum(log_s), (x.shape[0],))
        if reverse:
            return x @ jnp.linalg.inv(w).T, -ld
        return x @ w.T, ld

    @staticmethod
    def assemble(p: Array, low: Array, up: Array, sign_s: Array, log_s: Array) -> Array:
        """W = P L (U + diag(sign_s * exp(log_s))) from raw factors (masked to their triangles)."""
        c = p.shape[0]
        lower = jnp.tril(low, -1) + jnp.eye(c)
        upper = jnp.triu(up, 1) + jnp.diag(sign_s * jnp.exp(log_s))
        return p @ lower @ upper


class Split(Bijector):
    """Multi-scale factoring-out (RealNVP sec. 3.6; Glow's split with a learned prior).

    The last axis is cut into halves (x1, x2): x1 leaves the flow here and x2
    goes through ``inner``. With ``learned_prior`` the factored-out half gets a
    Gaussian prior whose mean and log-std are a zero-initialised 3x3 conv
    (Dense for vectors) of x2, written as the bijection
    eps1 = (x1 - mu(x2)) * exp(-log_std(x2)) with log-det -sum(log_std); so
    the whole flow still ends in a standard normal, and temperature sampling
    scales every prior's std at once. Output: concat(eps1, inner(x2)), the
    same shape as the input.
    """

    inner: nn.Module
    learned_prior: bool = False

    @nn.compact
    def __call__(self, x: Array, reverse: bool = False, context: Array | None = None):
        c = x.shape[-1]
        a, b = x[..., :c // 2], x[..., c // 2:]
        if reverse:
            # b holds inner's output: invert it first, since the prior is a function of x2.
            x2, ld_inner = self.inner(b, reverse=True, context=context)
        else:
            x2, ld_inner = b, None
        if self.learned_prior:
            if x.ndim == 4:
                h = Conv(2 * (c // 2), (3, 3), kernel_init=nn.initializers.zeros, name="prior")(x2)
            else:
                h = nn.Dense(2 * (c // 2), kernel_init=nn.initializers.zeros, name="prior")(x2)
            mu, log_std = h[..., :c // 2], h[..., c // 2:]
        else:
            mu, log_std = jnp.zeros_like(a), jnp.zeros_like(a)
        if reverse:
            x1 = a * jnp.exp(log_std) + mu
            return jnp.concatenate([x1, x2], -1), ld_inner + sum_except_batch(log_std)
        eps1 = (a - mu) * jnp.exp(-log_std)
        y2, ld_inner = self.inner(x2, reverse=False, context=context)
        return jnp.concatenate([eps1, y2], -1), ld_inner - sum_except_batch(log_std)
