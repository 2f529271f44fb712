"""Variational autoencoder (Kingma & Welling, 2014) with the IWAE bound
(Burda et al., 2016) and beta-VAE weighting (Higgins et al., 2017).

Decoders: "gaussian" (for dequantized images and continuous vectors; the ELBO is
then a bound on the discrete data's log-likelihood, see data/preprocess.py) and
"bernoulli" (for binarized images; an exact discrete likelihood). Encoder and
decoder are MLPs or conv stacks (``model.arch``).
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
from gen_jax.likelihood import (
    bernoulli_log_prob,
    bits_per_dim,
    diag_gaussian_log_prob,
    discrete_log_prob_offset,
    gaussian_kl,
    gaussian_log_prob,
    standard_normal_log_prob,
)
from gen_jax.nn import MLP, ConvDecoder, ConvEncoder
from gen_jax.registry import register
from gen_jax.state import TrainState, make_optimizer
from gen_jax.steps import make_eval_step, make_train_step
from gen_jax.value_range import ValueRange

# Bounds on the Gaussian decoder's log-std; they keep early training stable.
_MIN_LOG_STD, _MAX_LOG_STD = -7.0, 2.0


class VAENet(nn.Module):
    """Encoder q(z|x) = N(mu, diag(exp(logvar))) and decoder p(x|z)."""

    data_shape: tuple[int, ...]
    latent_dim: int
    arch: str
    channels: tuple[int, ...]
    hidden: tuple[int, ...]
    decoder: str
    decoder_std: str
    fixed_std: float
    upsample: str
    activation: str

    def setup(self):
        c_out = self.data_shape[-1]
        two_outputs = self.decoder == "gaussian" and self.decoder_std == "network"
        if self.arch == "conv":
            self.enc = ConvEncoder(self.channels, self.hidden[0], 2 * self.latent_dim,
                                   self.activation)
            n_out = 2 * c_out if two_outputs else c_out
            self.dec = ConvDecoder(tuple(self.data_shape[:2]), tuple(reversed(self.channels)),
                                   self.hidden[0], n_out, self.upsample, self.activation)
        else:
            dim = math.prod(self.data_shape)
            n_out = 2 * dim if two_outputs else dim
            self.enc = MLP((*self.hidden, 2 * self.latent_dim), self.activation)
            self.dec = MLP((*reversed(self.hidden), n_out), self.activation)
        if self.decoder == "gaussian" and self.decoder_std == "learned":
            self.log_std = self.param("log_std", nn.initializers.zeros, self.data_shape)

    def encode(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        h = self.enc(x)
        return h[:, :self.latent_dim], h[:, self.latent_dim:]

    def decode(self, z: jax.Array) -> tuple[jax.Array, jax.Array | None]:
        """Returns (mean or logits, log-std or None), each shaped like the data."""
        h = self.dec(z)
        n = z.shape[0]
        if self.decoder == "bernoulli":
            return h.reshape(n, *self.data_shape), None
        if self.decoder_std == "network":
            mean, log_std = (a.reshape(n, *self.data_shape) for a in jnp.split(h, 2, axis=-1))
        else:
            mean = h.reshape(n, *self.data_shape)
            log_std = (jnp.broadcast_to(self.log_std, mean.shape) if self.decoder_std == "learned"
                       else jnp.full_like(mean, math.log(self.fixed_std)))
        return mean, jnp.clip(log_std, _MIN_LOG_STD, _MAX_LOG_STD)


def _posterior_draw(mean: jax.Array, logvar: jax.Array, rng: jax.Array) -> jax.Array:
    """z = mean + exp(logvar / 2) * eps, eps ~ N(0, I): the reparameterization trick."""
    return mean + jnp.exp(0.5 * logvar) * jax.random.normal(rng, mean.shape)


class VAE:
    """The VAE Method (see gen_jax.registry.Method)."""

    def __init__(self, config: ml_collections.ConfigDict, info: DataInfo):
        self.config = config
        m = config.model
        self.info = info
        if m.decoder not in ("gaussian", "bernoulli"):
            raise ConfigError(f"model.decoder must be 'gaussian' or 'bernoulli', got {m.decoder!r}")
        if m.decoder_std not in ("learned", "network", "fixed"):
            raise ConfigError("model.decoder_std must be 'learned', 'network' or 'fixed', "
                              f"got {m.decoder_std!r}")
        if m.arch not in ("conv", "mlp"):
            raise ConfigError(f"model.arch must be 'conv' or 'mlp', got {m.arch!r}")
        if m.arch == "conv" and self.info.kind != "image":
            raise ConfigError(f"model.arch='conv' needs image data; {self.info.name!r} is vector data")
        self.value_range = ValueRange.from_config(config.data, self.info)
        if m.decoder == "bernoulli":
            if self.info.kind != "image" or config.data.binarize == "none":
                raise ConfigError("model.decoder='bernoulli' models binary data: set "
                                  "data.binarize='threshold' or 'stochastic' (a Bernoulli on grey "
                                  "levels is not a likelihood)")
            self.offset = 0.0  # exact discrete likelihood of the binarized data
        else:
            self.offset = discrete_log_prob_offset(self.info, config.data)
            if self.offset is None:
                raise ConfigError("model.decoder='gaussian' on images needs "
                                  "data.dequantize='uniform' (and no binarization) so its "
                                  "likelihood bounds that of the discrete data")
        self.beta = float(m.beta)
        self.net = VAENet(tuple(self.info.shape), m.latent_dim, m.arch, tuple(m.channels),
                          tuple(m.hidden_sizes), m.decoder, m.decoder_std, float(m.fixed_std),
                          m.upsample, m.activation)
        self.tx = make_optimizer(config.optim, config.train.num_steps)

    # -- the Method contract -------------------------------------------------

    def init(self, rng: jax.Array, example_batch: dict) -> TrainState:
        x = jnp.asarray(example_batch["x"])
        self.info.check_batch(x)
        params = self.net.init(rng, x, method=lambda mod, x: mod.decode(mod.encode(x)[0]))["params"]
        return TrainState.create(params, self.tx, self.config.train.ema_decay)

    def _terms(self, params: Any, x: jax.Array, rng: jax.Array) -> dict:
        """Single-sample ELBO terms per example (nats)."""
        mean, logvar = self.net.apply({"params": params}, x, method=VAENet.encode)
        z = _posterior_draw(mean, logvar, rng)
        recon_ll = self._decoder_log_prob(params, x, z)
        return {"recon": -recon_ll, "kl": gaussian_kl(mean, logvar)}

    def _decoder_log_prob(self, params: Any, x: jax.Array, z: jax.Array) -> jax.Array:
        out, log_std = self.net.apply({"params": params}, z, method=VAENet.decode)
        if log_std is None:
            return bernoulli_log_prob(self.value_range.to_unit(x), out)
        return gaussian_log_prob(x, out, log_std)

    def _metrics(self, terms: dict) -> dict:
        recon, kl = terms["recon"].mean(), terms["kl"].mean()
        nelbo = recon + kl - self.offset  # -ELBO on the discrete data scale
        return {"loss": recon + self.beta * kl, "recon": recon, "kl": kl, "nelbo": nelbo,
                "nelbo_bpd": bits_per_dim(nelbo, self.info.dim)}

    def loss_fn(self, params: Any, model_state: Any, batch: dict, rng: jax.Array, train: bool):
        """The β-weighted negative ELBO (see gen_jax.steps for the signature)."""
        metrics = self._metrics(self._terms(params, batch["x"], rng))
        return metrics["loss"], (metrics, model_state)

    def train_step(self, state: TrainState, batch: dict, rng: jax.Array):
        return make_train_step(self.loss_fn)(state, batch, rng)

    def eval_step(self, state: TrainState, batch: dict, rng: jax.Array) -> dict:
        return make_eval_step(self.loss_fn)(state, batch, rng)

    def sample(self, state: TrainState, rng: jax.Array, num: int, mean: bool | None = None,
               temperature: float = 1.0) -> jax.Array:
        """Decodes z ~ N(0, temperature^2 I).

        ``mean=True`` returns the decoder mean E[x|z] (the convention for image
        grids), ``mean=False`` a draw x ~ p(x|z); None = the mean for images and
        a draw for vector data, where the mean alone would lie on a curve.
        """
        if mean is None:
            mean = self.info.kind == "image"
        rz, rx = jax.random.split(rng)
        z = temperature * jax.random.normal(rz, (num, self.config.model.latent_dim))
        return self._decode(state.eval_params, z, rx if not mean else None)

    # -- optional extras -----------------------------------------------------

    def log_prob(self, state: TrainState, x: jax.Array, rng: jax.Array, *,
                 num_samples: int = 1, chunk_size: int = 100) -> jax.Array:
        """The IWAE bound with K = ``num_samples`` importance samples, nats per example.

        K = 1 is the (single-sample) ELBO; the runtime passes ``eval.log_prob_samples``.

        log p(x) >= E[log (1/K) sum_k p(x|z_k) p(z_k) / q(z_k|x)] (Burda et al., 2016),
        on the discrete data scale (see data.discrete_log_prob_offset). The K samples
        are drawn ``chunk_size`` at a time inside one lax.scan, with a running
        log-sum-exp, so memory does not grow with K.
        """
        params = state.eval_params
        chunk = min(chunk_size, num_samples)
        if num_samples % chunk:
            raise ValueError(f"num_samples={num_samples} must be a multiple of chunk_size={chunk}")
        mean, logvar = self.net.apply({"params": params}, x, method=VAENet.encode)
        b = x.shape[0]

        def body(acc, key):
            eps = jax.random.normal(key, (chunk, *mean.shape))
            z = mean + jnp.exp(0.5 * logvar) * eps                     # (c, B, L)
            zf = z.reshape(chunk * b, -1)
            xf = jnp.broadcast_to(x, (chunk, *x.shape)).reshape(chunk * b, *x.shape[1:])
            log_px = self._decoder_log_prob(params, xf, zf).reshape(chunk, b)
            log_pz = standard_normal_log_prob(zf).reshape(chunk, b)
            log_w = log_px + log_pz - diag_gaussian_log_prob(z, mean, logvar)
            return jnp.logaddexp(acc, jax.nn.logsumexp(log_w, axis=0)), None

        keys = jax.random.split(rng, num_samples // chunk)
        lse, _ = jax.lax.scan(body, jnp.full((b,), -jnp.inf), keys)
        return lse - math.log(num_samples) + self.offset

    def anomaly_score(self, state: TrainState, x: jax.Array, rng: jax.Array, *,
                      kind: str = "nelbo", num_samples: int = 16) -> jax.Array:
        """Negative log-likelihood bound per example (nats, discrete data scale); higher = more anomalous.

        Args:
          state: the TrainState (EMA parameters where kept).
          x: (N, ...) examples.
          rng: key of the posterior samples.
          kind: "nelbo", the negative ELBO averaged over ``num_samples``
            single-sample estimates; or "iwae", minus :meth:`log_prob` with
            K = ``num_samples`` (a tighter bound).
          num_samples: posterior samples per example.

        Returns:
          (N,) scores.
        """
        if kind == "iwae":
            return -self.log_prob(state, x, rng, num_samples=num_samples,
                                  chunk_size=min(num_samples, 100))
        if kind != "nelbo":
            raise ValueError(f"kind must be 'nelbo' or 'iwae', got {kind!r}")
        terms = jax.vmap(lambda key: self._terms(state.eval_params, x, key))(
            jax.random.split(rng, num_samples))
        return jnp.mean(terms["recon"] + terms["kl"], axis=0) - self.offset

    def anomaly_map(self, state: TrainState, x: jax.Array, rng: jax.Array | None = None) -> jax.Array:
        """Per-pixel squared error, summed over channels, of the reconstruction at the
        posterior mean (the decoder mean), (N, H, W) for NHWC images. Deterministic:
        ``rng`` is unused."""
        return jnp.sum((self.reconstruct(state, x, None) - x) ** 2, axis=-1)

    def posterior(self, state: TrainState, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        """q(z|x) as (mean, logvar), each (N, latent_dim)."""
        return self.net.apply({"params": state.eval_params}, x, method=VAENet.encode)

    def encode(self, state: TrainState, x: jax.Array, rng: jax.Array | None = None) -> jax.Array:
        """A code of each example, (N, latent_dim): z ~ q(z|x) drawn with ``rng``,
        or the posterior mean when ``rng`` is None (the project's ``HasLatent``
        convention: a stochastic encoder draws given a key, else returns its mean)."""
        mean, logvar = self.posterior(state, x)
        return mean if rng is None else _posterior_draw(mean, logvar, rng)

    def decode(self, state: TrainState, z: jax.Array) -> jax.Array:
        """The decoder mean of p(x|z), in the data's value range."""
        return self._decode(state.eval_params, z, None)

    def reconstruct(self, state: TrainState, x: jax.Array, rng: jax.Array | None = None) -> jax.Array:
        """The decoder mean at :meth:`encode`'s code: a posterior draw given ``rng``,
        the posterior mean when ``rng`` is None."""
        return self.decode(state, self.encode(state, x, rng))

    def interpolate(self, state: TrainState, x_a: jax.Array, x_b: jax.Array, num: int = 8,
                    spherical: bool = False) -> jax.Array:
        """Decodes ``num`` points between the posterior means of x_a and x_b (each (1, ...) or (...)).

        Returns (num, ...) images; ``spherical`` uses slerp (White, 2016).
        """
        za = self.encode(state, jnp.reshape(x_a, (1, *self.info.shape)))[0]
        zb = self.encode(state, jnp.reshape(x_b, (1, *self.info.shape)))[0]
        t = jnp.linspace(0.0, 1.0, num)[:, None]
        if spherical:
            omega = jnp.arccos(jnp.clip(jnp.dot(za / jnp.linalg.norm(za), zb / jnp.linalg.norm(zb)),
                                        -1.0, 1.0))
            so = jnp.maximum(jnp.sin(omega), 1e-6)
            z = (jnp.sin((1 - t) * omega) / so) * za + (jnp.sin(t * omega) / so) * zb
        else:
            z = (1 - t) * za + t * zb
        return self.decode(state, z)

    def _decode(self, params: Any, z: jax.Array, rng: jax.Array | None) -> jax.Array:
        out, log_std = self.net.apply({"params": params}, z, method=VAENet.decode)
        if log_std is None:
            p = jax.nn.sigmoid(out)
            x01 = p if rng is None else jax.random.bernoulli(rng, p).astype(p.dtype)
            return self.value_range.from_unit(x01)
        x = out if rng is None else out + jnp.exp(log_std) * jax.random.normal(rng, out.shape)
        if self.info.kind == "image":
            x = self.value_range.clip(x)
        return x


@register("vae")
def make_vae(config: ml_collections.ConfigDict, info: DataInfo) -> VAE:
    """Factory registered as "vae"."""
    return VAE(config, info)

