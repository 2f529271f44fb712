"""f-AnoGAN (Schlegl et al., 2019, "f-AnoGAN: Fast unsupervised anomaly detection with
generative adversarial networks"), registered as "fanogan".

Two training phases on good images only, one compiled program each
(registry.HasStages; the boundary is ``fanogan.gan_steps``):

- stage 0, outer steps 0 .. gan_steps - 1: a GAN, by default WGAN-GP (Gulrajani et
  al., 2017), trained exactly as the GAN family trains it (gen_jax/gans/gan.py's
  ``GAN`` Method: DCGAN generator and critic, ``gan.d_steps`` critic updates with the
  gradient penalty of gen_jax/gans/losses.py, then one generator update). The encoder
  does not change.
- stage 1, the remaining steps: an encoder E (image -> latent) trained with the
  generator G and the critic D frozen, in the paper's izi_f architecture:
  L = 1/n ||x - G(E(x))||^2 + kappa / n_d ||f(x) - f(G(E(x)))||^2, n pixels, f the
  critic's last hidden layer (n_d features). G and D do not change.

Image score (:func:`izif_score`): A(x) = A_R(x) + kappa A_D(x), the same two residuals
per example; anomaly map: the per-pixel squared residual (x - G(E(x)))^2 summed over
channels. G is the generator's EMA parameters where kept (what ``sample`` draws with),
in training the encoder and in scoring.

Differences from the paper: the latent prior is the GAN family's N(0, I) and the
encoder's output is linear (no tanh); networks are the DCGAN ones of the GAN family
(the paper: residual networks at 64 px), and their normalization may not be batch
normalization (scores would depend on the other images of the batch).
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
from flax import struct

from gen_jax.anomaly.ganomaly import DCGANEncoder, check_image_nets, discriminator_features, residual_map
from gen_jax.data import DataInfo
from gen_jax.errors import ConfigError
from gen_jax.gans.gan import GAN, GANState, apply_g
from gen_jax.registry import register
from gen_jax.state import TrainState, make_optimizer


def izif_score(residual: jax.Array, feature_residual: jax.Array, kappa: float) -> jax.Array:
    """f-AnoGAN's score (and, averaged, the izi_f loss): A_R + kappa A_D per example."""
    return residual + kappa * feature_residual


class FAnoGANState(struct.PyTreeNode):
    """Outer step, the GAN's state (generator and critic) and the encoder's TrainState."""

    step: jax.Array
    gan: GANState
    e: TrainState


class FAnoGAN:
    """The f-AnoGAN Method (gen_jax.registry.Method, HasStages, HasAnomalyScore,
    HasAnomalyMap, HasReconstruct; the module docstring)."""

    def __init__(self, config: ml_collections.ConfigDict, info: DataInfo):
        self.config, self.info = config, info
        m, f = config.model, config.fanogan
        check_image_nets(info, "fanogan", m.enc_channels, m.g_channels,
                         {"model.g_norm": m.g_norm, "model.d_norm": m.d_norm})
        if m.arch != "dcgan" or m.conditional or m.pack != 1 or m.spectral_norm:
            raise ConfigError("fanogan takes an unconditional DCGAN without packing or spectral "
                              f"normalization (model.arch={m.arch!r}, model.conditional={m.conditional}, "
                              f"model.pack={m.pack}, model.spectral_norm={m.spectral_norm})")
        self.gan_steps = int(f.gan_steps)
        if not 1 <= self.gan_steps < config.train.num_steps:
            raise ConfigError(f"fanogan.gan_steps={f.gan_steps} must be in 1..train.num_steps - 1 = "
                              f"{config.train.num_steps - 1} (the encoder trains after it)")
        if f.kappa < 0:
            raise ConfigError(f"fanogan.kappa={f.kappa} must be >= 0")
        self.kappa = float(f.kappa)
        gan_config = config.copy_and_resolve_references()
        gan_config.train.num_steps = self.gan_steps  # the GAN's optimizer schedules span stage 0
        self.gan = GAN(gan_config, info)
        self.encoder = DCGANEncoder(tuple(m.enc_channels), m.latent_dim, m.g_norm)
        e_optim = config.e_optim if "e_optim" in config else config.optim
        self.e_tx = make_optimizer(e_optim, config.train.num_steps - self.gan_steps)

    # -- pieces --------------------------------------------------------------

    def residuals(self, e_params: Any, gan: GANState, x: jax.Array):
        """(A_R, A_D, G(E(x))): the mean squared image residual and the mean squared
        critic-feature residual per example (N,), and the reconstruction."""
        z = self.encoder.apply({"params": e_params}, x)
        x_hat = apply_g(self.gan.g_net, gan.g, gan.g.eval_params, z)
        d_vars = {"params": gan.d.params, **(gan.d.model_state or {})}
        f_x = discriminator_features(self.gan.d_net, d_vars, x)[1]
        f_hat = discriminator_features(self.gan.d_net, d_vars, x_hat)[1]
        residual = jnp.mean((x - x_hat).reshape(x.shape[0], -1) ** 2, axis=-1)
        feature_residual = jnp.mean((f_x - f_hat) ** 2, axis=-1)
        return residual, feature_residual, x_hat

    def izif_loss(self, e_params: Any, gan: GANState, x: jax.Array) -> tuple[jax.Array, dict]:
        """The encoder's loss, the batch mean of :func:`izif_score`: (loss, terms)."""
        residual, feature_residual, _ = self.residuals(e_params, gan, x)
        loss = jnp.mean(izif_score(residual, feature_residual, self.kappa))
        return loss, {"izif": loss, "residual": residual.mean(), "feature_residual": feature_residual.mean()}

    def _gan_step(self, state: FAnoGANState, batch: dict, rng: jax.Array):
        gan, metrics = self.gan.train_step(state.gan, batch, rng)
        return state.replace(step=state.step + 1, gan=gan), metrics | {"stage": jnp.float32(0)}

    def _encoder_step(self, state: FAnoGANState, batch: dict, rng: jax.Array):
        del rng
        grads, terms = jax.grad(self.izif_loss, has_aux=True)(state.e.params, state.gan, batch["x"])
        e = state.e.apply_gradients(grads)
        return state.replace(step=state.step + 1, e=e), terms | {"loss": terms["izif"],
                                                                 "stage": jnp.float32(1)}

    # -- staged training (registry.HasStages) ----------------------------------

    def stage_of(self, step: int) -> int:
        """0 (the GAN) before ``fanogan.gan_steps`` outer steps, then 1 (the encoder)."""
        return 0 if int(step) < self.gan_steps else 1

    def stage_train_step(self, stage: int) -> Callable:
        """Stage 0: one GAN step (encoder unchanged); 1: one encoder step (G, D unchanged)."""
        if stage not in (0, 1):
            raise ValueError(f"fanogan has stages 0 and 1, not {stage}")
        return self._gan_step if stage == 0 else self._encoder_step

    # -- the Method contract -------------------------------------------------

    def init(self, rng: jax.Array, example_batch: dict) -> FAnoGANState:
        x = jnp.asarray(example_batch["x"])
        self.info.check_batch(x)
        r_gan, r_e = jax.random.split(rng)
        e_params = self.encoder.init(r_e, x[:1])["params"]
        return FAnoGANState(step=jnp.zeros((), jnp.int32), gan=self.gan.init(r_gan, example_batch),
                            e=TrainState.create(e_params, self.e_tx))

    def train_step(self, state: FAnoGANState, batch: dict, rng: jax.Array):
        """The step of the stage of ``state.step``, both stages in one program (a switch);
        the runtime compiles :meth:`stage_train_step` per stage instead. Metrics are the
        union of the two stages' (zero where the other stage's)."""
        steps = (self._gan_step, self._encoder_step)
        shapes = [jax.eval_shape(f, state, batch, rng)[1] for f in steps]
        keys = sorted(set(shapes[0]) | set(shapes[1]))

        def padded(f):
            def run(args):
                new, metrics = f(*args)
                return new, {k: jnp.asarray(metrics.get(k, 0.0), jnp.float32) for k in keys}
            return run

        stage = (state.step >= self.gan_steps).astype(jnp.int32)
        return jax.lax.switch(stage, [padded(f) for f in steps], (state, batch, rng))

    def eval_step(self, state: FAnoGANState, batch: dict, rng: jax.Array) -> dict:
        """The GAN's validation metrics and the izi_f terms on a validation batch;
        ``loss`` is the GAN's in stage 0 and the izi_f loss in stage 1."""
        gan_metrics = self.gan.eval_step(state.gan, batch, rng)
        _, terms = self.izif_loss(state.e.params, state.gan, batch["x"])
        loss = jnp.where(state.step < self.gan_steps, gan_metrics["loss"], terms["izif"])
        return gan_metrics | terms | {"loss": loss}

    def sample(self, state: FAnoGANState, rng: jax.Array, num: int, **kw: Any) -> jax.Array:
        """``num`` samples of the (EMA) generator, G(z) with z ~ N(0, I)."""
        return self.gan.sample(state.gan, rng, num)

    # -- capabilities ----------------------------------------------------------

    def reconstruct(self, state: FAnoGANState, x: jax.Array, rng: jax.Array | None = None) -> jax.Array:
        """G(E(x)); ``rng`` unused."""
        return self.residuals(state.e.params, state.gan, x)[2]

    def anomaly_score(self, state: FAnoGANState, x: jax.Array, rng: jax.Array | None = None) -> jax.Array:
        """A_R(x) + kappa A_D(x) per example, (N,); ``rng`` unused."""
        residual, feature_residual, _ = self.residuals(state.e.params, state.gan, x)
        return izif_score(residual, feature_residual, self.kappa)

    def anomaly_map(self, state: FAnoGANState, x: jax.Array, rng: jax.Array | None = None) -> jax.Array:
        """(x - G(E(x)))^2 per pixel, summed over channels, (N, H, W); ``rng`` unused."""
        return residual_map(x, self.reconstruct(state, x), 2)


@register("fanogan")
def make_fanogan(config: ml_collections.ConfigDict, info: DataInfo) -> FAnoGAN:
    """Factory registered as "fanogan"."""
    return FAnoGAN(config, info)
