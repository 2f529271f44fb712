"""Normalizing flows on frozen pretrained features: FastFlow (registered "fastflow") and
DifferNet ("differnet"), and the frozen feature extractor they share with the PaDiM
baseline (gen_jax/anomaly/padim.py).

Features (:class:`FrozenFeatures`, ``config.features``): the FID Inception network
(gen_jax/metrics/inception.py, the weights that ship with the install, never trained)
run on the crop resized to ``features.input_size`` pixels, its intermediate outputs
``features.layers`` (e.g. "Conv2d_4a_3x3", 192 channels at stride 4; "Mixed_5d", 288
at stride 8) taken with ``InceptionV3(capture=...)``. ``features.num_channels`` > 0
keeps a random subset of that many channels per layer (PaDiM's random dimension
reduction), drawn once from the init key and kept in the state. The network's
variables live in ``TrainState.model_state`` (no optimizer sees them) and pass
through ``stop_gradient``. ``features.network="tiny"`` is a two-conv random network
with a fixed key, a stand-in that keeps unit tests fast; results use "inception".

Feature map -> image map (:func:`upsample_matrix`): feature location k of a layer is
centred on resized-input pixel ``first + stride * k`` (the receptive-field centre of
the valid convolutions and pools before it, :data:`INCEPTION_GEOMETRY`), which is crop
pixel ``(first + stride k + 0.5) crop / input_size - 0.5``; the image map is the linear
interpolation between those centres (clamped at the ends), per axis: A M A^T.

FastFlow (Yu et al., 2021, "FastFlow: Unsupervised Anomaly Detection and Localization
via 2D Normalizing Flows"): per layer, a 2-D flow: an actnorm per location
(:class:`LocationNorm`, see there why), then ``model.steps_per_level`` affine couplings of the first
or second half of the channels (alternating: a fixed swap permutation, as the official
code's blocks permute) whose conditioner is conv k x k -> ReLU -> conv k x k -> ReLU ->
the family's zero-initialised output layer, k = 3 or 1 (the paper's 3x3 / 1x1 subnets,
:class:`FeatureMapFlow`). The coupling (:class:`LocalAffineCoupling`)
is the family's AffineCoupling (tanh-bounded scale, gen_jax/flows/couplings.py) with
its log-determinant kept per location: every layer's Jacobian is triangular with
diagonal blocks per location, so log|det| = sum over locations of a per-location term,
and the per-location negative log-likelihood
  NLL(h, w) = -log N(z[h, w, :]; 0, I) - logdet(h, w)
sums to the exact NLL of the whole feature map. With ``fastflow.position_frequencies`` F
> 0 every coupling's conditioner also sees a sinusoidal encoding of the location (4F
channels; CFLOW-AD's positional condition, Gudovskiy et al., 2022). Both depart from the
paper, whose flow of convolutions is the same density at every location: the frozen
network's features near the crop's border differ from those inside (padding). The
LocationNorm is set from the whole training split (:meth:`FastFlow.fit`, which the
runtime calls in place of ``init``): from one 16-crop batch its per-location scales
are noisy (experiments/results/anomaly_flows/README.md). Training loss: that NLL in nats per feature
dimension. Anomaly map (``fastflow.map``, :func:`location_map`): "prob", the official
code's (and anomalib's) -exp(-0.5 mean_c z^2) per location, which leaves out the
log-determinant, or "nll", the per-location NLL per channel; upsampled to the crop and
averaged over layers. Image score: the maximum of the map.

DifferNet (Rudolph et al., 2021, "Same Same But DifferNet"): the feature maps of each
layer at each of ``differnet.input_sizes`` (multi-scale input), average-pooled and
concatenated into one vector; a flow on the vector (the family's actnorm, then tanh
affine couplings with MLP conditioners, halves alternating); loss: NLL per dimension.
It is trained on the 8 rotations / reflections of the crops (one random one per crop and
step: textures have no orientation) and scores an image by the mean NLL over all 8
(the paper: mean over 64 random transforms). Image-level only: no anomaly map.

Neither Method generates images: ``sample`` returns the anomaly maps (FastFlow) or the
transformed copies (DifferNet) of the good crops kept at init, scaled into the value
range, so the runtime's sample grids show what the model sees on defect-free data.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from gen_jax.data import DataInfo
from gen_jax.errors import ConfigError
from gen_jax.flows.bijectors import ActNorm
from gen_jax.flows.couplings import AffineCoupling, MLPTrunk, _Coupling
from gen_jax.likelihood import diag_gaussian_log_prob
from gen_jax.nn import Conv
from gen_jax.nn.precision import full_precision
from gen_jax.registry import register
from gen_jax.state import TrainState, make_optimizer
from gen_jax.steps import make_eval_step, make_train_step
from gen_jax.value_range import ValueRange

Array = jax.Array
NETWORKS = ("inception", "tiny")
MAPS = ("prob", "nll")  # FastFlow's anomaly map per location (location_map)
# (first centre, stride) in resized-input pixels of each InceptionV3 output: valid 3x3
# convs / pools with stride s map output j to the centre s j + 1 of their window.
INCEPTION_GEOMETRY = {
    "Conv2d_1a_3x3": (1, 2), "Conv2d_2a_3x3": (3, 2), "Conv2d_2b_3x3": (3, 2), "MaxPool_3a": (5, 4),
    "Conv2d_3b_1x1": (5, 4), "Conv2d_4a_3x3": (9, 4), "MaxPool_5a": (13, 8), "Mixed_5b": (13, 8),
    "Mixed_5c": (13, 8), "Mixed_5d": (13, 8), "Mixed_6a": (21, 16), "Mixed_6b": (21, 16),
    "Mixed_6c": (21, 16), "Mixed_6d": (21, 16), "Mixed_6e": (21, 16), "Mixed_7a": (37, 32),
    "Mixed_7b": (37, 32), "Mixed_7c": (37, 32)}
TINY_GEOMETRY = {"conv1": (1, 2), "conv2": (3, 4)}
ACTNORM_EPS = 1e-2  # added to each channel's std by the flows' data-initialised actnorm
NUM_DIHEDRAL = 8  # rotations by 0/90/180/270 degrees, with and without a transpose


# ----------------------------------------------------------------------------- features

class TinyFeatures(nn.Module):
    """A test stand-in for Inception: two valid 3x3 convs of stride 2 with ReLU (taps
    "conv1", "conv2"; geometry :data:`TINY_GEOMETRY`), random weights from a fixed key."""

    capture: tuple[str, ...]

    @nn.compact
    def __call__(self, x: Array) -> dict[str, Array]:
        out = {}
        h = 2.0 * x - 1.0
        for name, ch in (("conv1", 8), ("conv2", 16)):
            h = nn.relu(nn.Conv(ch, (3, 3), (2, 2), padding="VALID", name=name)(h))
            out[name] = h
        return {k: out[k] for k in self.capture}


@functools.lru_cache(maxsize=4)
def _tiny_variables(channels: int) -> dict:
    """Both layers' variables (whichever are taken), from the fixed key."""
    net = TinyFeatures(tuple(TINY_GEOMETRY))
    return jax.jit(net.init)(jax.random.key(0), jnp.zeros((1, 16, 16, channels)))


def upsample_matrix(num: int, first: float, stride: float, input_size: int, crop: int) -> np.ndarray:
    """(crop, num) float32 A: row p interpolates crop pixel p linearly between the crop
    coordinates of the feature centres ``first + stride * k`` (resized-input pixels;
    module doc), clamped to the first / last centre outside them. A map M (num, num)
    becomes A M A^T on the crop's pixels."""
    centres = (first + stride * np.arange(num) + 0.5) * crop / input_size - 0.5
    p = np.arange(crop, dtype=np.float64)
    j = np.clip(np.searchsorted(centres, p, side="right"), 1, max(num - 1, 1))
    a = np.zeros((crop, num))
    if num == 1:
        a[:, 0] = 1.0
        return a.astype(np.float32)
    w = np.clip((p - centres[j - 1]) / (centres[j] - centres[j - 1]), 0.0, 1.0)
    a[np.arange(crop), j - 1] = 1.0 - w
    a[np.arange(crop), j] += w
    return a.astype(np.float32)


@full_precision
class FrozenFeatures:
    """The frozen extractor of ``config.features`` (module doc): its network, the layers
    taken, the crop geometry, and the variables (loaded by the factory, kept in the state).
    It computes in float32 under every ``runtime.precision`` (gen_jax/nn/precision.py):
    no gradient reaches it, and PaDiM's and the nearest-neighbour Method's statistics of
    its features are closed-form fits that bfloat16 would blur.

    Args:
      config: the experiment config (``features`` section; ``eval.inception_path``).
      info: the image data (grayscale crops are repeated into Inception's RGB).
    """

    def __init__(self, config: ml_collections.ConfigDict, info: DataInfo):
        f = config.features
        if info.kind != "image":
            raise ConfigError(f"{config.method} needs image data; {info.name!r} is {info.kind} data")
        if f.network not in NETWORKS:
            raise ConfigError(f"features.network={f.network!r}; known: {', '.join(NETWORKS)}")
        self.geometry = INCEPTION_GEOMETRY if f.network == "inception" else TINY_GEOMETRY
        layers = tuple(f.layers)
        bad = [name for name in layers if name not in self.geometry]
        if not layers or bad or len(set(layers)) != len(layers):
            raise ConfigError(f"features.layers={layers} must name distinct layers of {f.network!r}: "
                              f"{', '.join(self.geometry)}")
        minimum = 75 if f.network == "inception" else 8
        if not isinstance(f.input_size, int) or f.input_size < minimum:
            raise ConfigError(f"features.input_size={f.input_size!r} must be an integer >= {minimum} "
                              f"for {f.network!r}")
        if not isinstance(f.num_channels, int) or f.num_channels < 0:
            raise ConfigError(f"features.num_channels={f.num_channels!r} must be 0 (all) or a positive "
                              "integer")
        self.network, self.layers, self.input_size = f.network, layers, f.input_size
        self.num_channels = f.num_channels
        self.inception_path = config.eval.get("inception_path", "")
        self.crop = info.shape[0]
        self.in_channels = 3 if f.network == "inception" else info.shape[-1]
        self.value_range = ValueRange.from_config(config.data, info)
        if f.network == "inception":
            from gen_jax.metrics.inception import InceptionV3

            self.net = InceptionV3(logits=False, resize=False, capture=layers)
        else:
            self.net = TinyFeatures(layers)

    def load_variables(self) -> dict:
        """The network's variables: Inception's installed weights (only the layers up to the
        last one taken), or the tiny network's from a fixed key."""
        if self.network == "tiny":
            return _tiny_variables(self.in_channels)
        from gen_jax.metrics.inception import TAPS, load_weights

        variables = load_weights(self.inception_path)[0]
        keep = TAPS[:max(TAPS.index(name) for name in self.layers) + 1]
        return {col: {k: v for k, v in tree.items() if k in keep} for col, tree in variables.items()}

    def raw(self, variables: dict, x: Array, size: int | None = None) -> dict[str, Array]:
        """All channels of every layer taken, (N, h, w, C) per layer name, with the input
        resized to ``size`` (default ``features.input_size``)."""
        u = self.value_range.to_unit(jnp.asarray(x, jnp.float32))
        if u.shape[-1] != self.in_channels:
            u = jnp.repeat(u, self.in_channels, axis=-1)  # grayscale into R, G and B
        n, s = u.shape[0], size or self.input_size
        u = jax.image.resize(u, (n, s, s, self.in_channels), "bilinear", antialias=False)
        # The variables are constants of every loss (no gradient reaches them); the input keeps
        # its gradient (receptive fields are measured with it).
        out = self.net.apply(jax.lax.stop_gradient(variables), u)
        return {name: out[name] for name in self.layers}

    def choose_channels(self, rng: Array, variables: dict) -> dict[str, Array]:
        """Per layer, the indices (sorted) of the channels kept: a random subset of
        ``num_channels`` (all when 0 or more than the layer has)."""
        shapes = jax.eval_shape(self.raw, variables, jax.ShapeDtypeStruct((1, self.crop, self.crop, 1),
                                                                          jnp.float32))
        out = {}
        for i, name in enumerate(self.layers):
            c = shapes[name].shape[-1]
            keep = c if self.num_channels == 0 else min(self.num_channels, c)
            out[name] = jnp.sort(jax.random.permutation(jax.random.fold_in(rng, i), c)[:keep])
        return out

    def __call__(self, variables: dict, channels: dict[str, Array], x: Array,
                 size: int | None = None) -> dict[str, Array]:
        """The kept channels of every layer taken: {name: (N, h, w, c)} (``size``: as :meth:`raw`)."""
        return {k: jnp.take(v, channels[k], axis=-1) for k, v in self.raw(variables, x, size).items()}

    def to_image(self, maps: dict[str, Array], border: int = 0) -> Array:
        """Per-layer maps {name: (N, h, w)} -> their mean on the crop's pixels (N, crop, crop).
        ``border`` > 0: the maps cover only the layer's interior, its full map less that many
        locations on every side (their first centre is ``border`` strides in)."""
        out = 0.0
        for name, m in maps.items():
            first, stride = self.geometry[name.split("@")[0]]  # "layer@r": a channel subset of layer
            first = first + stride * border
            ah = jnp.asarray(upsample_matrix(m.shape[1], first, stride, self.input_size, self.crop))
            aw = jnp.asarray(upsample_matrix(m.shape[2], first, stride, self.input_size, self.crop))
            out = out + jnp.einsum("ph,nhw,qw->npq", ah, m, aw)
        return out / len(maps)


def maps_as_images(maps: Array, value_range: ValueRange, channels: int) -> Array:
    """(N, H, W) maps, each min-max scaled into the value range, as (N, H, W, channels) images."""
    lo, hi = maps.min(axis=(1, 2), keepdims=True), maps.max(axis=(1, 2), keepdims=True)
    u = (maps - lo) / jnp.maximum(hi - lo, 1e-12)
    return jnp.repeat(value_range.from_unit(u)[..., None], channels, axis=-1)


# ----------------------------------------------------------------------------- FastFlow

class KernelTrunk(nn.Module):
    """FastFlow's coupling subnet: conv k x k -> ReLU -> conv k x k -> ReLU (the coupling adds
    its zero-initialised output layer). The convolutions pad by reflection, so that the
    conditioner sees no zeros beside the map's border (which no interior location has)."""

    hidden: int
    kernel: int

    @nn.compact
    def __call__(self, h: Array) -> Array:
        k, p = (self.kernel, self.kernel), self.kernel // 2

        def pad(a: Array) -> Array:
            return jnp.pad(a, ((0, 0), (p, p), (p, p), (0, 0)), mode="reflect") if p else a

        h = nn.relu(Conv(self.hidden, k, padding="VALID")(pad(h)))
        return nn.relu(Conv(self.hidden, k, padding="VALID")(pad(h)))


class LocalAffineCoupling(_Coupling):
    """The flows family's :class:`~gen_jax.flows.couplings.AffineCoupling` (tanh-bounded
    scale, same parameters: the conditioner, ``out`` and ``scale``) returning its
    log-determinant per location, (N, H, W), instead of per example: y is the same and
    the per-location terms sum to the family's log|det| (tested)."""

    @nn.compact
    def __call__(self, x: Array, reverse: bool = False, context: Array | None = None):
        b, theta = self.params_from(x, context, 2)
        scale = self.param("scale", nn.initializers.ones, (x.shape[-1],))
        s = (1 - b) * scale * jnp.tanh(theta[..., 0])
        t = (1 - b) * theta[..., 1]
        if reverse:
            return (x - t) * jnp.exp(-s), -s.sum(-1)
        return x * jnp.exp(s) + t, s.sum(-1)


class LocationNorm(nn.Module):
    """Actnorm per location: y = (x + bias) * exp(log_scale) with a (H, W, C) bias and
    log-scale, initialised so the init batch leaves with zero mean and unit variance at
    every location and channel (std floored at :data:`ACTNORM_EPS`); FastFlow's ``fit``
    sets them from the whole training split instead (:func:`location_moments`). Returns
    (y, log|det| per location (H, W)). Like PaDiM's per-location Gaussians, it absorbs what
    differs from location to location in the frozen features (near the crop's border:
    Inception's padding), which a flow of convolutions, the same density everywhere,
    would score as anomalous."""

    @nn.compact
    def __call__(self, x: Array) -> tuple[Array, Array]:
        bias = self.param("bias", lambda _: -jnp.mean(x, axis=0))
        log_scale = self.param("log_scale", lambda _: -jnp.log(jnp.std(x, axis=0) + ACTNORM_EPS))
        return (x + bias) * jnp.exp(log_scale), log_scale.sum(-1)


class FeatureMapFlow(nn.Module):
    """FastFlow's 2-D flow on one (N, H, W, C) feature map: a :class:`LocationNorm`
    (standardising the features per location and channel), then
    ``num_steps`` :class:`LocalAffineCoupling` steps of the first or second half of the
    channels (alternating), with 3x3 subnets in steps 0, 1, 4, 5, ... and 1x1 subnets in
    steps 2, 3, 6, 7, ..., so each half sees both. Returns (z, log|det| per location
    (N, H, W)).

    One data-initialised normalisation, not an actnorm per step: Inception's ReLU features
    have channels that are (almost) constant on a batch, which a data-initialised actnorm
    scales by 1 / eps; a stack of them multiplies that into an unstable flow (a loss of
    1e22 after 3 steps with one per step, measured)."""

    num_steps: int
    hidden: int
    frequencies: int = 0

    @nn.compact
    def __call__(self, x: Array) -> tuple[Array, Array]:
        n, h, w, _ = x.shape
        context = None
        if self.frequencies:
            pe = positional_encoding(h, w, self.frequencies)
            context = jnp.broadcast_to(pe, (n, *pe.shape)).astype(x.dtype)
        x, logdet = LocationNorm()(x)
        logdet = jnp.broadcast_to(logdet, (n, h, w))
        for i in range(self.num_steps):
            trunk = KernelTrunk(self.hidden, 3 if (i // 2) % 2 == 0 else 1)
            x, ld = LocalAffineCoupling(trunk, "channel", i % 2)(x, context=context)
            logdet = logdet + ld
        return x, logdet


def positional_encoding(h: int, w: int, frequencies: int) -> np.ndarray:
    """(h, w, 4 * frequencies) float32: sin and cos of pi 2^j p for j < ``frequencies``, with p
    the row and the column position scaled to [0, 1] (CFLOW-AD's positional condition)."""
    rows = np.linspace(0.0, 1.0, h)[:, None, None] * np.ones((1, w, 1))
    cols = np.linspace(0.0, 1.0, w)[None, :, None] * np.ones((h, 1, 1))
    f = np.pi * 2.0 ** np.arange(frequencies)
    return np.concatenate([np.sin(rows * f), np.cos(rows * f), np.sin(cols * f), np.cos(cols * f)],
                          -1).astype(np.float32)


def flow_nll(z: Array, logdet: Array) -> Array:
    """A flow's negative log-likelihood under its standard normal base, over the last axis:
    -log N(z; 0, I) - logdet. Per location for a feature map's z (N, H, W, C) and logdet
    (N, H, W); per example for DifferNet's vectors (N, D) and (N,)."""
    return -diag_gaussian_log_prob(z, 0.0, 0.0) - logdet


class MultiLayerFlow(nn.Module):
    """One :class:`FeatureMapFlow` per feature layer: {name: (N, h, w, c)} ->
    {name: (z (N, h, w, c), log|det| per location (N, h, w))}."""

    layers: tuple[str, ...]
    num_steps: int
    hidden: int
    frequencies: int = 0

    @nn.compact
    def __call__(self, feats: dict[str, Array]) -> dict[str, tuple[Array, Array]]:
        return {name: FeatureMapFlow(self.num_steps, self.hidden, self.frequencies, name=f"flow_{name}")(
            feats[name]) for name in self.layers}


def location_map(z: Array, logdet: Array, kind: str) -> Array:
    """The per-location anomaly map (N, h, w) of a flow's output: "prob", the official
    code's -exp(-0.5 mean_c z^2) (the Gaussian density per channel of z, without the
    log-determinant), or "nll", :func:`flow_nll` per channel."""
    if kind == "prob":
        return -jnp.exp(-0.5 * jnp.mean(z ** 2, axis=-1))
    return flow_nll(z, logdet) / z.shape[-1]


def location_moments(features, x: Array, chunk: int = 64) -> dict[str, tuple[Array, Array]]:
    """Per layer, the mean and standard deviation (population) of ``features(x)`` over the
    examples of ``x``, per location and channel ({name: ((h, w, c), (h, w, c))}): ``chunk``
    examples at a time (lax.map; the last chunk is padded with copies of the first example,
    weighted 0), sums of the features and their squares shifted by the first chunk's mean."""
    n = x.shape[0]
    chunk = min(chunk, n)
    pad = -n % chunk
    xs = jnp.concatenate([x, jnp.repeat(x[:1], pad, 0)]).reshape(-1, chunk, *x.shape[1:])
    weights = (jnp.arange(n + pad) < n).astype(jnp.float32).reshape(-1, chunk, 1, 1, 1)
    shift = jax.tree.map(lambda f: f.mean(0), features(xs[0]))

    def sums(args):
        xc, wc = args
        d = jax.tree.map(lambda f, s: f - s, features(xc), shift)
        return jax.tree.map(lambda a: (wc * a).sum(0), d), jax.tree.map(lambda a: (wc * a * a).sum(0), d)

    s1, s2 = jax.lax.map(sums, (xs, weights))
    out = {}
    for name in shift:
        m = s1[name].sum(0) / n
        out[name] = (shift[name] + m, jnp.sqrt(jnp.maximum(s2[name].sum(0) / n - m * m, 0.0)))
    return out


class _FeatureMethod:
    """Shared plumbing of the Methods on frozen features: the extractor, its variables
    (given by the factory), the state's frozen parts and the kept reference crops."""

    def __init__(self, config: ml_collections.ConfigDict, info: DataInfo, extractor: FrozenFeatures,
                 extractor_variables: dict):
        self.config, self.info, self.extractor = config, info, extractor
        self.extractor_variables = extractor_variables
        self.value_range = ValueRange.from_config(config.data, info)

    def frozen_state(self, rng: Array, x: Array) -> dict:
        """The non-trained part of the state: the extractor's variables, the kept channels
        (drawn from ``rng``) and up to 16 reference crops."""
        variables = jax.tree.map(jnp.asarray, self.extractor_variables)
        return {"extractor": variables, "channels": self.extractor.choose_channels(rng, variables),
                "reference": x[:16]}

    def features(self, model_state: dict, x: Array) -> dict[str, Array]:
        return self.extractor(model_state["extractor"], model_state["channels"], x)

    def flow_input(self, model_state: dict, x: Array) -> Any:
        """What the subclass's flow (``self.flow``) takes for the crops ``x``."""
        raise NotImplementedError

    def init(self, rng: Array, example_batch: dict) -> TrainState:
        """The frozen parts from ``rng``'s first key, the flow's parameters from its second
        and the flow's input for the example batch (data-dependent initialisation)."""
        x = jnp.asarray(example_batch["x"])
        self.info.check_batch(x)
        k_channels, k_flow = jax.random.split(rng)
        frozen = self.frozen_state(k_channels, x)
        params = self.flow.init(k_flow, self.flow_input(frozen, x))["params"]
        return TrainState.create(params, self.tx, self.config.train.ema_decay, model_state=frozen)

    def train_step(self, state: TrainState, batch: dict, rng: Array):
        return make_train_step(self.loss_fn)(state, batch, rng)

    def eval_step(self, state: TrainState, batch: dict, rng: Array) -> dict:
        return make_eval_step(self.loss_fn)(state, batch, rng)


class FastFlow(_FeatureMethod):
    """The FastFlow Method (gen_jax.registry.Method, Fits, HasAnomalyScore, HasAnomalyMap)."""

    def __init__(self, config: ml_collections.ConfigDict, info: DataInfo, extractor: FrozenFeatures,
                 extractor_variables: dict):
        super().__init__(config, info, extractor, extractor_variables)
        m = config.model
        if not (isinstance(m.steps_per_level, int) and m.steps_per_level >= 1):
            raise ConfigError(f"model.steps_per_level={m.steps_per_level!r} must be a positive integer")
        if not (isinstance(m.hidden, int) and m.hidden >= 1):
            raise ConfigError(f"model.hidden={m.hidden!r} must be a positive integer")
        freq = config.fastflow.position_frequencies
        if not (isinstance(freq, int) and freq >= 0):
            raise ConfigError(f"fastflow.position_frequencies={freq!r} must be an integer >= 0 (0 = none)")
        if config.fastflow.map not in MAPS:
            raise ConfigError(f"fastflow.map={config.fastflow.map!r}; known: {', '.join(MAPS)}")
        self.flow = MultiLayerFlow(extractor.layers, m.steps_per_level, m.hidden, freq)
        self.tx = make_optimizer(config.optim, config.train.num_steps)

    def _flow(self, params: Any, model_state: dict, x: Array) -> dict[str, tuple[Array, Array]]:
        return self.flow.apply({"params": params}, self.features(model_state, x))

    def loss_fn(self, params: Any, model_state: dict, batch: dict, rng: Array, train: bool):
        """NLL of the feature maps in nats per feature dimension (the mean over layers)."""
        out = self._flow(params, model_state, batch["x"])
        per_dim = [location_map(z, ld, "nll").mean() for z, ld in out.values()]
        loss = sum(per_dim) / len(per_dim)
        return loss, ({"nll_per_dim": loss}, model_state)

    # -- the Method contract ---------------------------------------------------

    def fit(self, rng: Array, x_train: Array) -> TrainState:
        """A fresh state whose :class:`LocationNorm` standardises every location and channel
        over the whole training split ``x_train`` (:func:`location_moments`; the runtime
        calls this in place of :meth:`init`, then trains the couplings)."""
        state = self.init(rng, {"x": x_train})
        moments = location_moments(functools.partial(self.features, state.model_state), x_train)
        params = dict(state.params)
        for name, (mean, std) in moments.items():
            key = f"flow_{name}"
            norm = {"bias": -mean, "log_scale": -jnp.log(std + ACTNORM_EPS)}
            params[key] = {**params[key], "LocationNorm_0": norm}
        return TrainState.create(params, self.tx, self.config.train.ema_decay, model_state=state.model_state)

    def flow_input(self, model_state: dict, x: Array) -> dict[str, Array]:
        """The feature maps of the first 64 crops (:class:`LocationNorm` initialises on them)."""
        return self.features(model_state, x[:64])

    def sample(self, state: TrainState, rng: Array, num: int) -> Array:
        """The anomaly maps of the kept good crops, as images (module doc); ``rng`` unused."""
        ref = state.model_state["reference"]
        maps = self.anomaly_map(state, ref[jnp.arange(num) % ref.shape[0]])
        return maps_as_images(maps, self.value_range, self.info.shape[-1])

    # -- capabilities ----------------------------------------------------------

    def anomaly_map(self, state: TrainState, x: Array, rng: Array | None = None) -> Array:
        """Per layer, :func:`location_map` of kind ``fastflow.map``, upsampled to the crop;
        their mean over layers, (N, H, W); ``rng`` unused."""
        out = self._flow(state.eval_params, state.model_state, x)
        kind = self.config.fastflow.map
        return self.extractor.to_image({k: location_map(z, ld, kind) for k, (z, ld) in out.items()})

    def anomaly_score(self, state: TrainState, x: Array, rng: Array | None = None) -> Array:
        """The maximum of :meth:`anomaly_map` per crop, (N,)."""
        return self.anomaly_map(state, x).max(axis=(1, 2))


# ----------------------------------------------------------------------------- DifferNet

def dihedral(x: Array, k: Array | int) -> Array:
    """The k-th (0..7) rotation / reflection of square NHWC images: transpose when k >= 4,
    then rotate by (k mod 4) quarter turns. ``k`` may be traced (one of 8 branches)."""
    def make(i):
        def branch(a):
            a = jnp.swapaxes(a, 1, 2) if i >= 4 else a
            return jnp.rot90(a, i % 4, axes=(1, 2))
        return branch

    if isinstance(k, int):
        return make(k)(x)
    return jax.lax.switch(k, [make(i) for i in range(NUM_DIHEDRAL)], x)


class VectorFlow(nn.Module):
    """DifferNet's flow on (N, D) vectors: an actnorm, then ``num_steps`` of the family's
    affine couplings with an MLP conditioner, of the first or second half (alternating).
    Returns (z, log|det| per example (N,))."""

    num_steps: int
    hidden: int

    @nn.compact
    def __call__(self, v: Array) -> tuple[Array, Array]:
        v, total = ActNorm(eps=ACTNORM_EPS)(v)
        for i in range(self.num_steps):
            v, ld = AffineCoupling(MLPTrunk((self.hidden,) * 2), "channel", i % 2)(v)
            total = total + ld
        return v, total


class DifferNet(_FeatureMethod):
    """The DifferNet Method (gen_jax.registry.Method, HasAnomalyScore)."""

    def __init__(self, config: ml_collections.ConfigDict, info: DataInfo, extractor: FrozenFeatures,
                 extractor_variables: dict):
        super().__init__(config, info, extractor, extractor_variables)
        m, d = config.model, config.differnet
        if not (isinstance(m.steps_per_level, int) and m.steps_per_level >= 1 and isinstance(m.hidden, int)
                and m.hidden >= 1):
            raise ConfigError(f"model.steps_per_level={m.steps_per_level!r} and "
                              f"model.hidden={m.hidden!r} must be positive integers")
        sizes = tuple(d.input_sizes)
        minimum = 75 if extractor.network == "inception" else 8
        if not sizes or any(not isinstance(s, int) or s < minimum for s in sizes):
            raise ConfigError(f"differnet.input_sizes={sizes} must be integers >= {minimum}")
        if info.shape[0] != info.shape[1]:
            raise ConfigError(f"differnet rotates square crops; got {info.shape[:2]}")
        self.input_sizes = sizes
        self.flow = VectorFlow(m.steps_per_level, m.hidden)
        self.tx = make_optimizer(config.optim, config.train.num_steps)

    def embed(self, model_state: dict, x: Array) -> Array:
        """The pooled multi-scale features (N, D): every layer's kept channels, averaged
        over locations, at every input size (module doc)."""
        parts = []
        for size in self.input_sizes:
            feats = self.extractor(model_state["extractor"], model_state["channels"], x, size)
            parts += [feats[k].mean(axis=(1, 2)) for k in self.extractor.layers]
        return jnp.concatenate(parts, axis=-1)

    def _nll(self, params: Any, model_state: dict, x: Array) -> Array:
        return flow_nll(*self.flow.apply({"params": params}, self.embed(model_state, x)))

    def loss_fn(self, params: Any, model_state: dict, batch: dict, rng: Array, train: bool):
        """NLL per dimension of one random rotation / reflection of each crop."""
        x = batch["x"]
        ks = jax.random.randint(rng, (x.shape[0],), 0, NUM_DIHEDRAL)
        xt = jax.vmap(lambda a, k: dihedral(a[None], k)[0])(x, ks)
        nll = self._nll(params, model_state, xt)
        dim = jax.eval_shape(self.embed, model_state, x).shape[-1]
        loss = nll.mean() / dim
        return loss, ({"nll_per_dim": loss}, model_state)

    def flow_input(self, model_state: dict, x: Array) -> Array:
        return self.embed(model_state, x)

    def sample(self, state: TrainState, rng: Array, num: int) -> Array:
        """Random rotations / reflections of the kept good crops (what the flow is trained on)."""
        ref = state.model_state["reference"]
        x = ref[jnp.arange(num) % ref.shape[0]]
        ks = jax.random.randint(rng, (num,), 0, NUM_DIHEDRAL)
        return jax.vmap(lambda a, k: dihedral(a[None], k)[0])(x, ks)

    def anomaly_score(self, state: TrainState, x: Array, rng: Array | None = None) -> Array:
        """Mean NLL over the 8 rotations / reflections of each crop, (N,); ``rng`` unused."""
        views = jnp.concatenate([dihedral(x, k) for k in range(NUM_DIHEDRAL)])  # one batch of 8N
        nll = self._nll(state.eval_params, state.model_state, views)
        return nll.reshape(NUM_DIHEDRAL, x.shape[0]).mean(axis=0)


# ----------------------------------------------------------------------------- factories

def build_extractor(config: ml_collections.ConfigDict, info: DataInfo) -> tuple[FrozenFeatures, dict]:
    """The extractor of ``config.features`` and its variables."""
    extractor = FrozenFeatures(config, info)
    return extractor, extractor.load_variables()


@register("fastflow")
def make_fastflow(config: ml_collections.ConfigDict, info: DataInfo) -> FastFlow:
    """Factory registered as "fastflow": loads the frozen extractor, builds the Method."""
    return FastFlow(config, info, *build_extractor(config, info))


@register("differnet")
def make_differnet(config: ml_collections.ConfigDict, info: DataInfo) -> DifferNet:
    """Factory registered as "differnet": loads the frozen extractor, builds the Method."""
    return DifferNet(config, info, *build_extractor(config, info))


__all__ = ["DifferNet", "FastFlow", "FeatureMapFlow", "FrozenFeatures", "INCEPTION_GEOMETRY",
           "LocalAffineCoupling", "location_map", "location_moments", "flow_nll", "upsample_matrix"]
