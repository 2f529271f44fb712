"""GANomaly (Akçay et al., 2018, "GANomaly: Semi-supervised anomaly detection via
adversarial training"), registered as "ganomaly", and the pieces f-AnoGAN shares with
it (gen_jax/anomaly/fanogan.py): a DCGAN-style encoder, the discriminator's features
and the per-pixel residual map.

Trained on good images only. The generator is an encoder-decoder-encoder: G_E maps
x to a latent z, G_D decodes it to x_hat = G(x) = G_D(G_E(x)), and a second encoder
E maps x_hat to z_hat. A discriminator D (DCGAN, gen_jax/gans/networks.py) tells
x from x_hat. Losses, as the official code computes them:

- D: the cross-entropy GAN loss, real x -> 1, x_hat -> 0
  (:func:`gen_jax.gans.losses.bce_d_loss`).
- G (all three networks of the generator; D frozen):
  w_adv L_adv + w_con L_con + w_enc L_enc with
  L_adv = mean (f(x) - f(x_hat))^2 (feature matching on D's last hidden layer f),
  L_con = mean |x - x_hat| (contextual), L_enc = mean (G_E(x) - E(x_hat))^2,
  and the paper's weights w_adv = 1, w_con = 50, w_enc = 1.

One ``train_step`` is one G update then one D update on the same x_hat (computed
before the G update, as in the official code). Image score (:func:`latent_score`):
||G_E(x) - E(G(x))||^2, the squared L2 distance of the two codes (the official code
takes its mean over the latent dims, the same ranking; the paper's text writes an L1
norm); anomaly map: the per-pixel contextual error |x - G(x)| summed over channels.

Differences from the official code: D is never re-initialized when its loss
collapses; normalization is configurable and may not be batch normalization in the
networks that score (their output would depend on the other images of the batch).

GANomaly is a detector, not a sampler: ``sample`` returns reconstructions G(x) of the
good crops kept from ``init`` (what the contextual loss trains), for the sample grids.
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
from flax import struct

from gen_jax.data import DataInfo
from gen_jax.errors import ConfigError
from gen_jax.gans import networks
from gen_jax.gans.gan import d_optimizer
from gen_jax.gans.losses import bce_d_loss
from gen_jax.nn import Conv
from gen_jax.registry import register
from gen_jax.state import TrainState, make_optimizer

# Networks whose outputs enter a score must treat examples independently.
SCORING_NORMS = tuple(n for n in networks.NORMS if n != "batch")
# Reference crops kept in the state for ``sample``.
NUM_REFERENCE = 16


# ----------------------------------------------------------------------------- shared pieces

class DCGANEncoder(nn.Module):
    """The DCGAN discriminator's body (stride-2 4x4 convs, LeakyReLU(0.2), normalization
    after all but the first; gen_jax.gans.networks.DCGANDiscriminator) with a linear
    map to ``latent_dim`` in place of the one score: an image -> a code (N, latent_dim)."""

    channels: Sequence[int]
    latent_dim: int
    norm: str = "layer"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        h = x
        for i, c in enumerate(self.channels):
            h = Conv(c, (4, 4), strides=(2, 2))(h)
            if i > 0:
                h = networks._norm(self.norm, h)
            h = nn.leaky_relu(h, 0.2)
        return nn.Dense(self.latent_dim)(h.reshape(h.shape[0], -1))


def discriminator_features(net: networks.DCGANDiscriminator, variables: dict,
                           x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(D's raw output (N,), its last hidden layer f(x) (N, F)) of a DCGAN discriminator.

    f(x) is the input of D's final linear layer (the flattened last conv block), read
    by intercepting that layer's call, so the network itself is the GAN family's own.
    """
    captured = []

    def grab(next_fun, args, kwargs, context):
        if isinstance(context.module, nn.Dense) and context.method_name == "__call__":
            captured.append(args[0])
        return next_fun(*args, **kwargs)

    with nn.intercept_methods(grab):
        out, _ = net.apply(variables, x, mutable=["batch_stats"])
    if len(captured) != 1:
        raise ValueError(f"expected one final linear layer in the discriminator, found {len(captured)}")
    # read inside the network, so in its compute dtype: float32 for the losses, as its output
    # (runtime.precision, gen_jax/nn/precision.py)
    return out, captured[0].astype(jnp.float32)


def residual_map(x: jax.Array, x_hat: jax.Array, power: int) -> jax.Array:
    """Per-pixel residual sum_c |x - x_hat|^power of NHWC images: (N, H, W)."""
    return jnp.sum(jnp.abs(x - x_hat) ** power, axis=-1)


def latent_score(z: jax.Array, z_hat: jax.Array) -> jax.Array:
    """GANomaly's image score ||G_E(x) - E(G(x))||^2 per example (N,) from the two codes."""
    return jnp.sum((z - z_hat) ** 2, axis=-1)


def check_image_nets(info: DataInfo, name: str, enc_channels: Sequence[int],
                     g_channels: Sequence[int], norms: dict[str, str]) -> None:
    """ConfigErrors for image shapes the encoder / decoder cannot take, and for norms
    (``{config key: value}``) that are batch normalization in a scoring network."""
    if info.kind != "image":
        raise ConfigError(f"{name} needs image data; {info.name!r} is {info.kind} data")
    h, w, _ = info.shape
    for key, chans in (("model.enc_channels", enc_channels), ("model.g_channels", g_channels)):
        f = 2 ** len(chans)
        if not chans or h % f or w % f:
            raise ConfigError(f"{name}: images {h}x{w} must be divisible by 2^len({key}) = {f} "
                              f"({key}={tuple(chans)})")
    for key, value in norms.items():
        if value not in SCORING_NORMS:
            raise ConfigError(f"{name}: {key}={value!r}; networks that score take one of "
                              f"{', '.join(SCORING_NORMS)} (batch statistics would couple examples)")


# ----------------------------------------------------------------------------- the Method

class GANomalyState(struct.PyTreeNode):
    """Outer step, the generator's TrainState (params {"g_e", "g_d", "e"}), the
    discriminator's, and good crops kept for ``sample``."""

    step: jax.Array
    g: TrainState
    d: TrainState
    reference: jax.Array


class GANomaly:
    """The GANomaly Method (gen_jax.registry.Method, HasAnomalyScore, HasAnomalyMap,
    HasReconstruct; the module docstring)."""

    def __init__(self, config: ml_collections.ConfigDict, info: DataInfo):
        self.config, self.info = config, info
        m, w = config.model, config.ganomaly
        check_image_nets(info, "ganomaly", m.enc_channels, m.g_channels, {"model.g_norm": m.g_norm})
        if m.d_norm not in networks.NORMS:
            raise ConfigError(f"ganomaly: model.d_norm={m.d_norm!r}; known: {', '.join(networks.NORMS)}")
        for key in ("w_adv", "w_con", "w_enc"):
            if w[key] < 0:
                raise ConfigError(f"ganomaly.{key}={w[key]} must be >= 0")
        vr = tuple(config.data.value_range)
        self.g_e = DCGANEncoder(tuple(m.enc_channels), m.latent_dim, m.g_norm)
        self.g_d = networks.DCGANGenerator(tuple(info.shape), tuple(m.g_channels), m.upsample, m.g_norm,
                                           0, vr)
        self.e = DCGANEncoder(tuple(m.enc_channels), m.latent_dim, m.g_norm)
        self.d_net = networks.DCGANDiscriminator(tuple(m.d_channels), m.d_norm)
        self.g_tx = make_optimizer(config.optim, config.train.num_steps)
        self.d_tx = d_optimizer(config, config.train.num_steps)

    # -- pieces --------------------------------------------------------------

    def forward(self, g_params: Any, x: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        """(z = G_E(x), x_hat = G_D(z), z_hat = E(x_hat))."""
        z = self.g_e.apply({"params": g_params["g_e"]}, x)
        x_hat, _ = self.g_d.apply({"params": g_params["g_d"]}, z, mutable=["batch_stats"])
        z_hat = self.e.apply({"params": g_params["e"]}, x_hat)
        return z, x_hat, z_hat

    def d_apply(self, d_params: Any, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        """(D's logits, D's features f) of ``x``."""
        return discriminator_features(self.d_net, {"params": d_params}, x)

    def g_loss(self, g_params: Any, d_params: Any, x: jax.Array) -> tuple[jax.Array, tuple[dict, jax.Array]]:
        """The generator's weighted loss (module doc) with D frozen: (loss, (terms, x_hat))."""
        w = self.config.ganomaly
        z, x_hat, z_hat = self.forward(g_params, x)
        f_real = self.d_apply(d_params, x)[1]
        f_fake = self.d_apply(d_params, x_hat)[1]
        adv = jnp.mean((f_real - f_fake) ** 2)
        con = jnp.mean(jnp.abs(x - x_hat))
        enc = jnp.mean((z - z_hat) ** 2)
        loss = w.w_adv * adv + w.w_con * con + w.w_enc * enc
        return loss, ({"g_adv": adv, "g_con": con, "g_enc": enc, "g_loss": loss}, x_hat)

    def d_loss(self, d_params: Any, x: jax.Array, x_hat: jax.Array) -> tuple[jax.Array, dict]:
        """Cross-entropy D loss, real ``x`` against generated ``x_hat``: (loss, terms)."""
        real, _ = self.d_apply(d_params, x)
        fake, _ = self.d_apply(d_params, x_hat)
        loss = bce_d_loss(real, fake)
        return loss, {"d_loss": loss, "d_real": real.mean(), "d_fake": fake.mean()}

    # -- the Method contract -------------------------------------------------

    def init(self, rng: jax.Array, example_batch: dict) -> GANomalyState:
        x = jnp.asarray(example_batch["x"])
        self.info.check_batch(x)
        r_ge, r_gd, r_e, r_d = jax.random.split(rng, 4)
        g_params = {"g_e": self.g_e.init(r_ge, x[:1])["params"],
                    "g_d": self.g_d.init(r_gd, jnp.zeros((1, self.config.model.latent_dim)))["params"],
                    "e": self.e.init(r_e, x[:1])["params"]}
        d_params = self.d_net.init(r_d, x[:1])["params"]
        return GANomalyState(step=jnp.zeros((), jnp.int32),
                             g=TrainState.create(g_params, self.g_tx, self.config.train.ema_decay),
                             d=TrainState.create(d_params, self.d_tx),
                             reference=x[:NUM_REFERENCE])

    def train_step(self, state: GANomalyState, batch: dict, rng: jax.Array):
        """One G update (D frozen), then one D update on the x_hat of that G pass.
        Deterministic: ``rng`` is unused."""
        del rng
        x = batch["x"]
        grads, (g_terms, x_hat) = jax.grad(self.g_loss, has_aux=True)(state.g.params, state.d.params, x)
        g = state.g.apply_gradients(grads)
        x_hat = jax.lax.stop_gradient(x_hat)
        d_grads, d_terms = jax.grad(self.d_loss, has_aux=True)(state.d.params, x, x_hat)
        d = state.d.apply_gradients(d_grads)
        metrics = g_terms | d_terms
        metrics["loss"] = metrics["g_loss"] + metrics["d_loss"]
        return state.replace(step=state.step + 1, g=g, d=d), metrics

    def eval_step(self, state: GANomalyState, batch: dict, rng: jax.Array) -> dict:
        """The loss terms on a validation batch (the generator's EMA parameters where
        kept) and the mean image score; ``loss`` = the generator's loss."""
        del rng
        x = batch["x"]
        g_loss, (terms, x_hat) = self.g_loss(state.g.eval_params, state.d.params, x)
        terms |= self.d_loss(state.d.params, x, x_hat)[1]
        return {**terms, "score": jnp.mean(self.anomaly_score(state, x)), "loss": g_loss}

    def sample(self, state: GANomalyState, rng: jax.Array, num: int, **kw: Any) -> jax.Array:
        """Reconstructions G(x) of the kept good crops (module doc), (num, H, W, C)."""
        del rng
        ref = state.reference
        return self.reconstruct(state, ref[jnp.arange(num) % ref.shape[0]])

    # -- capabilities ----------------------------------------------------------

    def reconstruct(self, state: GANomalyState, x: jax.Array, rng: jax.Array | None = None) -> jax.Array:
        """x_hat = G_D(G_E(x)) (in the data's range by the generator's tanh); ``rng`` unused."""
        return self.forward(state.g.eval_params, x)[1]

    def anomaly_score(self, state: GANomalyState, x: jax.Array, rng: jax.Array | None = None) -> jax.Array:
        """||G_E(x) - E(G(x))||^2 per example, (N,); ``rng`` unused."""
        z, _, z_hat = self.forward(state.g.eval_params, x)
        return latent_score(z, z_hat)

    def anomaly_map(self, state: GANomalyState, x: jax.Array, rng: jax.Array | None = None) -> jax.Array:
        """The contextual error |x - G(x)| per pixel, summed over channels, (N, H, W)."""
        return residual_map(x, self.forward(state.g.eval_params, x)[1], 1)


@register("ganomaly")
def make_ganomaly(config: ml_collections.ConfigDict, info: DataInfo) -> GANomaly:
    """Factory registered as "ganomaly"."""
    return GANomaly(config, info)

