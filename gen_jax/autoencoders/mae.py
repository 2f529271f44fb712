"""Masked autoencoder (He et al., 2022, "Masked Autoencoders Are Scalable Vision Learners").

Images are cut into patches (``model.patch_size``, 2 on 8x8 digits: 16
patches). Each example hides a random subset of exactly
round(``model.mask_ratio`` x num_patches) patches, drawn from an explicit key.
A ViT encoder sees only the visible patches (plus a class token); a lighter
ViT decoder sees the encoded visible tokens and a shared learned mask token at
every hidden position, each with a fixed 2-D sin-cos position embedding, and
predicts the pixels of every patch. The loss is the MSE on the masked patches
only, optionally against per-patch normalised pixels (``model.norm_pix_loss``).

The MAE is a representation learner, not a density model. ``sample`` is a
diagnostic: it draws every patch from a Gaussian fitted to that patch
position's pixels (running moments in ``TrainState.model_state``, updated
from each training batch, warmed up over their own update count), hides
``mask_ratio`` of them and lets the MAE fill them in. ``anomaly_score`` is
the masked-patch loss averaged over several random masks.
:func:`linear_probe` fits a logistic regression on the frozen encoder's
features (mean-pooled, class token, or all tokens) of labelled arrays that
the caller loads.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from gen_jax.data import DataInfo
from gen_jax.errors import ConfigError
from gen_jax.nn.attention import Transformer, patchify, sincos_pos_embed_2d, unpatchify
from gen_jax.registry import register
from gen_jax.state import TrainState, make_optimizer
from gen_jax.steps import make_eval_step, make_train_step
from gen_jax.value_range import ValueRange

# Variance floor of the normalised-pixel targets (the MAE reference code's 1e-6).
_NORM_EPS = 1e-6
_COV_JITTER = 1e-4
POOLS = ("mean", "cls", "flatten")


def num_masked_patches(mask_ratio: float, num_patches: int) -> int:
    """round(mask_ratio * num_patches), halves rounded up (not Python's round-half-even)."""
    return int(math.floor(mask_ratio * num_patches + 0.5))


def random_masking(rng: jax.Array, num: int, num_patches: int, num_masked: int
                   ) -> tuple[jax.Array, jax.Array, jax.Array]:
    """An independent uniformly random set of ``num_masked`` patches per example.

    As in the MAE reference code: sort uniform noise to get a random
    permutation per example; its first ``num_patches - num_masked`` entries are
    the visible patches.

    Args:
      rng: key of this draw.
      num: batch size.
      num_patches: patches per image L.
      num_masked: hidden patches per image, the same for every example.

    Returns:
      ids_keep (num, L - num_masked) visible patch indices (in shuffled order),
      ids_restore (num, L) the inverse permutation, and mask (num, L) float,
      1 = hidden, 0 = visible.
    """
    noise = jax.random.uniform(rng, (num, num_patches))
    ids_shuffle = jnp.argsort(noise, axis=1)
    ids_restore = jnp.argsort(ids_shuffle, axis=1)
    keep = num_patches - num_masked
    mask_shuffled = (jnp.arange(num_patches) >= keep).astype(jnp.float32)
    mask = jnp.take_along_axis(jnp.broadcast_to(mask_shuffled, (num, num_patches)), ids_restore, axis=1)
    return ids_shuffle[:, :keep], ids_restore, mask


def normalize_patches(patches: jax.Array) -> jax.Array:
    """Per-patch normalised pixels, (t - mean(t)) / sqrt(var(t) + 1e-6): MAE's norm_pix_loss target."""
    mean = patches.mean(-1, keepdims=True)
    var = patches.var(-1, keepdims=True)
    return (patches - mean) / jnp.sqrt(var + _NORM_EPS)


def masked_patch_loss(pred: jax.Array, target: jax.Array, mask: jax.Array) -> jax.Array:
    """The MAE loss per example: sum_l m_l mean_d (pred_ld - target_ld)^2 / sum_l m_l.

    Args:
      pred, target: (N, L, D) predicted and target patches.
      mask: (N, L), 1 where the patch was hidden.

    Returns:
      (N,) mean squared error over the hidden patches of each example; visible
      patches do not enter.
    """
    per_patch = jnp.mean((pred - target) ** 2, axis=-1)
    return jnp.sum(per_patch * mask, axis=-1) / jnp.sum(mask, axis=-1)


class MAENet(nn.Module):
    """ViT encoder over visible patches and a ViT decoder over all positions."""

    image_shape: tuple[int, int, int]
    patch: int
    enc_dim: int
    enc_depth: int
    enc_heads: int
    dec_dim: int
    dec_depth: int
    dec_heads: int
    mlp_ratio: float

    def setup(self):
        h, w, c = self.image_shape
        self.grid = (h // self.patch, w // self.patch)
        init = nn.initializers.normal(0.02)
        self.patch_embed = nn.Dense(self.enc_dim)
        self.cls_token = self.param("cls_token", init, (1, 1, self.enc_dim))
        self.encoder = Transformer(self.enc_depth, self.enc_heads, self.mlp_ratio)
        self.dec_embed = nn.Dense(self.dec_dim)
        self.mask_token = self.param("mask_token", init, (1, 1, self.dec_dim))
        self.decoder = Transformer(self.dec_depth, self.dec_heads, self.mlp_ratio)
        self.dec_pred = nn.Dense(self.patch * self.patch * c)

    def encode(self, patches: jax.Array, ids_keep: jax.Array) -> jax.Array:
        """(N, L, D) patches and (N, K) visible indices -> (N, 1 + K, enc_dim), class token first.

        Only the gathered visible tokens enter the transformer, so hidden
        patches cannot influence the output.
        """
        tokens = self.patch_embed(patches) + sincos_pos_embed_2d(self.enc_dim, *self.grid)[None]
        visible = jnp.take_along_axis(tokens, ids_keep[..., None], axis=1)
        cls = jnp.broadcast_to(self.cls_token, (patches.shape[0], 1, self.enc_dim))
        return self.encoder(jnp.concatenate([cls, visible], axis=1))

    def decode(self, latent: jax.Array, ids_restore: jax.Array) -> jax.Array:
        """Encoded tokens and the inverse permutation -> (N, L, D) predicted patches."""
        y = self.dec_embed(latent)
        n, num_tokens, _ = y.shape
        num_patches = ids_restore.shape[1]
        masks = jnp.broadcast_to(self.mask_token, (n, num_patches - (num_tokens - 1), self.dec_dim))
        full = jnp.concatenate([y[:, 1:], masks], axis=1)           # shuffled order
        full = jnp.take_along_axis(full, ids_restore[..., None], axis=1)  # image order
        full = full + sincos_pos_embed_2d(self.dec_dim, *self.grid)[None]
        out = self.decoder(jnp.concatenate([y[:, :1], full], axis=1))
        return self.dec_pred(out[:, 1:])

    def __call__(self, patches: jax.Array, ids_keep: jax.Array, ids_restore: jax.Array) -> jax.Array:
        return self.decode(self.encode(patches, ids_keep), ids_restore)


def _patch_gaussian_chol(stats: dict) -> tuple[jax.Array, jax.Array]:
    """Mean (L, D) and Cholesky factors (L, D, D) of the per-position patch Gaussians."""
    mean = stats["mean"]
    cov = stats["second"] - mean[:, :, None] * mean[:, None, :]
    cov = 0.5 * (cov + jnp.swapaxes(cov, 1, 2))
    d = mean.shape[-1]
    jitter = _COV_JITTER * jnp.maximum(jnp.trace(cov, axis1=1, axis2=2) / d, 1e-6)
    return mean, jnp.linalg.cholesky(cov + jitter[:, None, None] * jnp.eye(d))


class MAE:
    """The MAE Method (see gen_jax.registry.Method)."""

    def __init__(self, config: ml_collections.ConfigDict, info: DataInfo):
        self.config = config
        m = config.model
        self.info = info
        if self.info.kind != "image":
            raise ConfigError(f"the MAE needs image data; {self.info.name!r} is vector data")
        h, w, c = self.info.shape
        if m.patch_size <= 0 or h % m.patch_size or w % m.patch_size:
            raise ConfigError(f"model.patch_size={m.patch_size} must divide the image size {(h, w)}")
        for dim, heads, which in ((m.enc_dim, m.enc_heads, "enc"), (m.dec_dim, m.dec_heads, "dec")):
            if dim % 4:
                raise ConfigError(f"model.{which}_dim={dim} must be divisible by 4 (2-D sin-cos "
                                  "position embedding)")
            if heads <= 0 or dim % heads:
                raise ConfigError(f"model.{which}_dim={dim} must be divisible by model.{which}_heads={heads}")
        self.num_patches = (h // m.patch_size) * (w // m.patch_size)
        self.num_masked = self._check_ratio(m.mask_ratio)
        if not 0.0 <= m.patch_stats_decay < 1.0:
            raise ConfigError(f"model.patch_stats_decay must be in [0, 1), got {m.patch_stats_decay}")
        self.value_range = ValueRange.from_config(config.data, self.info)
        self.net = MAENet((h, w, c), m.patch_size, m.enc_dim, m.enc_depth, m.enc_heads, m.dec_dim,
                          m.dec_depth, m.dec_heads, float(m.mlp_ratio))
        self.tx = make_optimizer(config.optim, config.train.num_steps)

    def _check_ratio(self, ratio: float) -> int:
        k = num_masked_patches(ratio, self.num_patches)
        if not 0 < k < self.num_patches:
            raise ConfigError(f"mask ratio {ratio} hides {k} of {self.num_patches} patches; it must "
                              "hide at least one and leave at least one visible")
        return k

    # -- pieces ----------------------------------------------------------------

    def _patches(self, x: jax.Array) -> jax.Array:
        return patchify(x, self.config.model.patch_size)

    def _target(self, patches: jax.Array) -> jax.Array:
        return normalize_patches(patches) if self.config.model.norm_pix_loss else patches

    def _to_pixels(self, pred: jax.Array, patches: jax.Array) -> jax.Array:
        """Predictions in pixel space; normalised-pixel predictions are mapped back
        with the statistics of the patches they predict (as the MAE paper's figures do)."""
        if not self.config.model.norm_pix_loss:
            return pred
        mean, var = patches.mean(-1, keepdims=True), patches.var(-1, keepdims=True)
        return pred * jnp.sqrt(var + _NORM_EPS) + mean

    def _forward(self, params: Any, patches: jax.Array, rng: jax.Array, num_masked: int):
        ids_keep, ids_restore, mask = random_masking(rng, patches.shape[0], self.num_patches, num_masked)
        return self.net.apply({"params": params}, patches, ids_keep, ids_restore), mask

    def get_loss_fn(self):
        """Returns ``loss_fn(params, x, rng) -> (loss, terms)``: the batch mean of
        :func:`masked_patch_loss` under a random mask drawn from ``rng``."""

        def loss_fn(params: Any, x: jax.Array, rng: jax.Array) -> tuple[jax.Array, dict]:
            patches = self._patches(x)
            pred, mask = self._forward(params, patches, rng, self.num_masked)
            loss = jnp.mean(masked_patch_loss(pred, self._target(patches), mask))
            pixels = self._to_pixels(pred, patches)
            terms = {"mse_masked_pixels": jnp.mean(masked_patch_loss(pixels, patches, mask)),
                     "mse_visible_pixels": jnp.mean(masked_patch_loss(pixels, patches, 1.0 - mask))}
            return loss, terms

        return loss_fn

    # -- the Method contract ---------------------------------------------------

    def loss_fn(self, params: Any, model_state: dict, batch: dict, rng: jax.Array, train: bool):
        """:meth:`get_loss_fn`'s loss in the gen_jax.steps signature; training also
        moves the per-position patch moments (``model_state``) towards the batch's,
        with the decay warmed up as min(decay, (1 + n) / (10 + n)) over their
        update count n, as the parameter EMA is over the step."""
        x = batch["x"]
        loss, terms = self.get_loss_fn()(params, x, rng)
        if train:
            patches = self._patches(x)
            n = model_state["count"]
            d = jnp.minimum(self.config.model.patch_stats_decay, (1.0 + n) / (10.0 + n))
            second = jnp.einsum("nlp,nlq->lpq", patches, patches) / x.shape[0]
            model_state = {"mean": d * model_state["mean"] + (1 - d) * patches.mean(0),
                           "second": d * model_state["second"] + (1 - d) * second, "count": n + 1}
        return loss, (terms, model_state)

    # -- the Method contract ---------------------------------------------------

    def init(self, rng: jax.Array, example_batch: dict) -> TrainState:
        x = jnp.asarray(example_batch["x"])
        self.info.check_batch(x)
        patches = self._patches(x)
        r_params, r_mask = jax.random.split(rng)
        ids_keep, ids_restore, _ = random_masking(r_mask, x.shape[0], self.num_patches,
                                                  self.num_masked)
        params = self.net.init(r_params, patches, ids_keep, ids_restore)["params"]
        d = patches.shape[-1]
        stats = {"mean": jnp.zeros((self.num_patches, d)),
                 "second": jnp.broadcast_to(jnp.eye(d), (self.num_patches, d, d)),
                 "count": jnp.zeros((), jnp.int32)}
        return TrainState.create(params, self.tx, self.config.train.ema_decay, model_state=stats)

    def train_step(self, state: TrainState, batch: dict, rng: jax.Array):
        return make_train_step(self.loss_fn)(state, batch, rng)

    def eval_step(self, state: TrainState, batch: dict, rng: jax.Array) -> dict:
        return make_eval_step(self.loss_fn)(state, batch, rng)

    def sample(self, state: TrainState, rng: jax.Array, num: int) -> jax.Array:
        """A diagnostic, not a density model's sample: patches drawn from the
        per-position Gaussians, ``mask_ratio`` of them hidden and filled in by the MAE."""
        r_patch, r_mask = jax.random.split(rng)
        mean, chol = _patch_gaussian_chol(state.model_state)
        eps = jax.random.normal(r_patch, (num, *mean.shape))
        patches = mean + jnp.einsum("lpq,nlq->nlp", chol, eps)
        return self._fill(state, patches, r_mask, self.num_masked)["pasted"]

    # -- optional extras -------------------------------------------------------

    def _fill(self, state: TrainState, patches: jax.Array, rng: jax.Array, num_masked: int) -> dict:
        pred, mask = self._forward(state.eval_params, patches, rng, num_masked)
        pixels = self._to_pixels(pred, patches)
        m = mask[..., None]
        img = lambda p: self.value_range.clip(unpatchify(p, self.config.model.patch_size, self.info.shape))
        return {"masked": img(jnp.where(m > 0, self.value_range.lo, patches)), "prediction": img(pixels),
                "pasted": img(jnp.where(m > 0, pixels, patches)), "mask": mask}

    def reconstruction_parts(self, state: TrainState, x: jax.Array, rng: jax.Array, *,
                             mask_ratio: float | None = None) -> dict:
        """The MAE paper's figure columns for one random mask.

        Args:
          state: the TrainState.
          x: (N, H, W, C) images.
          rng: key of the mask.
          mask_ratio: hidden fraction (a Python float); None = ``model.mask_ratio``.

        Returns:
          {"masked": input with hidden patches at the low value, "prediction": the
          decoder's output everywhere, "pasted": visible input + predicted hidden
          patches, "mask": (N, L) 1 = hidden}; images clipped to the value range.
        """
        k = self.num_masked if mask_ratio is None else self._check_ratio(mask_ratio)
        return self._fill(state, self._patches(x), rng, k)

    def reconstruct(self, state: TrainState, x: jax.Array, rng: jax.Array, *,
                    mask_ratio: float | None = None) -> jax.Array:
        """Visible patches of ``x`` with the MAE's prediction in a random ``mask_ratio`` of
        patches (the mask drawn with ``rng``)."""
        return self.reconstruction_parts(state, x, rng, mask_ratio=mask_ratio)["pasted"]

    def anomaly_score(self, state: TrainState, x: jax.Array, rng: jax.Array, *,
                      num_masks: int = 8) -> jax.Array:
        """Masked-patch loss per example averaged over ``num_masks`` random masks, each
        from its own key; higher = more anomalous.

        Returns:
          (N,) scores.
        """
        patches = self._patches(x)
        target = self._target(patches)

        def one(key):
            pred, mask = self._forward(state.eval_params, patches, key, self.num_masked)
            return masked_patch_loss(pred, target, mask)

        return jnp.mean(jax.vmap(one)(jax.random.split(rng, num_masks)), axis=0)

    def anomaly_map(self, state: TrainState, x: jax.Array, rng: jax.Array, *,
                    num_masks: int = 8) -> jax.Array:
        """Per-pixel squared error (summed over channels) of the MAE's prediction of
        hidden pixels, averaged over those of ``num_masks`` random masks (each from its
        own key) that hid the pixel; 0 where no mask hid it. (N, H, W).
        """
        patches = self._patches(x)
        p = self.config.model.patch_size

        def one(key):
            parts = self._fill(state, patches, key, self.num_masked)
            hidden = jnp.repeat(parts["mask"][..., None], patches.shape[-1], axis=-1)
            hidden = unpatchify(hidden, p, self.info.shape)[..., 0]
            return jnp.sum((parts["prediction"] - x) ** 2, axis=-1) * hidden, hidden

        err, hidden = jax.vmap(one)(jax.random.split(rng, num_masks))
        return err.sum(0) / jnp.maximum(hidden.sum(0), 1.0)

    def features(self, state: TrainState, x: jax.Array, *, pool: str = "mean") -> jax.Array:
        """Frozen-encoder features of whole images (nothing hidden).

        Args:
          state: the TrainState (EMA parameters where kept).
          x: (N, H, W, C) images.
          pool: "mean" of the patch tokens (N, enc_dim), the class token "cls"
            (N, enc_dim), or all patch tokens "flatten"ed (N, L * enc_dim).

        Returns:
          The features.
        """
        if pool not in POOLS:
            raise ValueError(f"pool must be one of {POOLS}, got {pool!r}")
        patches = self._patches(x)
        ids = jnp.broadcast_to(jnp.arange(self.num_patches), (x.shape[0], self.num_patches))
        tokens = self.net.apply({"params": state.eval_params}, patches, ids, method=MAENet.encode)
        if pool == "cls":
            return tokens[:, 0]
        if pool == "flatten":
            return tokens[:, 1:].reshape(x.shape[0], -1)
        return tokens[:, 1:].mean(axis=1)


def logistic_probe(train: tuple[np.ndarray, np.ndarray], val: tuple[np.ndarray, np.ndarray],
                   test: tuple[np.ndarray, np.ndarray], cs: Sequence[float] = (0.01, 0.1, 1.0, 10.0),
                   max_iter: int = 2000) -> dict:
    """Multinomial logistic regression (scikit-learn) on standardised features.

    Standardisation plays the role of the MAE paper's affine-free BatchNorm in
    front of its linear probe. The inverse regularisation C is chosen on the
    validation split; the model with that C is scored on the test split.

    Args:
      train, val, test: (features (N, F), labels (N,)) per split.
      cs: candidate values of C.
      max_iter: solver iterations.

    Returns:
      {"train_accuracy", "val_accuracy", "test_accuracy", "C"}.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(train[0])
    f_train, f_val, f_test = (scaler.transform(np.asarray(s[0], np.float64)) for s in (train, val, test))
    best = None
    for c in cs:
        clf = LogisticRegression(C=c, max_iter=max_iter).fit(f_train, train[1])
        acc = clf.score(f_val, val[1])
        if best is None or acc > best[0]:
            best = (acc, c, clf)
    val_acc, c, clf = best
    return {"train_accuracy": float(clf.score(f_train, train[1])), "val_accuracy": float(val_acc),
            "test_accuracy": float(clf.score(f_test, test[1])), "C": float(c)}


def linear_probe(method: MAE, state: TrainState, train: tuple[np.ndarray, np.ndarray],
                 val: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray], *,
                 pool: str = "mean", cs: Sequence[float] = (0.01, 0.1, 1.0, 10.0),
                 batch_size: int = 512) -> dict:
    """Linear probe of a frozen MAE encoder: :meth:`MAE.features` of three labelled
    splits, then :func:`logistic_probe`. The caller loads the splits (a probe
    usually wants all classes, e.g. ``load_split`` with ``data.classes`` cleared).

    Args:
      method: the MAE Method.
      state: its TrainState (the EMA parameters are used where kept).
      train, val, test: (images (N, H, W, C) in the model's value range, labels (N,)).
      pool: how tokens become features, see :meth:`MAE.features`.
      cs: candidate inverse regularisation strengths.
      batch_size: examples per feature batch.

    Returns:
      {"train_accuracy", "val_accuracy", "test_accuracy", "C"}.
    """
    feats = jax.jit(lambda s, x: method.features(s, x, pool=pool))
    splits = []
    for x, y in (train, val, test):
        f = np.concatenate([np.asarray(feats(state, x[i:i + batch_size]))
                            for i in range(0, len(x), batch_size)])
        splits.append((f, np.asarray(y)))
    return logistic_probe(*splits, cs=cs)


@register("mae")
def make_mae(config: ml_collections.ConfigDict, info: DataInfo) -> MAE:
    """Factory registered as "mae"."""
    return MAE(config, info)
