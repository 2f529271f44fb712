"""The sources on images bundled in scikit-image's wheel: faces100, patches, image:<name>."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from gen_jax import defaults
from gen_jax.data import BatchIterator, bundled, get_source, known_datasets, load_split
from gen_jax.errors import ConfigError, DataError


def _config(name: str, **data):
    config = defaults.get_config()
    config.data.name = name
    for key, value in data.items():
        config.data[key] = value
    return config


def test_faces100_are_the_100_lfw_faces_of_skimage():
    import skimage.data  # the reference loader, only here (its import costs seconds)

    lfw = skimage.data.lfw_subset()  # (200, 25, 25) floats: 100 faces, then 100 non-faces
    native = get_source(_config("faces100", image_size=0).data, "train")
    x, y = native.get(np.arange(len(native)))
    assert len(native) == 100 and y is None and native.info.shape == (25, 25, 1)
    np.testing.assert_array_equal(x[..., 0], np.round(lfw[:100] * 255).astype(np.uint8))
    # The 32x32 default is the same faces resized: shrunk back to 25x25 it matches.
    src = get_source(_config("faces100").data, "train")
    x32, _ = src.get(np.arange(100))
    assert x32.shape == (100, 32, 32, 1) and x32.dtype == np.uint8
    assert src.info.num_levels == 256 and src.info.num_classes is None
    assert x32.max() > 200 and x32.min() < 30  # 256 levels, not a [0, 1] float scale
    back = np.stack([np.asarray(Image.fromarray(f[..., 0]).resize((25, 25), Image.BICUBIC))
                     for f in x32]).astype(np.float64)
    for i in range(100):
        face = lfw[i].ravel() * 255
        assert np.corrcoef(back[i].ravel(), face)[0, 1] > 0.97
        # ...and not its non-face counterpart.
        other = lfw[100 + i].ravel() * 255
        assert np.abs(back[i].ravel() - face).mean() < np.abs(back[i].ravel() - other).mean()
    # 100-shot: every split is the same 100 faces.
    for split in ("val", "test"):
        np.testing.assert_array_equal(get_source(_config("faces100").data, split).get(np.arange(100))[0], x32)
    xs, _ = load_split(_config("faces100", value_range=(-1.0, 1.0)), "train")
    np.testing.assert_allclose(xs, x32 / 255 * 2 - 1, atol=1e-6)


def _patches(split, **data):
    data = {"num_train": 600, "num_eval": 300, **data}
    return get_source(_config("patches", **data).data, split)


@pytest.mark.parametrize("patch", [32, 64])
def test_patches_shapes_labels_and_pixels(patch):
    src = _patches("train", patch_size=patch)
    k = len(bundled.PATCH_IMAGES)
    assert src.info.shape == (patch, patch, 3) and src.info.num_levels == 256 and src.info.num_classes == k
    x, y = src.get(np.arange(len(src)))
    assert x.shape == (600, patch, patch, 3) and x.dtype == np.uint8
    np.testing.assert_array_equal(y, src.labels())
    assert np.bincount(y, minlength=k).tolist() == [600 // k] * k
    # Each crop holds the pixels of its box in its own class's image.
    for i in range(0, 600, 37):
        c, top, left = src.boxes[i]
        assert y[i] == c
        np.testing.assert_array_equal(x[i], src.images[c][top:top + patch, left:left + patch])
    # ...and those images are the bundled files, resized so the shorter side is 256.
    import skimage.data

    assert len(src.images) == len(bundled.PATCH_IMAGES)
    for image in src.images:
        assert min(image.shape[:2]) == 256 and image.shape[2] == 3
    ref = bundled.resize(skimage.data.chelsea(), *src.images[4].shape[:2])
    np.testing.assert_array_equal(src.images[4], ref)
    ref = bundled.resize(np.repeat(skimage.data.brick()[..., None], 3, -1), 256, 256)
    np.testing.assert_array_equal(src.images[0], ref)
    assert len(_patches("val", patch_size=patch)) == len(_patches("test", patch_size=patch)) == 300


def test_patches_train_val_test_regions_share_no_pixel():
    """Marks, per source image, every pixel any crop of a split covers, from the
    crops' boxes: no pixel is covered by two splits, and each split spreads over
    its region (not one crop repeated)."""
    patch = 32
    srcs = {s: _patches(s, patch_size=patch, num_train=2000, num_eval=1000) for s in ("train", "val", "test")}
    images = srcs["train"].images
    for c, image in enumerate(images):
        h, w = image.shape[:2]
        covered = {}
        for split, src in srcs.items():
            mask = np.zeros((h, w), bool)
            rows = src.boxes[src.boxes[:, 0] == c]
            assert rows[:, 1].min() >= 0 and rows[:, 2].min() >= 0
            assert (rows[:, 1] + patch).max() <= h and (rows[:, 2] + patch).max() <= w
            for _, top, left in rows:
                mask[top:top + patch, left:left + patch] = True
            covered[split] = mask
            assert len({(t, s) for _, t, s in rows}) > 0.9 * len(rows)  # distinct crops
            assert mask.mean() > 0.2  # crops spread over the region, not stuck in a corner
        assert not (covered["train"] & covered["test"]).any()
        assert not (covered["train"] & covered["val"]).any()
        assert not (covered["val"] & covered["test"]).any()


def test_patches_are_deterministic_and_resumable_through_the_iterator():
    src = _patches("train", num_train=40)
    again = _patches("train", num_train=40)
    np.testing.assert_array_equal(src.boxes, again.boxes)  # the table is fixed
    np.testing.assert_array_equal(src.get(np.arange(40))[0], again.get(np.arange(40))[0])

    def batches(seed, n, state=None):
        it = BatchIterator(src, 8, seed, lambda x, rng: x)  # 5 batches per epoch
        if state:
            it.set_state(state)
        return [next(it)["x"] for _ in range(n)]

    first = batches(0, 10)
    for a, b in zip(first, batches(0, 10), strict=True):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(first[0], batches(1, 1)[0])  # another seed, other crops
    assert not np.array_equal(first[0], first[5])  # epoch 1 starts with other crops
    resumed = batches(0, 3, {"epoch": 1, "position": 2, "seed": 0})
    for a, b in zip(first[7:], resumed, strict=True):
        np.testing.assert_array_equal(a, b)


def test_single_image_source_by_name_path_and_size(tmp_path):
    import skimage.data

    src = get_source(_config("image:chelsea").data, "train")
    x, y = src.get(np.arange(1))
    assert len(src) == 1 and y is None and src.info.shape == (300, 451, 3)
    np.testing.assert_array_equal(x[0], skimage.data.chelsea())
    small = get_source(_config("image:chelsea", image_size=64).data, "test")
    assert small.info.shape == (43, 64, 3)  # the longer side is 64, the aspect ratio kept
    gray = get_source(_config("image:brick", image_size=40).data, "val")
    assert gray.info.shape == (40, 40, 1)
    assert get_source(_config("image:china").data, "train").info.shape == (427, 640, 3)  # scikit-learn's
    rgb = np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    path = tmp_path / "mine.png"
    Image.fromarray(rgb).save(path)
    mine = get_source(_config(f"image:{path}").data, "train")
    np.testing.assert_array_equal(mine.get(np.arange(1))[0][0], rgb)
    for name in ("faces100", "patches", "image:<name>"):
        assert name in known_datasets()


def test_unknown_image_and_bad_options_are_one_line_errors(tmp_path):
    with pytest.raises(DataError, match="unknown bundled image 'nope'") as e:
        get_source(_config("image:nope").data, "train")
    message = str(e.value)
    assert "\n" not in message and "astronaut" in message and "brick" in message and "china" in message
    with pytest.raises(DataError, match="does not exist"):
        get_source(_config(f"image:{tmp_path / 'missing.png'}").data, "train")
    with pytest.raises(ConfigError, match="patch_size"):
        _patches("train", patch_size=200)
    with pytest.raises(ConfigError, match="image_size"):
        get_source(_config("faces100", image_size=-1).data, "train")
