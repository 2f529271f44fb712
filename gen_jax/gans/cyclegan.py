"""CycleGAN (Zhu et al., 2017): unpaired translation between image domains A and B.

Two generators (G_AB: A -> B, G_BA: B -> A) and two PatchGAN discriminators (D_A,
D_B), least-squares adversarial terms (``config.gan.objective``, default lsgan),
cycle consistency both ways and an optional identity term:

    L_G = L_adv(G_AB, D_B) + L_adv(G_BA, D_A)
          + lambda_cyc (E_a |G_BA(G_AB(a)) - a|_1 + E_b |G_AB(G_BA(b)) - b|_1)
          + lambda_id lambda_cyc (E_b |G_AB(b) - b|_1 + E_a |G_BA(a) - a|_1),

with each D's loss halved as in the paper. Both generators share one optimizer
(one TrainState whose params are {"ab", "ba"}), as do both discriminators ({"a",
"b"}). The paper's history buffer of 50 generated images is not used.

Domains come from ``model.task`` (gans/tasks.py): "invert"/"thicken" split any
image dataset into two disjoint halves with different looks; "labels" reads the
domain from the label (tfds ``cycle_gan/*``: 0 = A, 1 = B). A batch mixes both
domains; per-example masks weight every term.

``sample(state, rng, num, inputs=None, direction="ab")`` translates the caller's images;
without them, the fixed images kept in the state (the first images of ``init``'s example
batch, see gans.gan.TranslationState). The Method never reads data itself.
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
from gen_jax.gans.tasks import DOMAIN_TASKS, unpaired_domains
from gen_jax.registry import register
from gen_jax.state import TrainState, make_optimizer


def _l1(a: jax.Array, b: jax.Array, w: jax.Array) -> jax.Array:
    per = jnp.abs(a - b).reshape(a.shape[0], -1).mean(-1)
    return jnp.sum(per * w) / jnp.maximum(jnp.sum(w), 1e-8)


class CycleGAN:
    """The CycleGAN Method (see gen_jax.registry.Method and the module docstring)."""

    def __init__(self, config: ml_collections.ConfigDict, info: DataInfo):
        self.config = config
        m, g = config.model, config.gan
        self.info = info
        if self.info.kind != "image":
            raise ConfigError(f"CycleGAN translates images; {self.info.name!r} is vector data")
        if m.task not in DOMAIN_TASKS:
            raise ConfigError(f"model.task={m.task!r}; known: {', '.join(DOMAIN_TASKS)}")
        if m.task != "labels" and (config.data.dequantize != "none" or config.data.binarize != "none"):
            raise ConfigError("the digits domain split hashes pixel levels: set data.dequantize and "
                              "data.binarize to 'none'")
        h, w = self.info.shape[:2]
        if m.downsample < 1 or h % m.downsample or w % m.downsample:
            raise ConfigError(f"model.downsample={m.downsample} must be >= 1 and divide the image "
                              f"size {(h, w)}")
        if m.task != "labels" and m.downsample != 1:
            raise ConfigError("model.downsample applies to model.task='labels' (the tfds cycle_gan data)")
        if g.objective in ("wgan", "wgan_gp"):
            raise ConfigError("CycleGAN supports minimax, nonsaturating, lsgan and hinge objectives")
        self.vr = tuple(config.data.value_range)
        self.d_loss_fn, self.g_loss_fn = get_losses(g.objective, g.label_smoothing, tuple(g.lsgan_abc))
        self.g_net = UNetGenerator(tuple(m.g_channels), self.info.shape[-1], m.upsample, m.g_norm, 0.0,
                                   self.vr)
        self.d_net = PatchGAN(tuple(m.d_channels), m.d_norm, m.spectral_norm)
        self.g_tx = make_optimizer(config.optim, config.train.num_steps)
        self.d_tx = d_optimizer(config, config.train.num_steps)

    def shrink(self, x: jax.Array) -> jax.Array:
        """Images average-pooled by ``model.downsample`` (the resolution the model works at)."""
        f = self.config.model.downsample
        if f == 1:
            return x
        n, h, w, c = x.shape
        return x.reshape(n, h // f, f, w // f, f, c).mean((2, 4))

    def domains(self, batch: dict) -> tuple[jax.Array, jax.Array, jax.Array]:
        """(A-look images, B-look images, is_b mask) of a batch (see tasks.unpaired_domains)."""
        return unpaired_domains(self.shrink(batch["x"]), batch.get("y"), self.config.model.task, self.vr,
                                self.info.num_levels)

    def _g(self, ts: TrainState, params: Any, which: str, x: jax.Array) -> jax.Array:
        rest = {k: v[which] for k, v in ts.model_state.items()}
        out, _ = self.g_net.apply({"params": params[which], **rest}, x, mutable=["batch_stats"])
        return out

    def _d(self, d: TrainState, params: Any, which: str, x: jax.Array, update: bool = False):
        rest = {k: v[which] for k, v in d.model_state.items()}
        out, new = apply_d(self.d_net, params[which], rest, x, update=update)
        return out, new

    def init(self, rng: jax.Array, example_batch: dict) -> TranslationState:
        """Fresh networks; the example batch's first images become the state's reference
        images (what ``sample`` translates by default)."""
        refs = jnp.asarray(example_batch["x"])[:NUM_REFERENCE_INPUTS]
        self.info.check_batch(refs)
        x = self.shrink(refs[:2])
        keys = jax.random.split(rng, 4)
        gs = [split_variables(self.g_net.init(k, x)) for k in keys[:2]]
        ds = [split_variables(self.d_net.init(k, x)) for k in keys[2:]]

        def nest(pairs, names):
            params = dict(zip(names, (p for p, _ in pairs), strict=True))
            rest = {c: {n: r[c] for n, (_, r) in zip(names, pairs, strict=True)} for c in pairs[0][1]}
            return params, rest

        g_params, g_rest = nest(gs, ("ab", "ba"))
        d_params, d_rest = nest(ds, ("a", "b"))
        g = TrainState.create(g_params, self.g_tx, self.config.train.ema_decay, g_rest)
        d = TrainState.create(d_params, self.d_tx, 0.0, d_rest)
        return TranslationState(step=jnp.zeros((), jnp.int32), g=g, d=d, inputs=refs)

    def _g_losses(self, g_params: Any, state: GANState, d_params: Any, xa, xb, is_b):
        """Generator terms (and the fakes) for a batch; ``w_a``/``w_b`` mark real A/B images."""
        lam, lam_id = self.config.gan.cycle_weight, self.config.gan.identity_weight
        w_a, w_b = 1.0 - is_b, is_b
        fake_b = self._g(state.g, g_params, "ab", xa)      # meaningful where w_a
        fake_a = self._g(state.g, g_params, "ba", xb)      # meaningful where w_b
        adv_ab = self.g_loss_fn(self._d(state.d, d_params, "b", fake_b)[0], w_a)
        adv_ba = self.g_loss_fn(self._d(state.d, d_params, "a", fake_a)[0], w_b)
        cyc = (_l1(self._g(state.g, g_params, "ba", fake_b), xa, w_a)
               + _l1(self._g(state.g, g_params, "ab", fake_a), xb, w_b))
        idt = jnp.zeros(())
        if lam_id:
            idt = (_l1(self._g(state.g, g_params, "ab", xb), xb, w_b)
                   + _l1(self._g(state.g, g_params, "ba", xa), xa, w_a))
        loss = adv_ab + adv_ba + lam * cyc + lam_id * lam * idt
        return loss, ({"g_adv": adv_ab + adv_ba, "cycle": cyc, "identity": idt}, fake_a, fake_b)

    def _d_loss(self, d_params: Any, state: GANState, xa, xb, fake_a, fake_b, is_b, update: bool):
        w_a, w_b = 1.0 - is_b, is_b
        real_a, ms_a = self._d(state.d, d_params, "a", xa, update)
        real_b, ms_b = self._d(state.d, d_params, "b", xb, update)
        # D_A judges real A images against G_BA's outputs on real B images, and vice versa.
        loss_a = 0.5 * self.d_loss_fn(real_a, self._d(state.d, d_params, "a", fake_a)[0], w_a, w_b)
        loss_b = 0.5 * self.d_loss_fn(real_b, self._d(state.d, d_params, "b", fake_b)[0], w_b, w_a)
        ms = {c: {"a": ms_a[c], "b": ms_b[c]} for c in ms_a}
        return loss_a + loss_b, ({"d_loss_a": loss_a, "d_loss_b": loss_b}, ms)

    def train_step(self, state: GANState, batch: dict, rng: jax.Array):
        """One update of both generators, then one of both discriminators on the new fakes."""
        xa, xb, is_b = self.domains(batch)
        (g_loss, (g_metrics, fake_a, fake_b)), grads = jax.value_and_grad(
            self._g_losses, has_aux=True)(state.g.params, state, state.d.params, xa, xb, is_b)
        g = state.g.apply_gradients(grads)
        fake_a, fake_b = jax.lax.stop_gradient(fake_a), jax.lax.stop_gradient(fake_b)
        (d_loss, (d_metrics, ms)), d_grads = jax.value_and_grad(self._d_loss, has_aux=True)(
            state.d.params, state, xa, xb, fake_a, fake_b, is_b, True)
        d = state.d.apply_gradients(d_grads, model_state=ms)
        metrics = g_metrics | d_metrics | {"g_loss": g_loss, "d_loss": d_loss,
                                           "frac_b": jnp.mean(is_b), "loss": g_loss + d_loss}
        return state.replace(step=state.step + 1, g=g, d=d), metrics

    def eval_step(self, state: GANState, batch: dict, rng: jax.Array) -> dict:
        """Generator and discriminator terms of the (EMA) generators on a validation batch."""
        xa, xb, is_b = self.domains(batch)
        g_loss, (metrics, fake_a, fake_b) = self._g_losses(state.g.eval_params, state, state.d.params,
                                                           xa, xb, is_b)
        d_loss, (d_metrics, _) = self._d_loss(state.d.params, state, xa, xb, fake_a, fake_b, is_b, False)
        return metrics | d_metrics | {"g_loss": g_loss, "d_loss": d_loss, "loss": g_loss + d_loss}

    def translate(self, state: GANState, x: jax.Array, direction: str = "ab") -> jax.Array:
        """G_AB(x) ("ab") or G_BA(x) ("ba") with the (EMA) generators."""
        if direction not in ("ab", "ba"):
            raise ValueError(f"direction must be 'ab' or 'ba', got {direction!r}")
        return self._g(state.g, state.g.eval_params, direction, x)

    def reconstruct(self, state: GANState, x: jax.Array, rng: jax.Array) -> jax.Array:
        """The A -> B -> A cycle G_BA(G_AB(x)) of A-look images ``x``, computed at the model's
        resolution and shown at x's (nearest upsampling when ``model.downsample`` > 1);
        gen_jax.registry.HasReconstruct, deterministic (``rng`` is unused)."""
        cyc = self.translate(state, self.translate(state, self.shrink(x), "ab"), "ba")
        f = self.config.model.downsample
        return jnp.repeat(jnp.repeat(cyc, f, 1), f, 2) if f > 1 else cyc

    def sample(self, state: GANState, rng: jax.Array, num: int, inputs: jax.Array | None = None,
               direction: str = "ab", **kw: Any) -> jax.Array:
        """``num`` translations in ``direction`` of images ``inputs`` (N, H, W, C) in the data's
        shape and value range (repeated when N < num), or, when None, of the reference images
        kept in ``state`` (see init). Outputs are at the model's resolution."""
        inputs = state.inputs if inputs is None else jnp.asarray(inputs)
        self.info.check_batch(inputs)
        return self.translate(state, self.shrink(tile_to(inputs, num)), direction)


@register("cyclegan")
def make_cyclegan(config: ml_collections.ConfigDict, info: DataInfo) -> CycleGAN:
    """Factory registered as "cyclegan"."""
    return CycleGAN(config, info)
