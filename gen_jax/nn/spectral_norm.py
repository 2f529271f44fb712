"""Spectral normalization (Miyato et al., 2018) for dense and conv layers.

The weight is divided by an estimate of its largest singular value, obtained by
power iteration on the kernel reshaped to a matrix (fan-in x fan-out). The left
singular vector estimate ``u`` persists between calls in the ``"spectral"``
variable collection and advances by ``n_iters`` iterations per training call
(``update=True``, with that collection mutable), so one iteration per step is
enough in practice, as in the paper.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from gen_jax.nn.conv import conv_general_dilated

_EPS = 1e-12


def _normalize(v: jax.Array) -> jax.Array:
    return v / (jnp.linalg.norm(v) + _EPS)


def power_iteration(w: jax.Array, u: jax.Array, n_iters: int = 1) -> tuple[jax.Array, jax.Array]:
    """Estimates the top singular value of a matrix by power iteration.

    Args:
      w: (m, n) matrix.
      u: (n,) current estimate of the top right singular vector of ``w`` (any nonzero start).
      n_iters: iterations.

    Returns:
      (sigma, u_new): sigma = v^T w u_new with v = w u_new / ||w u_new||, and the
      updated vector. No gradient flows through the iteration: as in the paper, sigma
      is differentiated through ``w`` only.
    """
    w_sg = jax.lax.stop_gradient(w)

    def body(_, u):
        v = _normalize(w_sg @ u)
        return _normalize(w_sg.T @ v)

    u = jax.lax.fori_loop(0, n_iters, body, jax.lax.stop_gradient(u))
    v = _normalize(w_sg @ u)
    return v @ w @ u, u


def spectral_normalize(module: nn.Module, kernel: jax.Array, update: bool, n_iters: int) -> jax.Array:
    """``kernel / sigma(kernel)``, keeping the power-iteration vector in ``module``'s
    ``"spectral"`` collection (call inside a compact method)."""
    # sigma in float32 under the bfloat16 policy too (gen_jax/nn/precision.py)
    mat = kernel.astype(jnp.float32).reshape(-1, kernel.shape[-1])
    # The starting vector is drawn once, at init, from the module's "params" stream
    # (no fixed key): afterwards it is state, refined by every training call.
    u_var = module.variable("spectral", "u", lambda: _normalize(
        jax.random.normal(module.make_rng("params"), (mat.shape[-1],), kernel.dtype)))
    sigma, u = power_iteration(mat, u_var.value, n_iters)
    if update and not module.is_initializing():
        u_var.value = u
    return (kernel / sigma).astype(kernel.dtype)


class SNDense(nn.Module):
    """Dense layer with a spectrally normalized kernel.

    Attributes:
      features: output width.
      n_iters: power iterations per call.
    """

    features: int
    n_iters: int = 1

    @nn.compact
    def __call__(self, x: jax.Array, update: bool = False) -> jax.Array:
        kernel = self.param("kernel", nn.initializers.lecun_normal(), (x.shape[-1], self.features))
        bias = self.param("bias", nn.initializers.zeros, (self.features,))
        return x @ spectral_normalize(self, kernel, update, self.n_iters) + bias


class SNConv(nn.Module):
    """2-D convolution (NHWC, SAME padding) with a spectrally normalized kernel.

    Attributes:
      features: output channels.
      kernel_size: (kh, kw).
      strides: (sh, sw).
      n_iters: power iterations per call.
      use_bias: add a learned bias.
    """

    features: int
    kernel_size: Sequence[int] = (3, 3)
    strides: Sequence[int] = (1, 1)
    n_iters: int = 1
    use_bias: bool = True

    @nn.compact
    def __call__(self, x: jax.Array, update: bool = False) -> jax.Array:
        shape = (*self.kernel_size, x.shape[-1], self.features)
        kernel = self.param("kernel", nn.initializers.lecun_normal(), shape)
        w = spectral_normalize(self, kernel, update, self.n_iters)
        y = conv_general_dilated(x, w, tuple(self.strides), "SAME",
                                 dimension_numbers=("NHWC", "HWIO", "NHWC"))
        if not self.use_bias:
            return y
        return y + self.param("bias", nn.initializers.zeros, (self.features,))
