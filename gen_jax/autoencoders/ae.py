"""Deterministic autoencoders: plain, denoising and sparse.

- "ae": an encoder/decoder pair trained to reconstruct its input (MLP or conv).
- "dae": the denoising autoencoder (Vincent et al., 2008, "Extracting and
  Composing Robust Features with Denoising Autoencoders"; Vincent et al., 2010):
  it reconstructs the clean input from a corrupted copy. Corruption is a config
  choice (``model.noise``): additive Gaussian noise, masking noise (each pixel
  set to the data's low value with probability ``model.mask_prob``), or one
  random square block per image masked out (as in context encoders, Pathak et
  al., 2016), which trains for inpainting.
- "sae": the sparse autoencoder, with an L1 penalty on the codes or the KL
  sparsity penalty of Ng's lecture notes ("Sparse autoencoder", CS294A, 2011).

An AE has no prior over its codes, so ``sample`` fits one: a Gaussian
N(m, S) to the codes of the training data. m and S are running (EMA) moments
kept in ``TrainState.model_state``, updated inside the loss as batch
statistics are (Flax's BatchNorm): each train step encodes its clean batch with
the parameters it differentiates (stop-gradient, before their update) and
moves the running mean and second moment towards the batch's; the state keeps
its own update count for the decay's warm-up. ``sample`` draws z ~ N(m, S) and
decodes it. The anomaly score is the per-example squared reconstruction error
of the clean input.
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from gen_jax.data import DataInfo
from gen_jax.errors import ConfigError
from gen_jax.nn import MLP, ConvDecoder, ConvEncoder
from gen_jax.registry import register
from gen_jax.state import TrainState, make_optimizer
from gen_jax.steps import make_eval_step, make_train_step
from gen_jax.value_range import ValueRange

NOISE_KINDS = ("none", "gaussian", "masking", "block")
SPARSITY_KINDS = ("none", "l1", "kl")
_CODE_ACTIVATIONS = {"none": lambda z: z, "sigmoid": jax.nn.sigmoid, "relu": jax.nn.relu,
                     "tanh": jnp.tanh}
# Added to the code covariance's diagonal (relative to its mean variance) so the
# Cholesky factor exists even when codes collapse onto a subspace.
_COV_JITTER = 1e-4


class AENet(nn.Module):
    """Deterministic encoder z = f(x) and decoder x_hat = g(z)."""

    data_shape: tuple[int, ...]
    latent_dim: int
    arch: str
    channels: tuple[int, ...]
    hidden: tuple[int, ...]
    upsample: str
    activation: str
    code_activation: str

    def setup(self):
        if self.arch == "conv":
            self.enc = ConvEncoder(self.channels, self.hidden[0], self.latent_dim, self.activation)
            self.dec = ConvDecoder(tuple(self.data_shape[:2]), tuple(reversed(self.channels)),
                                   self.hidden[0], self.data_shape[-1], self.upsample, self.activation)
        else:
            self.enc = MLP((*self.hidden, self.latent_dim), self.activation)
            self.dec = MLP((*reversed(self.hidden), math.prod(self.data_shape)), self.activation)

    def encode(self, x: jax.Array) -> jax.Array:
        return _CODE_ACTIVATIONS[self.code_activation](self.enc(x))

    def decode(self, z: jax.Array) -> jax.Array:
        return self.dec(z).reshape(z.shape[0], *self.data_shape)

    def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        z = self.encode(x)
        return z, self.decode(z)


def corrupt(x: jax.Array, rng: jax.Array, kind: str, *, std: float = 0.0, prob: float = 0.0,
            block: int = 0, fill: float = 0.0) -> jax.Array:
    """The denoising autoencoder's corruption q(x_tilde | x).

    Args:
      x: (N, ...) clean inputs (NHWC images for ``kind='block'``).
      rng: key of this draw.
      kind: one of NOISE_KINDS: "gaussian" adds N(0, std^2) per component;
        "masking" sets each component to ``fill`` with probability ``prob``;
        "block" sets one uniformly placed ``block`` x ``block`` square per image
        (all channels) to ``fill``; "none" returns ``x``.
      std, prob, block: the noise level of the chosen kind.
      fill: the value of masked components (the data's low end: "black").

    Returns:
      The corrupted inputs, shaped like ``x``.
    """
    if kind == "none":
        return x
    if kind == "gaussian":
        return x + std * jax.random.normal(rng, x.shape, x.dtype)
    if kind == "masking":
        return jnp.where(jax.random.bernoulli(rng, prob, x.shape), fill, x)
    if kind == "block":
        n, h, w = x.shape[:3]
        r_row, r_col = jax.random.split(rng)
        top = jax.random.randint(r_row, (n, 1, 1), 0, h - block + 1)
        left = jax.random.randint(r_col, (n, 1, 1), 0, w - block + 1)
        rows, cols = jnp.arange(h)[None, :, None], jnp.arange(w)[None, None, :]
        inside = (rows >= top) & (rows < top + block) & (cols >= left) & (cols < left + block)
        return jnp.where(inside[..., None], fill, x)
    raise ConfigError(f"model.noise must be one of {NOISE_KINDS}, got {kind!r}")


def kl_sparsity(codes: jax.Array, target: float) -> jax.Array:
    """Ng's KL sparsity penalty: sum_j KL(Bernoulli(rho) || Bernoulli(rho_hat_j)).

    rho_hat_j is the mean activation of code unit j over the batch (codes in
    (0, 1), i.e. sigmoid units) and rho = ``target``:
    KL = rho log(rho / rho_hat) + (1 - rho) log((1 - rho) / (1 - rho_hat)).

    Args:
      codes: (N, L) sigmoid codes.
      target: the desired mean activation rho in (0, 1).

    Returns:
      The scalar penalty.
    """
    rho_hat = jnp.clip(codes.mean(0), 1e-6, 1.0 - 1e-6)
    rho = target
    return jnp.sum(rho * jnp.log(rho / rho_hat) + (1.0 - rho) * jnp.log((1.0 - rho) / (1.0 - rho_hat)))


def update_code_stats(stats: dict, codes: jax.Array, step: jax.Array, decay: float) -> dict:
    """Moves the running code mean and second moment towards this batch's.

    The decay warms up as min(decay, (1 + step) / (10 + step)), as the
    parameter EMA does, so the statistics of the initial network fade fast.

    Args:
      stats: {"mean": (L,), "second": (L, L)} running E[z] and E[z z^T].
      codes: (N, L) codes of one batch (gradients are not taken through them).
      step: how many updates the stats have had (the optimizer step of the batch).
      decay: the EMA decay in [0, 1).

    Returns:
      The updated stats.
    """
    codes = jax.lax.stop_gradient(codes)
    d = jnp.minimum(decay, (1.0 + step) / (10.0 + step))
    mean = codes.mean(0)
    second = codes.T @ codes / codes.shape[0]
    return {"mean": d * stats["mean"] + (1.0 - d) * mean,
            "second": d * stats["second"] + (1.0 - d) * second}


def sample_codes(stats: dict, rng: jax.Array, num: int) -> jax.Array:
    """z ~ N(m, S) with m, S the code mean and covariance kept by :func:`update_code_stats`.

    S = E[z z^T] - m m^T, symmetrised, plus a small jitter on the diagonal
    (``_COV_JITTER`` times its mean variance) before the Cholesky factorisation.

    Args:
      stats: {"mean", "second"} running moments.
      rng: key of this draw.
      num: number of codes.

    Returns:
      (num, L) codes.
    """
    mean = stats["mean"]
    cov = stats["second"] - jnp.outer(mean, mean)
    cov = 0.5 * (cov + cov.T)
    dim = mean.shape[0]
    jitter = _COV_JITTER * jnp.maximum(jnp.trace(cov) / dim, 1e-6)
    chol = jnp.linalg.cholesky(cov + jitter * jnp.eye(dim))
    return mean + jax.random.normal(rng, (num, dim)) @ chol.T


class Autoencoder:
    """The AE / DAE / SAE Method (see gen_jax.registry.Method); ``kind`` is the
    registered name, which decides which options must be set."""

    def __init__(self, config: ml_collections.ConfigDict, info: DataInfo, kind: str):
        self.config, self.kind = config, kind
        m = config.model
        self.info = info
        if m.arch not in ("conv", "mlp"):
            raise ConfigError(f"model.arch must be 'conv' or 'mlp', got {m.arch!r}")
        if m.arch == "conv" and self.info.kind != "image":
            raise ConfigError(f"model.arch='conv' needs image data; {self.info.name!r} is vector data")
        if m.code_activation not in _CODE_ACTIVATIONS:
            raise ConfigError(f"model.code_activation must be one of {tuple(_CODE_ACTIVATIONS)}, "
                              f"got {m.code_activation!r}")
        if m.noise not in NOISE_KINDS:
            raise ConfigError(f"model.noise must be one of {NOISE_KINDS}, got {m.noise!r}")
        if m.sparsity not in SPARSITY_KINDS:
            raise ConfigError(f"model.sparsity must be one of {SPARSITY_KINDS}, got {m.sparsity!r}")
        if kind == "dae" and m.noise == "none":
            raise ConfigError("method 'dae' needs a corruption: set model.noise to 'gaussian', "
                              "'masking' or 'block'")
        if kind == "sae" and m.sparsity == "none":
            raise ConfigError("method 'sae' needs a sparsity penalty: set model.sparsity to 'l1' or 'kl'")
        if kind == "ae" and (m.noise != "none" or m.sparsity != "none"):
            raise ConfigError("method 'ae' is the plain autoencoder: use method 'dae' for "
                              "model.noise and 'sae' for model.sparsity")
        if m.noise == "gaussian" and not m.noise_std > 0:
            raise ConfigError(f"model.noise_std must be positive, got {m.noise_std}")
        if m.noise == "masking" and not 0.0 < m.mask_prob < 1.0:
            raise ConfigError(f"model.mask_prob must be in (0, 1), got {m.mask_prob}")
        if m.noise == "block":
            if self.info.kind != "image":
                raise ConfigError("model.noise='block' needs image data")
            if not 0 < m.block_size <= min(self.info.shape[:2]):
                raise ConfigError(f"model.block_size must be in 1..{min(self.info.shape[:2])}, "
                                  f"got {m.block_size}")
        if m.sparsity == "kl":
            if m.code_activation != "sigmoid":
                raise ConfigError("model.sparsity='kl' compares mean code activations with a "
                                  "Bernoulli target: set model.code_activation='sigmoid'")
            if not 0.0 < m.sparsity_target < 1.0:
                raise ConfigError(f"model.sparsity_target must be in (0, 1), got {m.sparsity_target}")
        if m.sparsity != "none" and m.sparsity_weight < 0:
            raise ConfigError(f"model.sparsity_weight must be >= 0, got {m.sparsity_weight}")
        if not 0.0 <= m.code_stats_decay < 1.0:
            raise ConfigError(f"model.code_stats_decay must be in [0, 1), got {m.code_stats_decay}")
        self.value_range = ValueRange.from_config(config.data, self.info)
        self.net = AENet(tuple(self.info.shape), m.latent_dim, m.arch, tuple(m.channels),
                         tuple(m.hidden_sizes), m.upsample, m.activation, m.code_activation)
        self.tx = make_optimizer(config.optim, config.train.num_steps)

    # -- losses ----------------------------------------------------------------

    def _corrupt(self, x: jax.Array, rng: jax.Array) -> jax.Array:
        m = self.config.model
        return corrupt(x, rng, m.noise, std=m.noise_std, prob=m.mask_prob, block=m.block_size,
                       fill=self.value_range.lo)

    def get_loss_fn(self):
        """Returns ``loss_fn(params, x, rng) -> (loss, terms)``.

        loss = mean over pixels and examples of (g(f(x_tilde)) - x)^2, with x_tilde
        the corrupted input (x itself without noise), plus the sparsity penalty:
        ``sparsity_weight`` times the mean over examples of sum_j |z_j| ("l1") or
        :func:`kl_sparsity` of the batch's codes ("kl").
        """
        m = self.config.model

        def loss_fn(params: Any, x: jax.Array, rng: jax.Array) -> tuple[jax.Array, dict]:
            z, x_hat = self.net.apply({"params": params}, self._corrupt(x, rng))
            mse = jnp.mean((x_hat - x) ** 2)
            terms = {"mse": mse, "code_l1": jnp.mean(jnp.sum(jnp.abs(z), axis=-1))}
            if m.sparsity == "l1":
                penalty = terms["code_l1"]
            elif m.sparsity == "kl":
                penalty = kl_sparsity(z, m.sparsity_target)
                terms["kl_sparsity"] = penalty
            else:
                penalty = 0.0
            terms["mean_activation"] = jnp.mean(z)
            return mse + m.sparsity_weight * penalty, terms

        return loss_fn

    def loss_fn(self, params: Any, model_state: dict, batch: dict, rng: jax.Array, train: bool):
        """:meth:`get_loss_fn`'s loss in the gen_jax.steps signature.

        Training also moves the code statistics (``model_state``) towards the
        moments of the clean batch's codes under ``params`` (stop-gradient), the
        parameters being differentiated; evaluation leaves them and adds
        ``mse_clean``, the per-pixel reconstruction error of the clean input.
        """
        x = batch["x"]
        loss, terms = self.get_loss_fn()(params, x, rng)
        if train:
            codes = self.net.apply({"params": jax.lax.stop_gradient(params)}, x, method=AENet.encode)
            count = model_state["count"]
            model_state = {**update_code_stats(model_state, codes, count,
                                               self.config.model.code_stats_decay),
                           "count": count + 1}
        else:
            terms["mse_clean"] = jnp.mean(self._squared_error(params, x)) / math.prod(self.info.shape)
        return loss, (terms, model_state)

    # -- the Method contract ---------------------------------------------------

    def init(self, rng: jax.Array, example_batch: dict) -> TrainState:
        x = jnp.asarray(example_batch["x"])
        self.info.check_batch(x)
        params = self.net.init(rng, x)["params"]
        dim = self.config.model.latent_dim
        # N(0, I) until trained; "count" drives update_code_stats' warm-up.
        stats = {"mean": jnp.zeros((dim,)), "second": jnp.eye(dim), "count": jnp.zeros((), jnp.int32)}
        return TrainState.create(params, self.tx, self.config.train.ema_decay, model_state=stats)

    def train_step(self, state: TrainState, batch: dict, rng: jax.Array):
        return make_train_step(self.loss_fn)(state, batch, rng)

    def eval_step(self, state: TrainState, batch: dict, rng: jax.Array) -> dict:
        return make_eval_step(self.loss_fn)(state, batch, rng)

    def sample(self, state: TrainState, rng: jax.Array, num: int) -> jax.Array:
        """Decodes z ~ N(m, S), the Gaussian fitted to the training codes (module docstring)."""
        return self.decode(state, sample_codes(state.model_state, rng, num))

    # -- optional extras -------------------------------------------------------

    def encode(self, state: TrainState, x: jax.Array, rng: jax.Array | None = None) -> jax.Array:
        """The code z = f(x), (N, latent_dim); deterministic, ``rng`` is unused."""
        return self.net.apply({"params": state.eval_params}, x, method=AENet.encode)

    def decode(self, state: TrainState, z: jax.Array) -> jax.Array:
        """g(z) in the data's value range (clipped for images)."""
        x = self.net.apply({"params": state.eval_params}, z, method=AENet.decode)
        return self.value_range.clip(x) if self.info.kind == "image" else x

    def reconstruct(self, state: TrainState, x: jax.Array, rng: jax.Array | None = None) -> jax.Array:
        """g(f(x)) of the input as given (a DAE denoises/inpaints what it is given); ``rng`` is unused."""
        return self.decode(state, self.encode(state, x))

    def anomaly_score(self, state: TrainState, x: jax.Array, rng: jax.Array | None = None) -> jax.Array:
        """Squared reconstruction error per example, sum_i (g(f(x))_i - x_i)^2; higher = more anomalous.

        The decoder output is not clipped here, so the score is the quantity the
        training loss averages. Deterministic: ``rng`` is unused.
        """
        return self._squared_error(state.eval_params, x)

    def anomaly_map(self, state: TrainState, x: jax.Array, rng: jax.Array | None = None) -> jax.Array:
        """Per-pixel squared reconstruction error summed over channels, (N, H, W) for NHWC
        images: the terms :meth:`anomaly_score` adds up. Deterministic: ``rng`` is unused."""
        x_hat = self.net.apply({"params": state.eval_params}, x)[1]
        return jnp.sum((x_hat - x) ** 2, axis=-1)

    def _squared_error(self, params: Any, x: jax.Array) -> jax.Array:
        x_hat = self.net.apply({"params": params}, x)[1]
        return jnp.sum(((x_hat - x) ** 2).reshape(x.shape[0], -1), axis=-1)


@register("ae")
def make_ae(config: ml_collections.ConfigDict, info: DataInfo) -> Autoencoder:
    """Factory registered as "ae" (model.noise and model.sparsity must be 'none')."""
    return Autoencoder(config, info, "ae")


@register("dae")
def make_dae(config: ml_collections.ConfigDict, info: DataInfo) -> Autoencoder:
    """Factory registered as "dae" (model.noise must be set)."""
    return Autoencoder(config, info, "dae")


@register("sae")
def make_sae(config: ml_collections.ConfigDict, info: DataInfo) -> Autoencoder:
    """Factory registered as "sae" (model.sparsity must be set)."""
    return Autoencoder(config, info, "sae")
