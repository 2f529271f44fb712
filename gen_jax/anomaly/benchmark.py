"""An offline texture-defect benchmark in the protocol of MVTec AD's texture categories.

MVTec AD cannot be downloaded here, so its protocol is rebuilt on the homogeneous
textures that ship inside scikit-image's wheel (:data:`CATEGORIES`: ``brick``,
``grass``, ``gravel``; the other bundled images are photos, scans or diagrams, not
textures). Per category, the 512x512 image is resized to ``image_side`` pixels
(default 256) and cut into three disjoint regions (:func:`region`): train = left
half, val = top quarter of the right half, test = the rest of the right half. No
test pixel is ever seen in training.

- train / val: defect-free ``crop`` x ``crop`` crops (default 64) at positions drawn
  from seeds fixed per split (they never move with ``config.seed``).
- test (:func:`test_set`): :data:`NUM_TEST_GOOD` defect-free crops and
  :data:`NUM_TEST_PER_DEFECT` crops per defect type with a pixel-level ground-truth
  mask. The defects come from generators of their own (:data:`DEFECT_TYPES`):
  scratches along random Bezier curves, holes (dark ellipses), cuts (a dark slit
  with the texture beside it displaced), stains (smooth brightness blobs) and
  foreign-texture insets (an ellipse of another category's texture). Every crop
  is a pure function of (category, image_side, crop, index), so the test set is
  identical for every method and every run. A generator writes only inside its
  mask. No training code imports these generators: DRAEM's training anomalies
  (gen_jax/anomaly/draem.py) are Perlin-noise masks filled from other images.

The benchmark is reachable two ways: as arrays (:func:`test_set`) for evaluation
(gen_jax/anomaly/evaluate.py), and as the data source ``defects:<category>``
(:func:`defects_source`, registered in gen_jax/data/sources.py), whose train and
val splits are good crops and whose test split is the benchmark's crops with label
1 = defective, so the runtime trains any Method on the good crops. Options (in
``config.data``): ``image_size`` (the resized side, default 256) and
``patch_size`` (the crop side, default 64); ``num_train`` / ``num_eval`` crops
in the train / val tables.
"""

from __future__ import annotations

import dataclasses
import functools

import ml_collections
import numpy as np

from gen_jax.data import bundled
from gen_jax.data.sources import ArraySource, DataInfo
from gen_jax.errors import ConfigError, DataError

CATEGORIES = ("brick", "grass", "gravel")
DEFECT_TYPES = ("scratch", "hole", "cut", "stain", "inset")
GOOD = "good"
NUM_TEST_GOOD = 40
NUM_TEST_PER_DEFECT = 16
DEFECT_SPLITS = ("test", "val")  # the splits with defect sets (defect_set)
DEFAULT_SIDE = 256
DEFAULT_CROP = 64
# Fixed seeds (independent of config.seed): crop tables per split and the test defects.
_SPLIT_SEED = {"train": 70_007, "val": 80_008, "test": 90_009}
_DEFECT_SEED = 91_019


# ----------------------------------------------------------------------------- images, regions

@functools.lru_cache(maxsize=8)
def category_image(category: str, side: int = DEFAULT_SIDE) -> np.ndarray:
    """The category's bundled texture, grayscale uint8 (side, side, 1)."""
    if category not in CATEGORIES:
        raise DataError(f"unknown defect-benchmark category {category!r}; use one of {CATEGORIES}")
    files = bundled.bundled_images()
    if category not in files:
        raise DataError(f"bundled image {category!r} not found: pip install -r requirements.txt "
                        "(scikit-image==0.26.0)")
    return bundled.resize(bundled.read_image(files[category], grayscale=True), side, side)


def region(side: int, split: str) -> tuple[int, int, int, int]:
    """``(top, bottom, left, right)`` (half-open) of the split's region of a side x side
    image: train = left half, val = top quarter of the right half, test = the other
    three quarters of the right half. The three share no pixel."""
    mid, quarter = side // 2, side // 4
    return {"train": (0, side, 0, mid), "val": (0, quarter, mid, side),
            "test": (quarter, side, mid, side)}[split]


def _check_sizes(side: int, crop: int) -> None:
    if crop < 16 or 4 * crop > side:
        raise ConfigError(f"defect benchmark: need 16 <= patch_size <= image_size / 4 (the val "
                          f"region is a quarter of the image high), got patch_size={crop}, "
                          f"image_size={side}")


def crop_boxes(side: int, crop: int, split: str, num: int, seed_extra: int = 0) -> np.ndarray:
    """(num, 2) int64 (top, left) of crops lying wholly inside ``split``'s region,
    uniform over the allowed positions, from a seed fixed per split."""
    top, bottom, left, right = region(side, split)
    rng = np.random.default_rng([_SPLIT_SEED[split], side, crop, seed_extra])
    u = rng.random((num, 2))
    rows = top + np.floor(u[:, 0] * (bottom - top - crop + 1)).astype(np.int64)
    cols = left + np.floor(u[:, 1] * (right - left - crop + 1)).astype(np.int64)
    return np.stack([rows, cols], 1)


# ----------------------------------------------------------------------------- defect generators
# Each takes (rng, crop (c, c) float64 levels, ctx) and returns (new pixels, mask): the
# caller writes the new pixels only where mask is set.

def _grid(c: int) -> tuple[np.ndarray, np.ndarray]:
    return np.meshgrid(np.arange(c, dtype=np.float64), np.arange(c, dtype=np.float64), indexing="ij")


def _distance_to_polyline(points: np.ndarray, c: int) -> np.ndarray:
    """Per pixel, the distance to a densely sampled curve (points (K, 2) row, col)."""
    rr, cc = _grid(c)
    d2 = (rr[..., None] - points[:, 0]) ** 2 + (cc[..., None] - points[:, 1]) ** 2
    return np.sqrt(d2.min(-1))


def _scratch(rng: np.random.Generator, base: np.ndarray, ctx: dict) -> tuple[np.ndarray, np.ndarray]:
    """A thin bright or dark line along a random quadratic Bezier curve."""
    c = base.shape[0]
    p0, p2 = rng.uniform(0.1, 0.9, 2) * c, rng.uniform(0.1, 0.9, 2) * c
    while np.linalg.norm(p2 - p0) < 0.4 * c:
        p2 = rng.uniform(0.1, 0.9, 2) * c
    p1 = (p0 + p2) / 2 + rng.normal(0, 0.2 * c, 2)
    t = np.linspace(0, 1, 4 * c)[:, None]
    curve = (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t ** 2 * p2
    mask = _distance_to_polyline(curve, c) <= rng.uniform(0.6, 1.4) * c / 64
    value = rng.uniform(215, 255) if rng.random() < 0.5 else rng.uniform(0, 40)
    return 0.2 * base + 0.8 * value, mask


def _ellipse(rng: np.random.Generator, c: int, r_lo: float, r_hi: float) -> np.ndarray:
    rr, cc = _grid(c)
    centre = rng.uniform(0.25, 0.75, 2) * c
    radii = rng.uniform(r_lo, r_hi, 2) * c / 64
    angle = rng.uniform(0, np.pi)
    dr, dc = rr - centre[0], cc - centre[1]
    u = dr * np.cos(angle) + dc * np.sin(angle)
    v = -dr * np.sin(angle) + dc * np.cos(angle)
    return (u / radii[0]) ** 2 + (v / radii[1]) ** 2 <= 1.0


def _hole(rng: np.random.Generator, base: np.ndarray, ctx: dict) -> tuple[np.ndarray, np.ndarray]:
    """A dark ellipse (a hole through the material) keeping a faint trace of the texture."""
    mask = _ellipse(rng, base.shape[0], 3.0, 8.0)
    return 0.15 * base + rng.uniform(0, 20), mask


def _cut(rng: np.random.Generator, base: np.ndarray, ctx: dict) -> tuple[np.ndarray, np.ndarray]:
    """A straight dark slit, and beside it a band of the texture displaced by a few pixels."""
    c = base.shape[0]
    rr, cc = _grid(c)
    centre = rng.uniform(0.3, 0.7, 2) * c
    angle = rng.uniform(0, np.pi)
    direction = np.array([np.cos(angle), np.sin(angle)])
    normal = np.array([-direction[1], direction[0]])
    along = (rr - centre[0]) * direction[0] + (cc - centre[1]) * direction[1]
    across = (rr - centre[0]) * normal[0] + (cc - centre[1]) * normal[1]
    half_length = rng.uniform(0.2, 0.4) * c
    width = rng.uniform(0.8, 1.5) * c / 64
    band = rng.uniform(2.0, 4.0) * c / 64
    on_segment = np.abs(along) <= half_length
    slit = on_segment & (np.abs(across) <= width)
    shifted_band = on_segment & (across > width) & (across <= width + band)
    shift = np.round(normal * rng.uniform(3, 6) * c / 64).astype(int)
    displaced = np.roll(base, tuple(shift), axis=(0, 1))
    new = np.where(slit, 0.1 * base + rng.uniform(0, 25), displaced)
    return new, slit | shifted_band


def _stain(rng: np.random.Generator, base: np.ndarray, ctx: dict) -> tuple[np.ndarray, np.ndarray]:
    """A smooth blob (a few Gaussians) that brightens or darkens the texture."""
    c = base.shape[0]
    rr, cc = _grid(c)
    centre = rng.uniform(0.3, 0.7, 2) * c
    blob = np.zeros((c, c))
    for _ in range(rng.integers(2, 5)):
        mu = centre + rng.normal(0, 0.06 * c, 2)
        s = rng.uniform(3.0, 6.0) * c / 64
        blob += np.exp(-((rr - mu[0]) ** 2 + (cc - mu[1]) ** 2) / (2 * s * s))
    blob /= blob.max()
    mask = blob > 0.35
    delta = rng.uniform(60, 100) * (1 if rng.random() < 0.5 else -1)
    return base + delta * np.sqrt(blob), mask


def _inset(rng: np.random.Generator, base: np.ndarray, ctx: dict) -> tuple[np.ndarray, np.ndarray]:
    """An ellipse of another category's texture (from that image's region of the same split)."""
    c = base.shape[0]
    foreign = ctx["foreign"][rng.integers(len(ctx["foreign"]))]
    top, left = crop_boxes(foreign.shape[0], c, ctx.get("split", "test"), 1, int(rng.integers(1 << 30)))[0]
    patch = foreign[top:top + c, left:left + c, 0].astype(np.float64)
    return patch, _ellipse(rng, c, 6.0, 14.0)


DEFECT_GENERATORS = {"scratch": _scratch, "hole": _hole, "cut": _cut, "stain": _stain,
                     "inset": _inset}


def apply_defect(kind: str, crop: np.ndarray, rng: np.random.Generator, ctx: dict
                 ) -> tuple[np.ndarray, np.ndarray]:
    """One defect of ``kind`` on a (c, c, 1) uint8 crop: (defective crop uint8, mask bool (c, c)).

    Pixels outside the mask are returned unchanged (the generators' new values are
    written through the mask)."""
    base = crop[..., 0].astype(np.float64)
    new, mask = DEFECT_GENERATORS[kind](rng, base, ctx)
    out = np.where(mask, np.clip(np.round(new), 0, 255), base).astype(np.uint8)
    return out[..., None], mask


# ----------------------------------------------------------------------------- the test set

@dataclasses.dataclass(frozen=True)
class DefectTestSet:
    """The benchmark's test crops of one category.

    Attributes:
      category: the texture.
      x: (N, c, c, 1) uint8 levels.
      mask: (N, c, c) bool ground truth, all False for good crops.
      label: (N,) int32, 1 = defective.
      defect_type: (N,) str, "good" or one of :data:`DEFECT_TYPES`.
      boxes: (N, 2) int64 (top, left) of each crop in the resized image.
    """

    category: str
    x: np.ndarray
    mask: np.ndarray
    label: np.ndarray
    defect_type: np.ndarray
    boxes: np.ndarray


@functools.lru_cache(maxsize=16)
def defect_set(category: str, image_side: int = DEFAULT_SIDE, crop: int = DEFAULT_CROP,
               split: str = "test") -> DefectTestSet:
    """The fixed defect set of ``category`` on ``split``'s region (module doc): good crops
    first, then :data:`NUM_TEST_PER_DEFECT` crops of each defect type in
    :data:`DEFECT_TYPES` order.

    ``split="test"`` is the benchmark (:func:`test_set`). ``split="val"`` is a development
    set of the same layout and generators on crops of the val region, with draws of its own
    (other positions, defect shapes and inset sources, the insets taken from the other
    categories' val regions): settings are chosen on it, so the test set is read once."""
    if split not in DEFECT_SPLITS:
        raise ConfigError(f"defect sets exist for splits {DEFECT_SPLITS}, not {split!r}")
    _check_sizes(image_side, crop)
    image = category_image(category, image_side)
    foreign = tuple(category_image(o, image_side) for o in CATEGORIES if o != category)
    kinds = [GOOD] * NUM_TEST_GOOD + [k for k in DEFECT_TYPES for _ in range(NUM_TEST_PER_DEFECT)]
    cat = CATEGORIES.index(category)
    # The test draws keep their original seeds; the val draws add a marker to every seed.
    extra = () if split == "test" else (DEFECT_SPLITS.index(split),)
    boxes = crop_boxes(image_side, crop, split, len(kinds), cat)
    xs, masks = [], []
    for i, (kind, (top, left)) in enumerate(zip(kinds, boxes, strict=True)):
        x = image[top:top + crop, left:left + crop]
        mask = np.zeros((crop, crop), bool)
        if kind != GOOD:
            rng = np.random.default_rng([_DEFECT_SEED, cat, image_side, crop, i, *extra])
            x, mask = apply_defect(kind, x, rng, {"foreign": foreign, "split": split})
        xs.append(x)
        masks.append(mask)
    kinds = np.array(kinds)
    label = (kinds != GOOD).astype(np.int32)
    out = DefectTestSet(category, np.stack(xs), np.stack(masks), label, kinds, boxes)
    for a in (out.x, out.mask, out.label, out.defect_type, out.boxes):
        a.setflags(write=False)
    return out


def test_set(category: str, image_side: int = DEFAULT_SIDE, crop: int = DEFAULT_CROP) -> DefectTestSet:
    """The fixed test set of ``category``: :func:`defect_set` on the test region."""
    return defect_set(category, image_side, crop, "test")


test_set.cache_clear = defect_set.cache_clear  # type: ignore[attr-defined]


# ----------------------------------------------------------------------------- the data source

def _int_option(data: ml_collections.ConfigDict, key: str, default: int) -> int:
    value = data.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"data.{key}={value!r} must be a positive integer")
    return value


def sizes(data: ml_collections.ConfigDict) -> tuple[int, int]:
    """(image_side, crop) of a ``defects:<category>`` data config."""
    side = _int_option(data, "image_size", DEFAULT_SIDE)
    crop = _int_option(data, "patch_size", DEFAULT_CROP)
    _check_sizes(side, crop)
    return side, crop


def defects_source(data: ml_collections.ConfigDict, split: str):
    """The ``defects:<category>`` source of one split: good crops (train, val; label
    0) or the benchmark's test crops (test; label 1 = defective), uint8 levels,
    (c, c, 1), 256 levels, 2 classes."""
    category = data.name[len("defects:"):]
    if category not in CATEGORIES:
        raise DataError(f"unknown defect-benchmark category {category!r} in {data.name!r}; use one "
                        f"of: {', '.join('defects:' + c for c in CATEGORIES)}")
    side, crop = sizes(data)
    info = DataInfo(data.name, "image", (crop, crop, 1), 256, 2)
    if split == "test":
        t = test_set(category, side, crop)
        return ArraySource(info, t.x, t.label)
    num = data.num_train if split == "train" else data.num_eval
    boxes = crop_boxes(side, crop, split, num, CATEGORIES.index(category))
    table = np.concatenate([np.zeros((num, 1), np.int64), boxes], 1)  # label 0 = good
    return bundled.PatchSource(info, (category_image(category, side),), table, crop)
