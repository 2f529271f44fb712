"""Real images that ship inside installed wheels: ``faces100``, ``patches``, ``image:<name>``.

scikit-image's wheel bundles photos, textures and 100 LFW faces in
``skimage/data/``; scikit-learn's bundles ``china.jpg`` and ``flower.jpg``. The
files are read straight from the installed package directories (found with
``importlib.util.find_spec``, without importing either package: importing
skimage costs seconds, and its ``skimage.data`` loaders fetch non-bundled files
with pooch). Nothing here touches the network; PNG/JPEG are decoded by Pillow.

Sources (the protocol of gen_jax/data/sources.py: ``info``, ``len``,
``get(indices) -> (uint8 levels, labels)``, ``labels()``):

- ``faces100``: the first 100 images of ``lfw_subset.npy`` (the faces; the other
  100 are LFW background crops), grayscale, 256 levels, resized from 25x25 to
  ``data.image_size`` (default 32; 0 = native 25). A 100-shot set as in the
  DiffAugment / ADA few-shot benchmarks: train, val and test are all the same
  100 faces, since there are no other faces to hold out and those benchmarks
  measure FID against the training images.
- ``patches``: labelled RGB crops of ``data.patch_size`` pixels (default 32)
  from the images of :data:`PATCH_IMAGES` (label = index in that list), each
  resized so its shorter side is ``data.patch_image_side`` (default 256).
  Every image is cut into three disjoint regions (:func:`patch_region`): train
  = left half, val = top of the right half, test = bottom of the right half, so
  no pixel of a test crop is ever seen in training. A split is a fixed table of
  ``data.num_train`` (train) or ``data.num_eval`` (val, test) crops, class-
  balanced, whose positions are drawn from a seed fixed per split: like every
  split of this project it does not move with ``config.seed``. The source
  protocol has no epoch (``get(indices)`` only), so the crops are a pure
  function of the index and the batch iterator makes each batch a pure
  function of (seed, epoch, position) by the order in which it visits the
  table; a larger ``data.num_train`` gives more distinct crops.
- ``image:<name>``: one image for single-image models (SinGAN), by bundled name
  (:func:`bundled_images`: ``astronaut``, ``brick``, ``china``, ...) or as a file
  path (``image:/path/to/photo.png``); RGB (grayscale files stay one channel,
  alpha is dropped), resized so its longer side is ``data.image_size`` (0 =
  native). Every split is that image.
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

import ml_collections
import numpy as np

from gen_jax.data.sources import ArraySource, DataInfo
from gen_jax.errors import ConfigError, DataError

FACES = 100  # lfw_subset.npy: 100 faces, then 100 non-faces
# The images the patches are cut from, in label order: three textures, seven photos.
PATCH_IMAGES = ("brick", "grass", "gravel", "astronaut", "chelsea", "coffee", "rocket",
                "motorcycle_left", "hubble_deep_field", "ihc")
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
# Fixed per-split seeds of the patch crop tables (independent of config.seed).
_PATCH_SPLIT_SEED = {"train": 40_004, "val": 50_005, "test": 60_006}


def _package_dir(package: str, *parts: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise DataError(f"the bundled images ship with {package}, which is not installed: "
                        f"pip install -r requirements.txt")
    return Path(spec.submodule_search_locations[0]).joinpath(*parts)


@functools.lru_cache(maxsize=1)
def bundled_images() -> dict[str, Path]:
    """Name -> file of every PNG/JPEG image bundled in scikit-image's ``data/`` and
    scikit-learn's ``datasets/images/`` (names are file stems, e.g. ``"brick"``)."""
    found = {}
    for package, parts in (("skimage", ("data",)), ("sklearn", ("datasets", "images"))):
        if importlib.util.find_spec(package) is None:
            continue
        folder = _package_dir(package, *parts)
        for path in sorted(folder.iterdir()) if folder.is_dir() else ():
            if path.suffix.lower() in _IMAGE_SUFFIXES:
                found.setdefault(path.stem, path)
    return found


def read_image(path: str | Path, grayscale: bool | None = None) -> np.ndarray:
    """An image file as uint8 HWC: RGB, or one channel for a grayscale file.

    Args:
      path: a PNG/JPEG/... file Pillow can decode.
      grayscale: force one channel (True) or three (False); None keeps the file's
        kind (grayscale files one channel, everything else RGB, alpha dropped).
    """
    from PIL import Image

    try:
        with Image.open(path) as im:
            gray = im.mode in ("L", "I", "I;16", "1") if grayscale is None else grayscale
            array = np.asarray(im.convert("L" if gray else "RGB"))
    except (OSError, ValueError) as e:
        raise DataError(f"cannot read image {str(path)!r}: {e}") from None
    return array[..., None] if array.ndim == 2 else array


def resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bicubic (antialiased when shrinking) resize of a uint8 HWC image, by Pillow."""
    from PIL import Image

    if image.shape[:2] == (height, width):
        return image
    channels = [np.asarray(Image.fromarray(image[..., c]).resize((width, height), Image.BICUBIC))
                for c in range(image.shape[-1])]
    return np.stack(channels, -1)


def _option(data: ml_collections.ConfigDict, key: str, default: int, low: int) -> int:
    value = data.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigError(f"data.{key}={value!r} must be an integer >= {low}")
    return value


# ----------------------------------------------------------------------------- faces100

@functools.lru_cache(maxsize=4)
def faces100_levels(size: int) -> np.ndarray:
    """The 100 LFW faces of ``lfw_subset.npy`` as (100, size, size, 1) uint8 levels.

    The file holds floats in [0, 1] (25x25 crops, already resampled, so not exact
    multiples of 1/255); they are resized in float (bicubic) and then rounded to
    256 levels. ``size`` 0 or 25 keeps the native 25x25.
    """
    from PIL import Image

    path = _package_dir("skimage", "data", "lfw_subset.npy")
    if not path.is_file():
        raise DataError(f"{path} is missing: reinstall scikit-image (pip install -r requirements.txt)")
    faces = np.load(path)[:FACES].astype(np.float32)
    if size and size != faces.shape[1]:
        faces = np.stack([np.asarray(Image.fromarray(f, mode="F").resize((size, size), Image.BICUBIC))
                          for f in faces])
    return np.clip(np.round(faces * 255.0), 0, 255).astype(np.uint8)[..., None]


def faces100_source(data: ml_collections.ConfigDict, split: str) -> ArraySource:
    """The ``faces100`` split (every split is the same 100 faces, see the module doc)."""
    del split
    size = _option(data, "image_size", 32, 0) or 25
    x = faces100_levels(size)
    return ArraySource(DataInfo(data.name, "image", (size, size, 1), 256, None), x, None)


# ----------------------------------------------------------------------------- patches

def patch_region(height: int, width: int, split: str) -> tuple[int, int, int, int]:
    """The pixel region ``(top, bottom, left, right)`` (half-open) of an image that
    the crops of ``split`` come from: train = left half, val = top right quarter,
    test = bottom right quarter; the three never share a pixel."""
    mid_w, mid_h = width // 2, height // 2
    return {"train": (0, height, 0, mid_w), "val": (0, mid_h, mid_w, width),
            "test": (mid_h, height, mid_w, width)}[split]


@functools.lru_cache(maxsize=2)
def patch_images(side: int) -> tuple[np.ndarray, ...]:
    """The :data:`PATCH_IMAGES` as RGB uint8, each resized so its shorter side is ``side``."""
    files = bundled_images()
    missing = [n for n in PATCH_IMAGES if n not in files]
    if missing:
        raise DataError(f"bundled images {missing} not found; pip install -r requirements.txt "
                        "(scikit-image==0.26.0)")
    out = []
    for name in PATCH_IMAGES:
        image = read_image(files[name], grayscale=False)
        h, w = image.shape[:2]
        scale = side / min(h, w)
        out.append(resize(image, max(side, round(h * scale)), max(side, round(w * scale))))
    return tuple(out)


class PatchSource:
    """Crops of fixed boxes from a few images; label = the image's index.

    Attributes:
      images: the full (resized) images the crops come from.
      boxes: (N, 3) int64 table of (label, top, left); crop i is
        ``images[label][top:top + p, left:left + p]``.
    """

    def __init__(self, info: DataInfo, images: tuple[np.ndarray, ...], boxes: np.ndarray, patch: int):
        self.info, self.images, self.boxes, self.patch = info, images, boxes, patch

    def __len__(self) -> int:
        return len(self.boxes)

    def get(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        p = self.patch
        rows = self.boxes[np.asarray(indices, np.int64)]
        x = np.stack([self.images[c][t:t + p, s:s + p] for c, t, s in rows]) if len(rows) else \
            np.zeros((0, p, p, 3), np.uint8)
        return x, rows[:, 0].astype(np.int32)

    def labels(self) -> np.ndarray:
        return self.boxes[:, 0].astype(np.int32)


def patches_source(data: ml_collections.ConfigDict, split: str) -> PatchSource:
    """The ``patches`` split: a class-balanced table of crop boxes inside each
    image's region of ``split`` (see the module doc and :func:`patch_region`)."""
    patch = _option(data, "patch_size", 32, 4)
    side = _option(data, "patch_image_side", 256, 8)
    if 2 * patch > side:
        raise ConfigError(f"data.patch_size={patch} does not fit the regions of images of side "
                          f"data.patch_image_side={side}: need patch_size <= side / 2")
    n = data.num_train if split == "train" else data.num_eval
    images = patch_images(side)
    k = len(images)
    labels = np.arange(n) % k
    rng = np.random.default_rng([_PATCH_SPLIT_SEED[split], patch, side])
    u = rng.random((n, 2))
    boxes = np.zeros((n, 3), np.int64)
    boxes[:, 0] = labels
    for c, image in enumerate(images):
        top, bottom, left, right = patch_region(*image.shape[:2], split)
        rows = labels == c
        # Uniform over every box that lies wholly inside the region.
        boxes[rows, 1] = top + np.floor(u[rows, 0] * (bottom - top - patch + 1)).astype(np.int64)
        boxes[rows, 2] = left + np.floor(u[rows, 1] * (right - left - patch + 1)).astype(np.int64)
    info = DataInfo(data.name, "image", (patch, patch, 3), 256, k)
    return PatchSource(info, images, boxes, patch)


# ----------------------------------------------------------------------------- image:<name>

def image_file(name: str) -> Path:
    """The file of ``image:<name>``: a bundled image's name or a path to a file."""
    files = bundled_images()
    if name in files:
        return files[name]
    path = Path(name).expanduser()
    looks_like_path = "/" in name or "\\" in name or path.suffix.lower() in _IMAGE_SUFFIXES
    if looks_like_path:
        if not path.is_file():
            raise DataError(f"image file {name!r} does not exist")
        return path
    raise DataError(f"unknown bundled image {name!r} in 'image:{name}'; give a file path or one of: "
                    f"{', '.join(sorted(files)) or 'none (pip install -r requirements.txt)'}")


def single_image_source(data: ml_collections.ConfigDict, split: str) -> ArraySource:
    """``image:<name>``: one image (every split), longer side ``data.image_size`` (0 = native)."""
    del split
    name = data.name[len("image:"):]
    image = read_image(image_file(name))
    longer = _option(data, "image_size", 0, 0)
    if longer:
        h, w = image.shape[:2]
        scale = longer / max(h, w)
        image = resize(image, max(1, round(h * scale)), max(1, round(w * scale)))
    info = DataInfo(data.name, "image", tuple(image.shape), 256, None)
    return ArraySource(info, image[None], None)
