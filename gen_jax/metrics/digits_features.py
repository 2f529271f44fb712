"""An offline feature network for the 8x8 digits: FID's role, played by a small CNN.

A 3-conv classifier trained on the digits training split (1257 images) by one
deterministic command, shipped as ``gen_jax/metrics/assets/digits_cnn.npz``
(~90k parameters)::

    python -m gen_jax.metrics.train_digits_cnn           # retrains and rewrites the file

Its 128-d penultimate features give "digits-FD" (the Fréchet distance), KID
and precision/recall/density/coverage; its softmax gives a classifier score
(the Inception Score with this classifier) and the share of samples in each
class. Inputs are images with intensities in [0, 1] (the 17 levels / 16):
:func:`to_unit_interval` maps a config's samples there.
"""

from __future__ import annotations

import functools
from pathlib import Path

import flax.linen as nn
import jax
import ml_collections
import numpy as np
import optax
import scipy.special
from numpy.typing import ArrayLike

from gen_jax.errors import DataError
from gen_jax.value_range import ValueRange

ASSET = Path(__file__).resolve().parent / "assets" / "digits_cnn.npz"
FEATURE_DIM = 128
NUM_CLASSES = 10
# The training recipe: changing any of these changes the shipped file.
TRAIN_SEED = 0
TRAIN_STEPS = 1500
TRAIN_BATCH = 128
LEARNING_RATE = 2e-3
WEIGHT_DECAY = 1e-4


class DigitsCNN(nn.Module):
    """8x8x1 -> conv32 -> conv64/2 -> conv64/2 -> dense 128 (features) -> 10 logits."""

    @nn.compact
    def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        x = nn.relu(nn.Conv(32, (3, 3), name="conv1")(x))
        x = nn.relu(nn.Conv(64, (3, 3), (2, 2), name="conv2")(x))  # 4x4
        x = nn.relu(nn.Conv(64, (3, 3), (2, 2), name="conv3")(x))  # 2x2
        feats = nn.relu(nn.Dense(FEATURE_DIM, name="fc")(x.reshape(x.shape[0], -1)))
        return feats, nn.Dense(NUM_CLASSES, name="head")(feats)


def digits_split01(split: str) -> tuple[np.ndarray, np.ndarray]:
    """The digits split as float32 images in [0, 1] (levels / 16) and int32 labels."""
    from gen_jax.data.sources import get_source

    source = get_source(ml_collections.ConfigDict({"name": "digits", "classes": ()}), split)
    x, y = source.get(np.arange(len(source)))
    return np.asarray(x, np.float32) / (source.info.num_levels - 1), np.asarray(y, np.int32)


def _shift(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Random translations by up to one pixel (zero fill): the only augmentation."""
    out = np.zeros_like(x)
    dy, dx = rng.integers(-1, 2, size=2)
    src = x[:, max(0, -dy):8 - max(0, dy), max(0, -dx):8 - max(0, dx)]
    out[:, max(0, dy):max(0, dy) + src.shape[1], max(0, dx):max(0, dx) + src.shape[2]] = src
    return out


def train_digits_cnn(steps: int = TRAIN_STEPS, seed: int = TRAIN_SEED) -> tuple[dict, dict]:
    """Trains the CNN on the digits training split (deterministic for a seed; ~10 s on CPU).

    Args:
      steps: Adam steps of batch 128.
      seed: the init / batch-order / augmentation seed.

    Returns:
      (params, info) where info has the test and val accuracy and the recipe.
    """
    x, y = digits_split01("train")
    model = DigitsCNN()
    params = model.init(jax.random.key(seed), x[:1])["params"]
    opt = optax.adamw(optax.cosine_decay_schedule(LEARNING_RATE, steps), weight_decay=WEIGHT_DECAY)
    opt_state = opt.init(params)

    @jax.jit
    def step(params, opt_state, xb, yb):
        def loss_fn(p):
            _, logits = model.apply({"params": p}, xb)
            return optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean()

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = opt.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    rng = np.random.default_rng(seed)
    for _ in range(steps):
        idx = rng.choice(len(x), TRAIN_BATCH, replace=False)
        params, opt_state, _ = step(params, opt_state, _shift(x[idx], rng), y[idx])
    params = jax.device_get(params)
    net = DigitsFeatureNet(params)
    info = {f"{s}_accuracy": float((net.predict(digits_split01(s)[0]) == digits_split01(s)[1]).mean())
            for s in ("train", "val", "test")}
    return params, info | {"steps": steps, "seed": seed}


def _flatten(tree: dict, prefix: str = "") -> dict[str, np.ndarray]:
    out = {}
    for k, v in tree.items():
        key = f"{prefix}/{k}" if prefix else k
        out.update(_flatten(v, key) if isinstance(v, dict) else {key: np.asarray(v)})
    return out


def save_params(path: str | Path, params: dict, info: dict) -> None:
    """Writes params (flat "module/leaf" keys) and the info numbers ("info/<name>") to an .npz."""
    flat = _flatten(params) | {f"info/{k}": np.asarray(v) for k, v in info.items()}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        np.savez(f, **flat)


def load_params(path: str | Path = ASSET) -> tuple[dict, dict]:
    """Reads (params, info) written by :func:`save_params`."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"the digits feature network {path} is missing; recreate it with "
                        "`python -m gen_jax.metrics.train_digits_cnn`")
    params: dict = {}
    info = {}
    with np.load(path) as z:
        for key in z.files:
            if key.startswith("info/"):
                info[key[5:]] = z[key].item()
                continue
            node = params
            *parents, leaf = key.split("/")
            for p in parents:
                node = node.setdefault(p, {})
            node[leaf] = z[key]
    return params, info


class DigitsFeatureNet:
    """The trained CNN: penultimate features, class probabilities and predictions.

    All methods take (N, 8, 8, 1) images (or (N, 8, 8)) with intensities in [0, 1].
    """

    def __init__(self, params: dict | None = None):
        self.params = load_params()[0] if params is None else params
        model = DigitsCNN()
        self._apply = jax.jit(lambda p, x: model.apply({"params": p}, x))

    def _check(self, images: ArrayLike) -> np.ndarray:
        x = np.asarray(images, np.float32)
        if x.ndim == 3:
            x = x[..., None]
        if x.shape[1:] != (8, 8, 1):
            raise DataError(f"digits feature network takes (N, 8, 8, 1) images, got shape {x.shape}")
        if not np.isfinite(x).all():
            raise DataError("digits images contain non-finite values")
        return x

    def features_and_probs(self, images: ArrayLike, batch: int = 1000) -> tuple[np.ndarray, np.ndarray]:
        """(N, 128) float64 features and (N, 10) class probabilities."""
        x = self._check(images)
        feats, probs = [], []
        for s in range(0, len(x), batch):
            chunk = x[s:s + batch]
            if len(chunk) < batch and len(x) > batch:  # one compiled shape: pad the last chunk
                chunk = np.concatenate([chunk, np.zeros((batch - len(chunk), 8, 8, 1), np.float32)])
            f, logits = self._apply(self.params, chunk)
            n = min(batch, len(x) - s)
            feats.append(np.asarray(f, np.float64)[:n])
            probs.append(scipy.special.softmax(np.asarray(logits, np.float64)[:n], axis=1))
        return np.concatenate(feats), np.concatenate(probs)

    def predict(self, images: ArrayLike) -> np.ndarray:
        """(N,) int predicted digit."""
        return self.features_and_probs(images)[1].argmax(1)


@functools.lru_cache(maxsize=1)
def default_net() -> DigitsFeatureNet:
    """The shipped network, loaded once per process."""
    return DigitsFeatureNet()


def classify_digits(images: ArrayLike, value_range: tuple[float, float] = (0.0, 1.0)) -> np.ndarray:
    """Predicted digit (0-9) of each 8x8 image, by the shipped CNN.

    Args:
      images: (N, 8, 8, 1) or (N, 8, 8) images with values in ``value_range``.
      value_range: the images' (low, high), mapped linearly onto [0, 1].

    Returns:
      (N,) int labels.
    """
    lo, hi = value_range
    return default_net().predict((np.asarray(images, np.float32) - lo) / (hi - lo))


def to_unit_interval(x: ArrayLike, data: ml_collections.ConfigDict, num_levels: int) -> np.ndarray:
    """Maps images as a Method sees them (``config.data`` preprocessing) to intensities in [0, 1]
    on the level / (L - 1) scale of the raw data, clipped.

    Uniformly dequantized data y = lo + (hi - lo) (level + u) / L is mapped
    back through level = y' L - 1/2 (the bin centre), so samples of dequantized
    and plain models land on the same scale as the real data.
    """
    vr = ValueRange(*data.value_range, num_levels)
    u = vr.to_unit(np.asarray(x, np.float64))
    if data.dequantize == "uniform":
        u = vr.level_to_unit(u * num_levels - 0.5)
    return np.clip(u, 0.0, 1.0).astype(np.float32)
