"""pix2pix (Isola et al., 2017): conditional GAN for paired image-to-image translation.

U-Net generator G(input) with dropout as its noise, PatchGAN discriminator on
(input, output) pairs, and the objective

    G* = arg min_G max_D L_cGAN(G, D) + lambda E[|y - G(x)|_1],

with D's loss halved as in the paper and the adversarial terms from
``config.gan.objective`` (default: the non-saturating cross-entropy). The pairs are
made inside the Method from ordinary image batches (gans/tasks.py: "edges" or
"lowres" -> image), so any image dataset works: digits offline, or tfds images.

``sample(state, rng, num, inputs=None)`` translates the task inputs of the caller's
images (data images, as every translation Method takes them); without them, of the
fixed images kept in the state (the first images of ``init``'s example batch, see
gans.gan.TranslationState). ``translate`` takes task inputs directly. The Method never
reads data itself.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from gen_jax.data import DataInfo
from gen_jax.errors import ConfigError
from gen_jax.gans.gan import (
    NUM_REFERENCE_INPUTS,
    GANState,
    TranslationState,
    apply_d,
    d_optimizer,
    split_variables,
    tile_to,
)
from gen_jax.gans.losses import get_losses
from gen_jax.gans.networks import PatchGAN, UNetGenerator
from gen_jax.gans.tasks import PAIRED_TASKS, paired_input
from gen_jax.registry import register
from gen_jax.state import TrainState, make_optimizer
from gen_jax.value_range import ValueRange


class Pix2Pix:
    """The pix2pix Method (see gen_jax.registry.Method and the module docstring)."""

    def __init__(self, config: ml_collections.ConfigDict, info: DataInfo):
        self.config = config
        m, g = config.model, config.gan
        self.info = info
        if self.info.kind != "image":
            raise ConfigError(f"pix2pix translates images; {self.info.name!r} is vector data")
        if m.task not in PAIRED_TASKS:
            raise ConfigError(f"model.task={m.task!r}; known paired tasks: {', '.join(PAIRED_TASKS)}")
        self.vr = tuple(config.data.value_range)
        self.d_loss_fn, self.g_loss_fn = get_losses(g.objective, g.label_smoothing, tuple(g.lsgan_abc))
        if g.objective in ("wgan", "wgan_gp"):
            raise ConfigError("pix2pix supports minimax, nonsaturating, lsgan and hinge objectives")
        self.g_net = UNetGenerator(tuple(m.g_channels), self.info.shape[-1], m.upsample, m.g_norm, m.dropout,
                                   self.vr)
        self.d_net = PatchGAN(tuple(m.d_channels), m.d_norm, m.spectral_norm)
        self.g_tx = make_optimizer(config.optim, config.train.num_steps)
        self.d_tx = d_optimizer(config, config.train.num_steps)

    def make_pair(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        """(input, target) of the configured paired task for target images ``x``."""
        return paired_input(x, self.config.model.task, self.vr, self.config.model.lowres_factor), x

    def _g(self, ts: TrainState, params: Any, inp: jax.Array, rng: jax.Array) -> jax.Array:
        out, _ = self.g_net.apply({"params": params, **ts.model_state}, inp, rngs={"dropout": rng},
                                  mutable=["batch_stats"])
        return out

    def init(self, rng: jax.Array, example_batch: dict) -> TranslationState:
        """Fresh networks; the example batch's first images become the state's reference
        images (whose task inputs ``sample`` translates by default)."""
        x = jnp.asarray(example_batch["x"])
        self.info.check_batch(x)
        inp, _ = self.make_pair(x[:2])
        rg, rd, rdrop = jax.random.split(rng, 3)
        g_params, g_rest = split_variables(self.g_net.init({"params": rg, "dropout": rdrop}, inp))
        d_params, d_rest = split_variables(self.d_net.init(rd, x[:2], inp))
        g = TrainState.create(g_params, self.g_tx, self.config.train.ema_decay, g_rest)
        d = TrainState.create(d_params, self.d_tx, 0.0, d_rest)
        return TranslationState(step=jnp.zeros((), jnp.int32), g=g, d=d, inputs=x[:NUM_REFERENCE_INPUTS])

    def train_step(self, state: GANState, batch: dict, rng: jax.Array):
        """One D update (on G's current outputs), then one G update, on the same pairs."""
        inp, target = self.make_pair(batch["x"])
        r_d, r_g = jax.random.split(rng)
        lam = self.config.gan.l1_weight
        fake = jax.lax.stop_gradient(self._g(state.g, state.g.params, inp, r_d))

        def d_loss_fn(params):
            real_out, ms = apply_d(self.d_net, params, state.d.model_state, target, inp, update=True)
            fake_out, _ = apply_d(self.d_net, params, ms, fake, inp)
            loss = 0.5 * self.d_loss_fn(real_out, fake_out)  # halved: D learns slower than G
            return loss, ({"d_loss": loss, "d_real": real_out.mean(), "d_fake": fake_out.mean()}, ms)

        d_grads, (d_metrics, ms) = jax.grad(d_loss_fn, has_aux=True)(state.d.params)
        d = state.d.apply_gradients(d_grads, model_state=ms)

        def g_loss_fn(params):
            out = self._g(state.g, params, inp, r_g)
            fake_out, _ = apply_d(self.d_net, d.params, d.model_state, out, inp)
            adv = self.g_loss_fn(fake_out)
            l1 = jnp.mean(jnp.abs(out - target))
            return adv + lam * l1, {"g_adv": adv, "l1": l1}

        (g_loss, g_metrics), g_grads = jax.value_and_grad(g_loss_fn, has_aux=True)(state.g.params)
        state = state.replace(step=state.step + 1, g=state.g.apply_gradients(g_grads), d=d)
        metrics = d_metrics | g_metrics | {"g_loss": g_loss}
        metrics["loss"] = metrics["d_loss"] + g_loss
        return state, metrics

    def eval_step(self, state: GANState, batch: dict, rng: jax.Array) -> dict:
        """L1 error and PSNR (on the [0, 1] scale) of the (EMA) generator's translations,
        and the adversarial losses."""
        inp, target = self.make_pair(batch["x"])
        out = self._g(state.g, state.g.eval_params, inp, rng)
        real_out, _ = apply_d(self.d_net, state.d.params, state.d.model_state, target, inp)
        fake_out, _ = apply_d(self.d_net, state.d.params, state.d.model_state, out, inp)
        mse01 = jnp.mean(((out - target) / ValueRange(*self.vr).width) ** 2)
        l1 = jnp.mean(jnp.abs(out - target))
        d_loss = 0.5 * self.d_loss_fn(real_out, fake_out)
        g_adv = self.g_loss_fn(fake_out)
        return {"l1": l1, "psnr": -10.0 * jnp.log10(mse01 + 1e-12), "d_loss": d_loss, "g_adv": g_adv,
                "loss": d_loss + g_adv + self.config.gan.l1_weight * l1}

    def translate(self, state: GANState, inputs: jax.Array, rng: jax.Array) -> jax.Array:
        """G(inputs) with the (EMA) generator; ``rng`` drives its dropout noise."""
        return self._g(state.g, state.g.eval_params, inputs, rng)

    def reconstruct(self, state: GANState, x: jax.Array, rng: jax.Array) -> jax.Array:
        """The translation of ``x``'s task input: the estimate of ``x`` itself
        (gen_jax.registry.HasReconstruct); ``rng`` drives the generator's dropout noise."""
        return self.translate(state, self.make_pair(x)[0], rng)

    def sample(self, state: GANState, rng: jax.Array, num: int, inputs: jax.Array | None = None,
               **kw: Any) -> jax.Array:
        """``num`` translations of the task inputs of images ``inputs`` (N, H, W, C) in the
        data's value range (repeated when N < num), or, when None, of the reference images
        kept in ``state`` (see init); ``rng`` drives the dropout noise."""
        inputs = state.inputs if inputs is None else jnp.asarray(inputs)
        self.info.check_batch(inputs)
        return self.translate(state, self.make_pair(tile_to(inputs, num))[0], rng)


@register("pix2pix")
def make_pix2pix(config: ml_collections.ConfigDict, info: DataInfo) -> Pix2Pix:
    """Factory registered as "pix2pix"."""
    return Pix2Pix(config, info)
