"""The "ldm" Method: latent diffusion (Rombach et al., 2022, "High-Resolution Image
Synthesis with Latent Diffusion Models").

A DDPM (this family's :class:`~gen_jax.diffusion.ddpm.DDPM`: its process, schedules,
losses, samplers and classifier-free guidance, used as they are) runs over the latents
of a trained, frozen autoencoder of this project, and samples are the autoencoder's
decodings of latent samples.

- The autoencoder comes from ``model.ae_workdir`` through the checkpoint-level loader
  :func:`gen_jax.checkpoint.load_trained`: a "vae" run (the latent is the encoder mean,
  as Rombach's KL-regularised autoencoder), or a "vqvae" run (the latent is the
  encoder's pre-quantization map; decoding quantizes it first, Rombach's VQ-regularised
  variant). Its variables travel in ``TrainState.model_state["ae"]``: checkpointed with
  the diffusion model, never in the trained ``params``.
- Latents are scaled to unit variance by Rombach's scale factor 1 / std(z), computed
  from the training split's latents when the state is made (:meth:`LatentDiffusion.fit`,
  the :class:`~gen_jax.registry.Fits` route by which the runtime hands a Method its
  training split) and stored in ``model_state["scale"]``.
- The denoiser (:class:`CrossAttnDenoiser`) sees the class label only through
  cross-attention, Stable Diffusion's mechanism: its hidden tokens attend to a short
  sequence of context tokens from a learned label embedding, whose extra row
  ``num_classes`` is the learned null context of classifier-free guidance (labels are
  dropped to it with probability ``model.cfg_dropout`` in training; ``sampler.guidance``
  sets w in ε̂ = ε_c + w (ε_c - ε_∅), ddpm.py's convention).

Config (``model``): ``ae_workdir``; the denoiser's ``hidden``, ``depth``, ``heads``,
``context_tokens``, ``context_dim``, ``dropout``; and the DDPM keys ``schedule``,
``num_timesteps``, ``pred``, ``variance``, ``loss``, ``vlb_weight``,
``timestep_sampler``, ``num_classes`` (0 = unconditional), ``cfg_dropout``. Section
``sampler`` as for "ddpm". Evaluation reports the latent diffusion loss
(``latent_mse``, and ``latent_vlb_bpd_est``: DDPM's one-term bound estimate in bits per
dimension of the *scaled, continuous latent*, not comparable with pixel bits/dim);
sample metrics are computed by the runtime on the decoded samples. No ``log_prob``.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from gen_jax.checkpoint import load_dependency
from gen_jax.data import DataInfo
from gen_jax.diffusion.ddpm import DDPM
from gen_jax.diffusion.unet import timestep_embedding
from gen_jax.errors import ConfigError
from gen_jax.registry import register
from gen_jax.state import TrainState
from gen_jax.steps import make_eval_step, make_train_step

AE_METHODS = ("vae", "vqvae")


# -- cross-attention conditioning ---------------------------------------------------------


def attention(q: jax.Array, k: jax.Array, v: jax.Array) -> jax.Array:
    """Scaled dot-product attention softmax(Q Kᵀ / √d) V (Vaswani et al., 2017), per head.

    Args:
      q: (B, N, H, d) queries; k, v: (B, M, H, d) keys and values.

    Returns:
      (B, N, H, d).
    """
    logits = jnp.einsum("bnhd,bmhd->bhnm", q, k).astype(jnp.float32) / math.sqrt(q.shape[-1])
    return jnp.einsum("bhnm,bmhd->bnhd", jax.nn.softmax(logits, axis=-1).astype(v.dtype), v)


class CrossAttention(nn.Module):
    """Multi-head attention of tokens ``x`` (B, N, C) to a context (B, M, Cc): queries
    from ``x``, keys and values from the context, an output projection back to C
    (zero-initialised, so a new block starts as the identity of its residual)."""

    heads: int

    @nn.compact
    def __call__(self, x: jax.Array, context: jax.Array) -> jax.Array:
        b, n, c = x.shape
        d = c // self.heads
        q = nn.Dense(c, name="query")(x).reshape(b, n, self.heads, d)
        k = nn.Dense(c, name="key")(context).reshape(b, context.shape[1], self.heads, d)
        v = nn.Dense(c, name="value")(context).reshape(b, context.shape[1], self.heads, d)
        h = attention(q, k, v).reshape(b, n, c)
        return nn.Dense(c, kernel_init=nn.initializers.zeros, name="out")(h)


class LabelContext(nn.Module):
    """Labels (B,) -> context tokens (B, tokens, dim) from one learned embedding table of
    ``num_classes + 1`` rows; row ``num_classes`` is the learned null context."""

    num_classes: int
    tokens: int
    dim: int

    @nn.compact
    def __call__(self, y: jax.Array) -> jax.Array:
        emb = nn.Embed(self.num_classes + 1, self.tokens * self.dim, name="embedding")(y)
        return emb.reshape(y.shape[0], self.tokens, self.dim)


class CrossAttnDenoiser(nn.Module):
    """ε-network over a latent: ``__call__(x, t, y=None, train=False)`` with ``x`` the
    flattened latent (B, D) (DDPM's vector-data convention) -> (B, D).

    The latent is cut into tokens (a (D,) vector is one token, an (h, w, c) map h*w
    tokens with learned positions). Each of ``depth`` blocks is a residual MLP block with
    the time embedding added to its input (as :class:`~gen_jax.diffusion.unet.MLPDenoiser`),
    self-attention between the tokens (when there are several), and cross-attention to
    the label's context tokens. The label reaches the network only there.
    """

    latent_shape: tuple[int, ...]
    hidden: int = 256
    depth: int = 3
    heads: int = 4
    context_tokens: int = 4
    context_dim: int = 64
    num_classes: int = 0
    dropout: float = 0.0

    def tokens(self) -> tuple[int, int]:
        """(number of tokens, features per token) of the latent."""
        if len(self.latent_shape) == 1:
            return 1, self.latent_shape[0]
        return math.prod(self.latent_shape[:-1]), self.latent_shape[-1]

    @nn.compact
    def __call__(self, x: jax.Array, t: jax.Array, y: jax.Array | None = None,
                 train: bool = False) -> jax.Array:
        b = x.shape[0]
        n, f = self.tokens()
        h = nn.Dense(self.hidden, name="embed_in")(x.reshape(b, n, f))
        if n > 1:
            h = h + self.param("pos", nn.initializers.normal(0.02), (n, self.hidden))
        temb = timestep_embedding(t, 64)
        temb = nn.Dense(self.hidden)(nn.silu(nn.Dense(self.hidden)(temb)))[:, None, :]
        context = None
        if self.num_classes:
            if y is None:
                y = jnp.full((b,), self.num_classes, jnp.int32)
            context = LabelContext(self.num_classes, self.context_tokens, self.context_dim,
                                   name="label_context")(y)
        for i in range(self.depth):
            z = nn.silu(nn.LayerNorm()(h + temb))
            z = nn.Dropout(self.dropout, deterministic=not train)(nn.Dense(self.hidden)(z))
            h = h + nn.Dense(self.hidden)(nn.silu(z))
            if n > 1:
                hn = nn.LayerNorm()(h)
                h = h + CrossAttention(self.heads, name=f"self_attn_{i}")(hn, hn)
            if context is not None:
                h = h + CrossAttention(self.heads, name=f"cross_attn_{i}")(nn.LayerNorm()(h), context)
        out = nn.Dense(f, kernel_init=nn.initializers.zeros, name="embed_out")(nn.silu(h))
        return out.reshape(b, n * f)


# -- the frozen autoencoder ---------------------------------------------------------------


class FrozenAutoencoder:
    """A trained autoencoder's encoder and decoder as pure functions of its variables.

    Attributes:
      method: the autoencoder's Method (its config and DataInfo say what data it models).
      variables: its (host) variables: a VAE's eval parameters, a VQ-VAE's {"params", "vq"}.
      kind: its method name, "vae" or "vqvae".
      latent_shape: one example's latent shape.
    """

    def __init__(self, method: Any, variables: Any, kind: str):
        if kind not in AE_METHODS:
            raise ConfigError(f"latent diffusion needs an autoencoder of {AE_METHODS}; got {kind!r}")
        self.method, self.variables, self.kind = method, variables, kind
        x = jax.ShapeDtypeStruct((1, *method.info.shape), jnp.float32)
        self.latent_shape = tuple(jax.eval_shape(self.encode, variables, x).shape[1:])

    @classmethod
    def from_state(cls, method: Any, state: TrainState) -> "FrozenAutoencoder":
        """From a trained (or freshly initialised) state of a "vae" or "vqvae" Method."""
        kind = method.config.method
        variables = method.variables(state) if kind == "vqvae" else state.eval_params
        return cls(method, jax.device_get(variables), kind)

    def encode(self, variables: Any, x: jax.Array) -> jax.Array:
        """Latents of images ``x``: the VAE's posterior mean (N, L), or the VQ-VAE's
        encoder output before quantization (N, h, w, code_dim)."""
        if self.kind == "vae":
            return self.method.encode(_params_state(variables), x, None)
        return self.method.net.apply(variables, x, method=lambda mod, x: mod.enc(x))

    def decode(self, variables: Any, z: jax.Array) -> jax.Array:
        """Images (in the data's value range) from latents."""
        if self.kind == "vae":
            return self.method.decode(_params_state(variables), z)

        def quantize_and_decode(mod, z):
            return mod.dec(mod.vq(z)[1]["z_q"])

        return self.method.value_range.clip(self.method.net.apply(variables, z,
                                                                  method=quantize_and_decode))


def _params_state(params: Any) -> TrainState:
    """A state whose ``eval_params`` are ``params``: the form the autoencoders' public
    ``encode``/``decode`` take."""
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=None)


def load_autoencoder(workdir: str) -> FrozenAutoencoder:
    """The trained autoencoder of a "vae" or "vqvae" workdir (its latest checkpoint).

    Raises:
      ConfigError: the workdir is empty, missing, has no checkpoint, or holds another method.
    """
    method, state, _ = load_dependency(
        workdir, "model.ae_workdir", AE_METHODS,
        "an autoencoder first (python -m gen_jax --config=configs/vae_digits.py --workdir=runs/vae_digits)",
        f"latent diffusion needs one of {', '.join(AE_METHODS)}")
    return FrozenAutoencoder.from_state(method, state)


# -- the Method ---------------------------------------------------------------------------


def latent_scale(z: jax.Array) -> jax.Array:
    """Rombach et al.'s scale factor 1 / std(z) over every element of the latents ``z``
    (the LDM paper's appendix on its autoencoders: latents rescaled to unit variance)."""
    return 1.0 / jnp.std(z.astype(jnp.float32))


class LatentDiffusion:
    """The latent diffusion Method (see gen_jax.registry.Method, and module docstring).

    Args:
      config: the experiment config.
      info: the image data's DataInfo.
      autoencoder: the frozen autoencoder; None = loaded from ``model.ae_workdir``.
    """

    def __init__(self, config: ml_collections.ConfigDict, info: DataInfo,
                 autoencoder: FrozenAutoencoder | None = None):
        self.config = config
        self.info = info
        m = config.model
        self.ae = load_autoencoder(m.ae_workdir) if autoencoder is None else autoencoder
        self._check_data(config)
        for key in ("hidden", "depth", "heads", "context_tokens", "context_dim"):
            if int(m[key]) < 1:
                raise ConfigError(f"model.{key} must be a positive integer, got {m[key]!r}")
        if m.hidden % m.heads:
            raise ConfigError(f"model.hidden={m.hidden} must be divisible by model.heads={m.heads}")
        if not 0.0 <= m.cfg_dropout < 1.0:
            raise ConfigError(f"model.cfg_dropout must be in [0, 1), got {m.cfg_dropout}")
        if m.cfg_dropout > 0 and not m.num_classes:
            raise ConfigError(f"model.cfg_dropout={m.cfg_dropout} needs a class-conditional model "
                              "(model.num_classes > 0)")
        self.latent_shape = self.ae.latent_shape
        self.latent_info = DataInfo(f"{info.name}:latent", "vector", self.latent_shape, None,
                                    info.num_classes)
        # The DDPM over the latents: built for vector data (its MLP path: flattened input,
        # no pixel clipping, a continuous decoder), then given the cross-attention
        # denoiser, which has the MLP's call signature net(x, t, y, train).
        inner = ml_collections.ConfigDict(config.to_dict())
        inner.model.arch = "mlp"
        self.diffusion = DDPM(inner, self.latent_info)
        self.diffusion.net = CrossAttnDenoiser(
            self.latent_shape, hidden=m.hidden, depth=m.depth, heads=m.heads,
            context_tokens=m.context_tokens, context_dim=m.context_dim,
            num_classes=self.diffusion.num_classes, dropout=m.dropout)
        self.net = self.diffusion.net
        self.num_classes = self.diffusion.num_classes

    def _check_data(self, config: ml_collections.ConfigDict) -> None:
        ae_data, d = self.ae.method.config.data, config.data
        ours = (self.info.name, tuple(self.info.shape), tuple(d.value_range), d.dequantize)
        theirs = (self.ae.method.info.name, tuple(self.ae.method.info.shape),
                  tuple(ae_data.value_range), ae_data.dequantize)
        if ours != theirs:
            raise ConfigError(f"the LDM's data (name, shape, value_range, dequantize) = {ours} differ "
                              f"from its autoencoder's {theirs}: set data.* as the autoencoder's config")

    # -- latents -----------------------------------------------------------------

    def encode_vars(self, model_state: dict, x: jax.Array) -> jax.Array:
        """Scaled latents scale * E(x) of images ``x`` under the frozen autoencoder."""
        z = self.ae.encode(model_state["ae"], x)
        return jax.lax.stop_gradient(model_state["scale"] * z)

    def decode_vars(self, model_state: dict, z: jax.Array) -> jax.Array:
        """Images D(z / scale) of scaled latents ``z``."""
        return self.ae.decode(model_state["ae"], z / model_state["scale"])

    def encode(self, state: TrainState, x: jax.Array, rng: jax.Array | None = None) -> jax.Array:
        """Scaled latents of ``x`` (deterministic, ``rng`` is unused; gen_jax.registry.HasLatent)."""
        return self.encode_vars(state.model_state, x)

    def decode(self, state: TrainState, z: jax.Array) -> jax.Array:
        """Images, in the data's value range, from scaled latents."""
        return self.decode_vars(state.model_state, z)

    def reconstruct(self, state: TrainState, x: jax.Array, rng: jax.Array | None = None) -> jax.Array:
        """The autoencoder's reconstruction through the scaled latent (``rng`` unused)."""
        return self.decode(state, self.encode(state, x))

    # -- the Method contract -----------------------------------------------------

    def _state(self, rng: jax.Array, scale: jax.Array, ae_vars: Any, batch_size: int) -> TrainState:
        # The DDPM's state (denoiser parameters, optimizer, EMA, its loss history) with
        # the frozen autoencoder and the scale beside that history in model_state.
        z = jnp.zeros((batch_size, *self.latent_shape), jnp.float32)
        inner = self.diffusion.init(rng, {"x": z})
        return inner.replace(model_state={"ae": ae_vars, "scale": jnp.asarray(scale, jnp.float32),
                                          "history": inner.model_state})

    def fit(self, rng: jax.Array, x_train: jax.Array) -> TrainState:
        """A fresh state, with the scale factor from the latents of the whole training
        split ``x_train`` (the runtime calls this in place of :meth:`init`)."""
        self.info.check_batch(x_train)
        ae_vars = jax.tree.map(jnp.asarray, self.ae.variables)
        return self._state(rng, latent_scale(self._all_latents(ae_vars, x_train)), ae_vars, 2)

    def init(self, rng: jax.Array, example_batch: dict) -> TrainState:
        """A fresh state, the scale factor from this batch's latents (Rombach et al.'s own
        choice, their first batch); the runtime uses :meth:`fit` on the whole split."""
        x = jnp.asarray(example_batch["x"])
        self.info.check_batch(x)
        ae_vars = jax.tree.map(jnp.asarray, self.ae.variables)
        return self._state(rng, latent_scale(self.ae.encode(ae_vars, x)), ae_vars, x.shape[0])

    def _all_latents(self, ae_vars: Any, x: jax.Array, chunk: int = 1024) -> jax.Array:
        """E(x) of every example, ``chunk`` at a time (lax.map) so memory stays bounded;
        the split is zero-padded to whole chunks (one encoder program) and cut back."""
        n = x.shape[0]
        chunk = min(chunk, n)
        pad = -n % chunk
        xp = jnp.pad(x, ((0, pad),) + ((0, 0),) * (x.ndim - 1))
        zs = jax.lax.map(lambda xc: self.ae.encode(ae_vars, xc),
                         xp.reshape(-1, chunk, *x.shape[1:]))
        return zs.reshape(n + pad, *zs.shape[2:])[:n]

    def loss_fn(self, params: Any, model_state: dict, batch: dict, rng: jax.Array, train: bool):
        """The DDPM loss of the batch's scaled latents (see gen_jax.steps for the signature);
        the autoencoder and scale in ``model_state`` pass through unchanged."""
        z = self.encode_vars(model_state, batch["x"])
        latent_batch = {"x": z, **({"y": batch["y"]} if "y" in batch else {})}
        loss, (metrics, history) = self.diffusion.loss_fn(params, model_state["history"], latent_batch,
                                                          rng, train)
        metrics = {f"latent_{k}": v for k, v in metrics.items()}
        return loss, (metrics, {**model_state, "history": history})

    def train_step(self, state: TrainState, batch: dict, rng: jax.Array):
        return make_train_step(self.loss_fn)(state, batch, rng)

    def eval_step(self, state: TrainState, batch: dict, rng: jax.Array) -> dict:
        return make_eval_step(self.loss_fn)(state, batch, rng)

    def eps_fn(self, params: Any, labels: jax.Array | None = None,
               guidance: float = 0.0) -> Callable[[jax.Array, jax.Array], tuple[jax.Array, Any]]:
        """The latent ε-model ``(z_t, t) -> (ε̂, v)`` with classifier-free guidance (ddpm.py's)."""
        return self.diffusion.eps_fn(params, labels, guidance)

    def sample_latents(self, state: TrainState, rng: jax.Array, num: int, **kw: Any) -> jax.Array:
        """(num, *latent_shape) scaled latents from the DDPM's sampler (keywords as :meth:`sample`)."""
        return self.diffusion.sample(state, rng, num, **kw)

    def sample(self, state: TrainState, rng: jax.Array, num: int, labels: jax.Array | None = None,
               guidance: float | None = None, method: str | None = None,
               num_steps: int | None = None, **options: Any) -> jax.Array:
        """``num`` images: latents drawn by ``sampler.name`` (DDPM.sample: labels, guidance,
        sampler and options as there; a conditional model without ``labels`` cycles through
        the classes), decoded by the frozen autoencoder."""
        z = self.sample_latents(state, rng, num, labels=labels, guidance=guidance, method=method,
                                num_steps=num_steps, **options)
        return self.decode(state, z)


@register("ldm")
def make_ldm(config: ml_collections.ConfigDict, info: DataInfo) -> LatentDiffusion:
    """Factory registered as "ldm"."""
    return LatentDiffusion(config, info)
