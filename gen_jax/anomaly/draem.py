"""DRAEM (Zavrtanik et al., 2021, "DRAEM - A discriminatively trained reconstruction
embedding for surface anomaly detection"), registered as "draem".

Trained on good images only, with anomalies it simulates itself:

- Simulation (:func:`simulate_anomalies`, deterministic from a key): a Perlin-noise
  map (:func:`perlin_noise`; lattice resolution 2^k per axis, k uniform in
  0..``perlin_scales``-1, rotated by an angle in [-90, 90] degrees) thresholded at
  0.5 is the mask M; inside it the image is replaced by a crop of another image A
  (from a bank of bundled photos that are not benchmark categories, randomly
  flipped, rotated, gamma- and brightness-changed, sometimes inverted), blended
  with opacity beta ~ U(0, 0.8): I_a = (1 - M) I + (1 - beta) M A + beta M I. Half
  of the examples are left normal (M = 0), as in the official code. This generator
  shares no code with the benchmark's test defects (gen_jax/anomaly/benchmark.py).
- The reconstructive network (an encoder-decoder without skips) maps I_a back to
  I: loss L2 + (1 - SSIM) (gen_jax/anomaly/ssim.py; its 11 px window, or on images
  smaller than that the largest odd window that fits, e.g. 7 px on 8x8 digits).
- The discriminative network (a U-Net) sees the concatenation of the
  reconstruction and I_a and segments M: focal loss (gamma 2) on its two-class
  softmax. Gradients of the focal loss reach both networks, as in the official code.
- Anomaly map: the softmax probability of "anomalous" per pixel; image score: the
  maximum of that map mean-filtered over ``draem.score_window`` pixels (the
  official 21 px at 256 px images; zero padding counted, as torch's avg_pool2d).

Differences from the official code, for small CPU runs: GroupNorm instead of
BatchNorm (no running statistics in the state), configurable widths and depths
(the paper: 128-wide reconstructive and 64-wide 6-level discriminative nets),
photos of scikit-image / scikit-learn instead of DTD as the anomaly source, and the
focal loss without its 1e-5 label smoothing.

DRAEM is a detector, not a generative model: ``sample`` returns draws of its
training simulator on the good crops it keeps from ``init`` (what the
discriminative network is trained on), so the runtime's sample grids show them.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from gen_jax.anomaly.ssim import ssim
from gen_jax.data import DataInfo
from gen_jax.errors import ConfigError
from gen_jax.nn import Conv
from gen_jax.registry import register
from gen_jax.state import TrainState, make_optimizer
from gen_jax.steps import make_eval_step, make_train_step
from gen_jax.value_range import ValueRange

# Bundled photos used as anomaly texture (none is a benchmark category).
ANOMALY_SOURCES = ("astronaut", "camera", "chelsea", "coffee", "coins", "ihc", "moon", "rocket",
                   "china", "flower")
PERLIN_THRESHOLD = 0.5
SSIM_WINDOW = 11  # px, the SSIM loss's Gaussian window (sigma 1.5); smaller images: ssim_window
MAX_BETA = 0.8


# ----------------------------------------------------------------------------- simulation

def _fade(t: jax.Array) -> jax.Array:
    return t * t * t * (t * (t * 6 - 15) + 10)


def perlin_noise(key: jax.Array, shape: tuple[int, int], res: jax.Array, angle: jax.Array,
                 max_res: int) -> jax.Array:
    """2-D Perlin noise scaled by sqrt(2) (values in [-1, 1]), as the official
    ``rand_perlin_2d_np``, on a lattice of ``res`` = (rows, cols) cells over the image,
    periodic, sampled at pixel coordinates rotated by ``angle`` about the centre.

    Args:
      key: draws the lattice's unit gradients.
      shape: (H, W) of the map.
      res: int (2,) cells per axis (traced; at most ``max_res``).
      angle: rotation in radians (traced).
      max_res: static bound of ``res`` (the gradient table's size).
    """
    theta = jax.random.uniform(key, (max_res, max_res), maxval=2 * math.pi)
    return _perlin(theta, shape, res, angle)


def _perlin(theta: jax.Array, shape: tuple[int, int], res: jax.Array, angle: jax.Array) -> jax.Array:
    """:func:`perlin_noise` given the lattice's gradient angles ``theta``."""
    h, w = shape
    grads = jnp.stack([jnp.cos(theta), jnp.sin(theta)], -1)
    rr, cc = jnp.meshgrid(jnp.arange(h) - (h - 1) / 2, jnp.arange(w) - (w - 1) / 2, indexing="ij")
    cos, sin = jnp.cos(angle), jnp.sin(angle)
    u = (cos * rr - sin * cc + h / 2) * res[0] / h
    v = (sin * rr + cos * cc + w / 2) * res[1] / w
    i0, j0 = jnp.floor(u), jnp.floor(v)
    fu, fv = u - i0, v - j0
    i0, j0 = i0.astype(jnp.int32), j0.astype(jnp.int32)

    def dot(di, dj):
        g = grads[(i0 + di) % res[0], (j0 + dj) % res[1]]
        return g[..., 0] * (fu - di) + g[..., 1] * (fv - dj)

    t, s = _fade(fu), _fade(fv)
    n0 = dot(0, 0) * (1 - t) + dot(1, 0) * t
    n1 = dot(0, 1) * (1 - t) + dot(1, 1) * t
    return math.sqrt(2.0) * (n0 * (1 - s) + n1 * s)


def _augment_sources(key: jax.Array, bank: jax.Array, n: int, shape: tuple[int, int, int], lo: float,
                     hi: float) -> jax.Array:
    """``n`` random crops of random bank images, flipped / transposed / recoloured (in [lo, hi])."""
    k_img, k_pos, k_flip, k_gamma, k_inv, k_gain = jax.random.split(key, 6)
    h, w, _ = shape
    which = jax.random.randint(k_img, (n,), 0, bank.shape[0])
    pos = jax.random.randint(k_pos, (n, 2), 0, jnp.array(bank.shape[1:3]) - jnp.array([h, w]) + 1)
    flips = jax.random.bernoulli(k_flip, 0.5, (n, 3))
    gamma = jnp.exp(jax.random.uniform(k_gamma, (n,), minval=-0.7, maxval=0.7))
    invert = jax.random.bernoulli(k_inv, 0.5, (n,))
    gain_shift = jax.random.uniform(k_gain, (n, 2), minval=jnp.array([0.7, -0.2]),
                                    maxval=jnp.array([1.3, 0.2]))

    def one(i, p, f, g, inv, gs):
        a = jax.lax.dynamic_slice(bank[i], (p[0], p[1], 0), (h, w, bank.shape[-1]))
        a = (a - lo) / (hi - lo)  # [0, 1] for the colour changes
        if h == w:  # with the two flips: any of the 8 rotations / reflections of the square
            a = jnp.where(f[0], jnp.swapaxes(a, 0, 1), a)
        a = jnp.where(f[1], a[::-1], a)
        a = jnp.where(f[2], a[:, ::-1], a)
        a = jnp.clip(a, 0.0, 1.0) ** g
        a = jnp.where(inv, 1.0 - a, a)
        return lo + (hi - lo) * jnp.clip(a * gs[0] + gs[1], 0.0, 1.0)

    return jax.vmap(one)(which, pos, flips, gamma, invert, gain_shift)


def simulate_anomalies(key: jax.Array, x: jax.Array, bank: jax.Array, value_range: tuple[float, float],
                       perlin_scales: int, normal_prob: float = 0.5) -> tuple[jax.Array, jax.Array]:
    """DRAEM's training anomalies on a batch of good images (module doc).

    Args:
      key: the draw.
      x: (N, H, W, C) good images in ``value_range``.
      bank: (K, Hb, Wb, C) anomaly-source images in ``value_range``, Hb >= H, Wb >= W.
      value_range: (lo, hi) of the data.
      perlin_scales: lattice resolutions 2^0 .. 2^(perlin_scales - 1) per axis.
      normal_prob: probability that an example is left without an anomaly.

    Returns:
      (augmented images like ``x``, masks (N, H, W) float32 in {0, 1}).
    """
    n, h, w, _ = x.shape
    lo, hi = value_range
    max_res = 2 ** (perlin_scales - 1)
    k_noise, k_res, k_angle, k_src, k_beta, k_normal = jax.random.split(key, 6)
    theta = jax.random.uniform(k_noise, (n, max_res, max_res), maxval=2 * math.pi)
    res = 2 ** jax.random.randint(k_res, (n, 2), 0, perlin_scales)
    angle = jax.random.uniform(k_angle, (n,), minval=-math.pi / 2, maxval=math.pi / 2)
    noise = jax.vmap(lambda t, r, a: _perlin(t, (h, w), r, a))(theta, res, angle)
    anomalous = ~jax.random.bernoulli(k_normal, normal_prob, (n, 1, 1))
    mask = ((noise > PERLIN_THRESHOLD) & anomalous).astype(x.dtype)
    source = _augment_sources(k_src, bank, n, x.shape[1:], lo, hi)
    beta = jax.random.uniform(k_beta, (n, 1, 1, 1), maxval=MAX_BETA)
    m = mask[..., None]
    return (1 - m) * x + (1 - beta) * m * source + beta * m * x, mask


# ----------------------------------------------------------------------------- losses, score

def focal_loss(logits: jax.Array, target: jax.Array, gamma: float = 2.0) -> jax.Array:
    """Mean focal loss (Lin et al., 2017) of two-class logits: -(1 - p_t)^gamma log p_t,
    p_t the softmax probability of the target class.

    Args:
      logits: (..., 2) logits (class 1 = anomalous).
      target: (...) labels in {0, 1}.
    """
    log_p = jax.nn.log_softmax(logits, axis=-1)
    log_pt = jnp.where(target > 0.5, log_p[..., 1], log_p[..., 0])
    return jnp.mean(-((1.0 - jnp.exp(log_pt)) ** gamma) * log_pt)


def image_score(maps: jax.Array, window: int) -> jax.Array:
    """Max over pixels of the ``window`` x ``window`` mean of each (N, H, W) map (zero
    padding counted, as torch's avg_pool2d with count_include_pad)."""
    pad = window // 2
    summed = jax.lax.reduce_window(maps, 0.0, jax.lax.add, (1, window, window), (1, 1, 1),
                                   ((0, 0), (pad, pad), (pad, pad)))
    return jnp.max(summed / (window * window), axis=(1, 2))


def ssim_window(h: int, w: int) -> int:
    """The SSIM loss's window on (h, w) images: :data:`SSIM_WINDOW`, or the largest odd
    size that fits images smaller than that (SSIM takes only windows inside the image)."""
    side = min(SSIM_WINDOW, h, w)
    return side if side % 2 else side - 1


# ----------------------------------------------------------------------------- networks

def _norm(ch: int) -> nn.Module:
    return nn.GroupNorm(num_groups=math.gcd(4, ch))


class _Block(nn.Module):
    """Two 3x3 convs, each GroupNorm + ReLU (the official blocks, BatchNorm -> GroupNorm)."""

    features: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        for _ in range(2):
            x = nn.relu(_norm(self.features)(Conv(self.features, (3, 3))(x)))
        return x


def _up(x: jax.Array) -> jax.Array:
    n, h, w, c = x.shape
    return jax.image.resize(x, (n, 2 * h, 2 * w, c), "bilinear")


class ReconstructiveNet(nn.Module):
    """Encoder (blocks with 2x max-pooling) and decoder (bilinear 2x up + blocks), no skips."""

    channels: Sequence[int]
    out_channels: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        for i, ch in enumerate(self.channels):
            x = _Block(ch)(x if i == 0 else nn.max_pool(x, (2, 2), (2, 2)))
        for ch in reversed(self.channels[:-1]):
            x = _Block(ch)(_up(x))
        return Conv(self.out_channels, (3, 3))(x)


class DiscriminativeNet(nn.Module):
    """A U-Net on (reconstruction, input) concatenated: two logits per pixel."""

    channels: Sequence[int]

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        skips = []
        for i, ch in enumerate(self.channels):
            x = _Block(ch)(x if i == 0 else nn.max_pool(x, (2, 2), (2, 2)))
            skips.append(x)
        for ch, skip in zip(reversed(self.channels[:-1]), reversed(skips[:-1]), strict=False):
            x = _Block(ch)(jnp.concatenate([_up(x), skip], -1))
        return Conv(2, (3, 3))(x)


# ----------------------------------------------------------------------------- the Method

class DRAEM:
    """The DRAEM Method (gen_jax.registry.Method, HasAnomalyScore, HasAnomalyMap,
    HasReconstruct). ``bank``: the anomaly-source images (K, Hb, Wb, C) in the data's
    value range, handed in by the factory (the Method reads no file)."""

    def __init__(self, config: ml_collections.ConfigDict, info: DataInfo, bank: np.ndarray):
        self.config, self.info = config, info
        d, m = config.draem, config.model
        if info.kind != "image":
            raise ConfigError(f"draem needs image data; {info.name!r} is {info.kind} data")
        h, w, c = info.shape
        depth = max(len(m.recon_channels), len(m.disc_channels))
        if not (m.recon_channels and m.disc_channels) or h % 2 ** (depth - 1) or w % 2 ** (depth - 1):
            raise ConfigError(f"draem: images {h}x{w} must be divisible by 2^(levels - 1) = "
                              f"{2 ** (depth - 1)} (model.recon_channels={tuple(m.recon_channels)}, "
                              f"model.disc_channels={tuple(m.disc_channels)})")
        if not 1 <= d.perlin_scales or 2 ** (d.perlin_scales - 1) > min(h, w):
            top = int(math.log2(min(h, w))) + 1
            raise ConfigError(f"draem.perlin_scales={d.perlin_scales} must be in 1..{top}")
        if not (d.score_window % 2 == 1 and 1 <= d.score_window <= min(h, w)):
            raise ConfigError(f"draem.score_window={d.score_window} must be odd and at most {min(h, w)}")
        if not 0.0 <= d.normal_prob < 1.0:
            raise ConfigError(f"draem.normal_prob={d.normal_prob} must be in [0, 1)")
        if bank.ndim != 4 or bank.shape[1] < h or bank.shape[2] < w or bank.shape[3] != c:
            raise ConfigError(f"draem: anomaly-source bank {bank.shape} does not fit images {info.shape}")
        self.value_range = ValueRange.from_config(config.data, info)
        self.bank = jnp.asarray(bank, jnp.float32)
        self.recon_net = ReconstructiveNet(tuple(m.recon_channels), c)
        self.disc_net = DiscriminativeNet(tuple(m.disc_channels))
        self.tx = make_optimizer(config.optim, config.train.num_steps)

    @property
    def _range(self) -> tuple[float, float]:
        return float(self.value_range.lo), float(self.value_range.hi)

    def simulate(self, rng: jax.Array, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        """:func:`simulate_anomalies` with this config's bank and settings."""
        d = self.config.draem
        return simulate_anomalies(rng, x, self.bank, self._range, d.perlin_scales, d.normal_prob)

    def _forward(self, params: Any, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        rec = self.recon_net.apply({"params": params["recon"]}, x)
        logits = self.disc_net.apply({"params": params["disc"]}, jnp.concatenate([rec, x], -1))
        return rec, logits

    def loss_fn(self, params: Any, model_state: Any, batch: dict, rng: jax.Array, train: bool):
        """L2 + (1 - SSIM) of the reconstruction of the simulated image against the good
        one, plus the focal loss of the segmentation against the simulated mask."""
        x = batch["x"]
        x_aug, mask = self.simulate(rng, x)
        rec, logits = self._forward(params, x_aug)
        lo, hi = self._range
        l2 = jnp.mean((rec - x) ** 2)
        ssim_loss = 1.0 - jnp.mean(ssim(rec, x, hi - lo, window=ssim_window(*x.shape[1:3])))
        focal = focal_loss(logits, mask, self.config.draem.focal_gamma)
        terms = {"l2": l2, "ssim_loss": ssim_loss, "focal": focal, "mask_fraction": jnp.mean(mask)}
        return l2 + ssim_loss + focal, (terms, model_state)

    # -- the Method contract ---------------------------------------------------

    def init(self, rng: jax.Array, example_batch: dict) -> TrainState:
        x = jnp.asarray(example_batch["x"])
        self.info.check_batch(x)
        k_rec, k_disc = jax.random.split(rng)
        rec_params = self.recon_net.init(k_rec, x)["params"]
        disc_params = self.disc_net.init(k_disc, jnp.concatenate([x, x], -1))["params"]
        # Good crops kept for ``sample`` (simulated anomalies on them).
        return TrainState.create({"recon": rec_params, "disc": disc_params}, self.tx,
                                 self.config.train.ema_decay, model_state={"reference": x})

    def train_step(self, state: TrainState, batch: dict, rng: jax.Array):
        return make_train_step(self.loss_fn)(state, batch, rng)

    def eval_step(self, state: TrainState, batch: dict, rng: jax.Array) -> dict:
        return make_eval_step(self.loss_fn)(state, batch, rng)

    def sample(self, state: TrainState, rng: jax.Array, num: int) -> jax.Array:
        """Simulated anomalies on the kept good crops (module doc), (num, H, W, C)."""
        ref = state.model_state["reference"]
        return self.simulate(rng, ref[jnp.arange(num) % ref.shape[0]])[0]

    # -- capabilities ----------------------------------------------------------

    def reconstruct(self, state: TrainState, x: jax.Array, rng: jax.Array | None = None) -> jax.Array:
        """The reconstructive network's output, clipped to the value range; ``rng`` unused."""
        rec = self.recon_net.apply({"params": state.eval_params["recon"]}, x)
        return self.value_range.clip(rec)

    def anomaly_map(self, state: TrainState, x: jax.Array, rng: jax.Array | None = None) -> jax.Array:
        """P(anomalous) per pixel from the discriminative network, (N, H, W); ``rng`` unused."""
        logits = self._forward(state.eval_params, x)[1]
        return jax.nn.softmax(logits, axis=-1)[..., 1]

    def anomaly_score(self, state: TrainState, x: jax.Array, rng: jax.Array | None = None) -> jax.Array:
        """Max of the mean-filtered anomaly map (:func:`image_score`), (N,)."""
        return image_score(self.anomaly_map(state, x), self.config.draem.score_window)


@functools.lru_cache(maxsize=4)
def anomaly_source_bank(side: int, channels: int, value_range: tuple[float, float]) -> np.ndarray:
    """The :data:`ANOMALY_SOURCES` photos, centre-cropped square and resized to ``side``,
    with ``channels`` channels (1 = grayscale), scaled to ``value_range``: (K, side, side, C)."""
    from gen_jax.data import bundled

    files = bundled.bundled_images()
    images = []
    for name in ANOMALY_SOURCES:
        if name not in files:
            continue
        image = bundled.read_image(files[name], grayscale=channels == 1)
        h, w = image.shape[:2]
        s = min(h, w)
        image = image[(h - s) // 2:(h - s) // 2 + s, (w - s) // 2:(w - s) // 2 + s]
        images.append(bundled.resize(image, side, side))
    if not images:
        raise ConfigError("draem: none of the bundled anomaly-source images is installed "
                          "(pip install -r requirements.txt)")
    lo, hi = value_range
    return (lo + (hi - lo) * np.stack(images).astype(np.float32) / 255.0)


@register("draem")
def make_draem(config: ml_collections.ConfigDict, info: DataInfo) -> DRAEM:
    """Factory registered as "draem": builds the anomaly-source bank (images twice the
    crop side) and the Method."""
    side = 2 * max(info.shape[:2])
    bank = anomaly_source_bank(side, info.shape[-1], tuple(config.data.value_range))
    return DRAEM(config, info, bank)
