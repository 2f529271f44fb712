"""PaDiM (Defard et al., 2021, "PaDiM: a Patch Distribution Modeling Framework for Anomaly
Detection and Localization"), registered as "padim": the feature-distance baseline of
the normalizing flows in gen_jax/anomaly/feature_flow.py, on the same frozen features.

Per layer and per feature location (h, w), a Gaussian N(mu_hw, Sigma_hw) of the kept
feature channels over the whole training split (Sigma_hw + ``padim.reg`` I, the paper's
0.01), fitted in closed form (:class:`~gen_jax.registry.Fits`: one pass over the split
in batches, sums of shifted features and of their outer products); anomaly map: the
Mahalanobis distance sqrt((f - mu)^T Sigma^-1 (f - mu)) per location, upsampled to the
crop like FastFlow's map (feature_flow.FrozenFeatures.to_image) and averaged over
layers; image score: its maximum. The paper concatenates the layers into one
embedding at the finest layer's resolution; here each layer has its own Gaussians
(the same with a single layer, the configs' default). Train steps leave the fit
unchanged and report the batch's mean squared distance.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
from flax import struct

from gen_jax.anomaly.feature_flow import FrozenFeatures, _FeatureMethod, build_extractor, maps_as_images
from gen_jax.data import DataInfo
from gen_jax.errors import ConfigError
from gen_jax.registry import register

Array = jax.Array


class PadimState(struct.PyTreeNode):
    """A fitted PaDiM: the step counter, per layer the mean and precision per location
    ({name: (h, w, c)}, {name: (h, w, c, c)}), and the frozen parts (``model_state``)."""

    step: Array
    params: Any
    model_state: Any

    @property
    def eval_params(self) -> Any:
        return self.params


Collect = Callable[[dict[str, Array], Array, Array], Any]


def gaussian_fit(features: Callable[[Array], dict[str, Array]], x: Array, weights: Array, reg: float,
                 *, shared: bool = False, collect: Collect | None = None
                 ) -> tuple[dict[str, tuple[Array, Array]], Any]:
    """Mean and regularised covariance of the features of B batches of crops, streamed: one
    ``lax.scan`` over the batches, so only one batch's features are held at a time.

    ``features`` maps a batch (N, H, W, C) to {layer: (N, h, w, c)}; ``x`` (B, N, H, W, C);
    ``weights`` (B, N): 1 = counted, 0 = padding. Per location (h, w), or with ``shared``
    one Gaussian over all locations. Sums of the features and of their outer products,
    shifted by the first batch's mean (exact algebra, less cancellation in float32);
    unbiased covariance plus ``reg`` I. ``collect(feats, weights_b, b)``, if given, is
    called in the scan on each batch's features (its index ``b``) and its outputs are
    stacked over the batches (e.g. a random draw of cells).

    Returns:
      ({layer: (mean (h, w, c) or (c,), covariance (h, w, c, c) or (c, c))}, collected).
    """
    def cells(f: Array, w: Array) -> tuple[Array, Array]:
        if not shared:
            return f, w
        n, h, wd, c = f.shape  # every location one observation
        return f.reshape(n * h * wd, 1, 1, c), jnp.repeat(w, h * wd)

    def shift_of(f: Array, w: Array) -> Array:
        f, w = cells(f, w)
        return jnp.sum(f * w[:, None, None, None], 0) / jnp.maximum(w.sum(), 1.0)

    shift = jax.tree.map(lambda f: shift_of(f, weights[0]), features(x[0]))

    def body(carry, batch):
        xb, wb, b = batch
        feats = features(xb)
        new = {}
        for name, f in feats.items():
            s, ss, n = carry[name]
            fc, wc = cells(f, wb)
            d = (fc - shift[name]) * wc[:, None, None, None]
            new[name] = (s + d.sum(0), ss + jnp.einsum("nhwi,nhwj->hwij", d, fc - shift[name]), n + wc.sum())
        return new, (collect(feats, wb, b) if collect is not None else None)

    zeros = {k: (jnp.zeros_like(v), jnp.zeros((*v.shape, v.shape[-1])), jnp.zeros(()))
             for k, v in shift.items()}
    sums, collected = jax.lax.scan(body, zeros, (x, weights, jnp.arange(x.shape[0])))
    out = {}
    for name, (s, ss, n) in sums.items():
        mean_shifted = s / n
        c = s.shape[-1]
        cov = (ss - n * jnp.einsum("hwi,hwj->hwij", mean_shifted, mean_shifted)) / (n - 1) + reg * jnp.eye(c)
        mean = shift[name] + mean_shifted
        out[name] = (mean[0, 0], cov[0, 0]) if shared else (mean, cov)
    return out, collected


def batched(x: Array, batch_size: int) -> tuple[Array, Array]:
    """(N, ...) -> (B, b, ...) batches of ``min(batch_size, N)``, the last one padded with copies
    of the first example, and their weights (B, b): 1 = real, 0 = padding."""
    n = x.shape[0]
    b = min(batch_size, n)
    num = -(-n // b)
    xb = jnp.concatenate([x, jnp.repeat(x[:1], num * b - n, 0)]).reshape(num, b, *x.shape[1:])
    return xb, (jnp.arange(num * b) < n).astype(jnp.float32).reshape(num, b)


def mahalanobis(f: Array, mean: Array, precision: Array) -> Array:
    """sqrt((f - mu)^T P (f - mu)) per location of (N, h, w, c) features, (N, h, w)."""
    d = f - mean
    return jnp.sqrt(jnp.maximum(jnp.einsum("nhwi,hwij,nhwj->nhw", d, precision, d), 0.0))


class ClosedFormFeatureMethod(_FeatureMethod):
    """A Method on frozen features fitted in closed form (``fit``, which the runtime calls
    with the whole training split): init fits the example batch, a train step only counts
    and reports ``_metrics`` (the fit is final), ``sample`` shows the anomaly maps of the
    kept good crops (not a generative model). PaDiM and gen_jax.anomaly.knn.FeatureKNN."""

    def fit(self, rng: Array, x_train: Array) -> PadimState:
        raise NotImplementedError

    def _metrics(self, state: PadimState, x: Array) -> dict:
        raise NotImplementedError

    def anomaly_map(self, state: PadimState, x: Array, rng: Array | None = None) -> Array:
        raise NotImplementedError

    def init(self, rng: Array, example_batch: dict) -> PadimState:
        """Fits to ``example_batch["x"]`` (the runtime calls :meth:`fit` with the whole split)."""
        return self.fit(rng, jnp.asarray(example_batch["x"]))

    def train_step(self, state: PadimState, batch: dict, rng: Array):
        """The fit is final: counts the step and reports the batch's metrics."""
        return state.replace(step=state.step + 1), self._metrics(state, batch["x"])

    def eval_step(self, state: PadimState, batch: dict, rng: Array) -> dict:
        return self._metrics(state, batch["x"])

    def sample(self, state: PadimState, rng: Array, num: int) -> Array:
        """The anomaly maps of the kept good crops, as images (not a generative model)."""
        ref = state.model_state["reference"]
        maps = self.anomaly_map(state, ref[jnp.arange(num) % ref.shape[0]])
        return maps_as_images(maps, self.value_range, self.info.shape[-1])


class PaDiM(ClosedFormFeatureMethod):
    """The PaDiM Method (gen_jax.registry.Method, Fits, HasAnomalyScore, HasAnomalyMap)."""

    def __init__(self, config: ml_collections.ConfigDict, info: DataInfo, extractor: FrozenFeatures,
                 extractor_variables: dict):
        super().__init__(config, info, extractor, extractor_variables)
        p = config.padim
        if not (isinstance(p.reg, (int, float)) and p.reg > 0):
            raise ConfigError(f"padim.reg={p.reg!r} must be a positive number (added to each covariance)")
        if not (isinstance(p.fit_batch_size, int) and p.fit_batch_size >= 1):
            raise ConfigError(f"padim.fit_batch_size={p.fit_batch_size!r} must be a positive integer")

    def fit(self, rng: Array, x_train: Array) -> PadimState:
        """The Gaussians of the whole training split (N, H, W, C) (module doc); pure."""
        self.info.check_batch(x_train)
        n = x_train.shape[0]
        if n < 2:
            raise ConfigError(f"padim needs at least 2 training crops for a covariance, got {n}")
        frozen = self.frozen_state(rng, x_train)
        x, weights = batched(x_train, self.config.padim.fit_batch_size)
        fits, _ = gaussian_fit(lambda xb: self.features(frozen, xb), x, weights, float(self.config.padim.reg))
        params = {name: {"mean": mean, "precision": jnp.linalg.inv(cov)}
                  for name, (mean, cov) in fits.items()}
        return PadimState(step=jnp.zeros((), jnp.int32), params=params, model_state=frozen)

    def _maps(self, state: PadimState, x: Array) -> dict[str, Array]:
        feats = self.features(state.model_state, x)
        return {k: mahalanobis(f, state.params[k]["mean"], state.params[k]["precision"])
                for k, f in feats.items()}

    def _metrics(self, state: PadimState, x: Array) -> dict:
        maps = self._maps(state, x)
        sq = sum(jnp.mean(m ** 2) for m in maps.values()) / len(maps)
        return {"loss": sq, "mean_sq_distance": sq}

    def anomaly_map(self, state: PadimState, x: Array, rng: Array | None = None) -> Array:
        """Mahalanobis distance per location, upsampled to the crop, mean over layers, (N, H, W)."""
        return self.extractor.to_image(self._maps(state, x))

    def anomaly_score(self, state: PadimState, x: Array, rng: Array | None = None) -> Array:
        """The maximum of :meth:`anomaly_map`, (N,)."""
        return self.anomaly_map(state, x).max(axis=(1, 2))


@register("padim")
def make_padim(config: ml_collections.ConfigDict, info: DataInfo) -> PaDiM:
    """Factory registered as "padim": loads the frozen extractor, builds the Method."""
    return PaDiM(config, info, *build_extractor(config, info))
